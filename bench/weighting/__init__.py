"""Weighting methods: how a step's per-task losses, or their gradients on the shared parameters,
become one update. The trainer holds one method per `fit` and calls it once per step and per epoch:

    method = build(name, params, base, seed).to(device)  # base: (T,) loss_weights in task order
    optimizer: method.parameters() as one more group, weight decay 0 (learned log-variances, GradNorm)
    each step:   opt.zero_grad(set_to_none=True)
                 w = method.backward(losses, shared, specific, features=z, extra=x)   # w: (T,), detached
                 opt.step()
    each epoch:  method.end_epoch(mean_losses)      # (T,) the epoch's mean unweighted training losses

`losses` (T,) are the unweighted task losses; `shared` the trainable parameters more than one task
reads, `specific` the others (the heads); `features` the tensors the task-specific parts read (the
trunk's output z (B, D), or one per task for cross-stitch, MTAN and MMoE; `model.forward_features`),
which the trainer computes only for a method that declares `uses_features`;
`extra` an additional scalar loss (distillation) added with weight 1. `backward` leaves the gradients
in `.grad` (accumulating, like `Tensor.backward`), frees the graph, and returns the effective weight
on each task's gradient this step, for the history (nan where an aggregator has none). Every method
starts from `base`: the default `equal` is exactly `(losses * base).sum().backward()`, today's step.

Loss-level methods (`loss_level.py`, written here) weight the losses. Gradient-level methods
(`gradient_level.py`) compute the Jacobian of the weighted losses on the shared parameters (T rows,
one batched backward through torch.vmap, torchjd's `autojac.backward`) and let a torchjd aggregator
combine the rows (`autojac.jac_to_grad`); heads get the gradient of their own weighted loss.
torchjd's helpers fit as they are: the Jacobian goes straight into `.jac` and back out as `.grad`,
and `jac_to_grad` returns the aggregator's weights. `mtl_backward` would need features for every
model (cross-stitch has none shared by all tasks), so the shared-parameter path does not use it.

`graph_safe` says whether `backward` may be captured in a CUDA graph (no host sync, no CPU solver,
no private generator); `needs_features` that it raises without `features`. `task_gradient_cosines`
measures gradient conflict for the report (`probe.py` runs it every N steps of training). Left out of torchjd 0.18's aggregators: its CAGrad
(needs cvxpy and clarabel; `cagrad` here solves the same dual with scipy) and NashMTL (cvxpy, ecos);
MoDo and SDMGrad (need two or three independent batches per step); CR-MOGM (a smoothing wrapper, not
a method); Mean, Sum, Constant and Random (the same updates as `equal` and `rlw`, at T times the cost).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn
from torchjd import autojac

from bench.registry import Registry, check_params

WEIGHTINGS = Registry("weighting")


class Weighting(nn.Module):
    """Base of every method; by itself fixed weights: the suite's `loss_weights`, `base` (T,)."""

    graph_safe: ClassVar[bool] = True
    uses_features: ClassVar[bool] = False  # reads `features` when given; the trainer computes them only then
    needs_features: ClassVar[bool] = False
    jac_chunk: int | None = None  # Jacobian rows differentiated at once (torchjd's parallel_chunk_size):
    # None, all T in one vmapped backward; 1, a loop without torch.vmap (the trainer sets it per device)

    def __init__(self, base: Tensor, seed: int = 0):
        super().__init__()
        base = torch.as_tensor(base, dtype=torch.float32)
        require(base.ndim == 1 and len(base) > 0, "base", "one loss weight per task, shape (T,)", base)
        self.register_buffer("base", base.clone())
        self.seed = seed

    @property
    def tasks(self) -> int:
        return len(self.base)

    def backward(self, losses: Tensor, shared: Sequence[Tensor], specific: Sequence[Tensor], *,
                 features: Sequence[Tensor] | None = None, extra: Tensor | None = None) -> Tensor:
        """Gradients of this step into `.grad`; returns the per-task weights (T,), detached."""
        total, weights = self.objective(losses)
        if extra is not None:
            total = total + extra
        total.backward()
        return weights.detach()

    def objective(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """The scalar to minimise and the weights (T,) it puts on the losses (T,)."""
        return (losses * self.base).sum(), self.base

    def end_epoch(self, mean_losses: Tensor) -> None:
        """Epoch statistics, mean unweighted training loss per task (T,); most methods ignore them."""


def build(name: str, params: dict[str, Any], base: Tensor, seed: int = 0, where: str = "weighting") -> Weighting:
    """Method `name` with suite parameters `params` for a cell with loss weights `base` (T,).

    ValueError naming `where` and the key for an unknown name, parameter, type or value.
    """
    if name not in WEIGHTINGS:
        raise ValueError(f"{where}.name: unknown weighting {name!r}; valid: {', '.join(WEIGHTINGS.names())}")
    cls = WEIGHTINGS.get(name)
    check_params(cls, params, where)
    try:  # value checks; their messages start with the parameter's name
        return cls(base, seed, **params)
    except ValueError as err:
        raise ValueError(f"{where}.{err}") from None


def task_gradient_cosines(losses: Tensor, shared: Sequence[Tensor], chunk: int | None = None) -> Tensor:
    """(T, T) cosine between the tasks' gradients on `shared`; 0 where a gradient is zero.

    Costs one backward per task (T rows, batched by torch.vmap unless `chunk` = 1) and T x n_shared
    floats; keeps the graph, so the step's own backward can follow. Not capturable: call it eagerly.
    """
    rows = autojac.jac(losses, list(shared), retain_graph=True, parallel_chunk_size=chunk)
    gram = gramian(rows)
    norms = gram.diagonal().clamp_min(0).sqrt()
    return gram / (norms[:, None] * norms[None, :]).clamp_min(torch.finfo(gram.dtype).tiny)


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(shared, specific) trainable parameters of a model from its `param_groups()`: the `head/<task>`
    groups are task-specific, every other group (backbone, shared, shared/<part>) is read by more than
    one task."""
    shared, specific = [], []
    for name, params in model.param_groups().items():
        (specific if name.startswith("head/") else shared).extend(p for p in params if p.requires_grad)
    return shared, specific


def gramian(rows: Sequence[Tensor]) -> Tensor:
    """J J^T (T, T) in float32, summed over the blocks of per-tensor Jacobians (T, ...)."""
    return sum(r.flatten(1).float() @ r.flatten(1).float().T for r in rows)


def require(ok: bool, name: str, expected: str, value: Any) -> None:
    """A method's value check: ValueError starting with the parameter's name."""
    if not ok:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


# Importing the method modules registers them.
from bench.weighting import gradient_level, loss_level  # noqa: E402,F401
