"""Loss-level methods: each step's weights come from the losses, learned parameters or epoch
statistics, never from gradients (GradNorm reads gradient norms only to learn its weights)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torchjd import autojac

from bench.weighting import WEIGHTINGS, Weighting, gramian, require


@WEIGHTINGS.register("equal")
class Equal(Weighting):
    """Fixed weights, the suite's `loss_weights` (1 where missing): L = sum_i b_i L_i, today's step."""


@WEIGHTINGS.register("uncertainty")
class Uncertainty(Weighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

    Learns s_i = log sigma_i^2 per task, s (T,) starting at 0 (so the first step is `equal`'s):
    L = sum_i b_i (exp(-s_i) L_i + s_i). The paper writes 1/(2 sigma^2) L + log sigma for regression
    and 1/sigma^2 L + log sigma for classification; this one form for every kind keeps the seam blind
    to task kinds, exp(-s_i) is positive for any s_i (no division by a learned sigma that may reach
    0), and the minimiser in s_i is log L_i, so s_i follows the log of each task's loss scale.
    Weights: b_i exp(-s_i). s is a parameter: the trainer's optimizer steps it.
    """

    def __init__(self, base: Tensor, seed: int = 0):
        super().__init__(base, seed)
        self.log_vars = nn.Parameter(torch.zeros(self.tasks))  # (T,) s_i

    def objective(self, losses):
        total = (self.base * (torch.exp(-self.log_vars) * losses + self.log_vars)).sum()
        return total, self.base * torch.exp(-self.log_vars)


@WEIGHTINGS.register("dwa")
class DWA(Weighting):
    """Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019).

    lambda_k(t) = T exp(w_k(t-1) / temperature) / sum_i exp(w_i(t-1) / temperature), with
    w_k(t-1) = L_k(t-1) / L_k(t-2), the ratio of the last two epochs' mean losses; lambda = 1 for
    the first two epochs. Weights: b_k lambda_k, updated in place by `end_epoch`, so a captured
    step reads the new values.
    """

    def __init__(self, base: Tensor, seed: int = 0, *, temperature: float = 2.0):
        super().__init__(base, seed)
        require(temperature > 0, "temperature", "a positive number", temperature)
        self.temperature = temperature
        self.epochs = 0
        for name in ("lam", "last", "prev"):  # (T,) lambda, L(t-1), L(t-2)
            self.register_buffer(name, torch.ones(self.tasks))

    def objective(self, losses):
        weights = self.base * self.lam
        return (losses * weights).sum(), weights

    @torch.no_grad()
    def end_epoch(self, mean_losses: Tensor) -> None:
        self.prev.copy_(self.last)
        self.last.copy_(mean_losses)
        self.epochs += 1
        if self.epochs >= 2:
            self.lam.copy_(self.tasks * torch.softmax(self.last / self.prev / self.temperature, 0))


@WEIGHTINGS.register("rlw")
class RLW(Weighting):
    """Random loss weighting (Lin, Ye, Zhang and Tsang, TMLR 2022).

    Each step lambda = softmax(eps), eps ~ N(0, I_T) from a generator seeded with the cell's seed;
    lambda sums to 1, as in the paper. Weights: b lambda. Not graph-safe: a captured graph would
    not advance the private generator.
    """

    graph_safe = False

    def __init__(self, base: Tensor, seed: int = 0):
        super().__init__(base, seed)
        self.gen: torch.Generator | None = None  # made on the losses' device at the first step

    def objective(self, losses):
        if self.gen is None or self.gen.device != losses.device:
            self.gen = torch.Generator(device=losses.device).manual_seed(self.seed)
        eps = torch.randn(self.tasks, generator=self.gen, device=losses.device)
        weights = self.base * torch.softmax(eps, 0)
        return (losses * weights).sum(), weights


@WEIGHTINGS.register("gradnorm")
class GradNorm(Weighting):
    """GradNorm (Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018).

    Weights w (T,), a parameter starting at 1. With W the shared features (or, without features,
    the shared parameters), G_i = ||grad_W w_i b_i L_i||, r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))
    and the target G_bar r_i^alpha held constant, w.grad = grad_w sum_i |G_i - G_bar r_i^alpha|
    (the paper's L_grad); the optimizer steps w, and each step starts by clamping w to at least
    `floor` and renormalising it to sum to T (the paper renormalises; the clamp keeps w positive
    after a large step). The network gets grad sum_i w_i b_i L_i. Weights: b w. Cost: one extra
    batched backward to W (cheap on features: the heads only).
    """

    floor: ClassVar[float] = 1e-3  # smallest weight before renormalising
    uses_features = True  # norms on the features the heads read: a backward through the heads only

    def __init__(self, base: Tensor, seed: int = 0, *, alpha: float = 1.5):
        super().__init__(base, seed)
        require(alpha >= 0, "alpha", "a number >= 0", alpha)
        self.alpha = alpha
        self.weights = nn.Parameter(torch.ones(self.tasks))  # (T,) w_i
        self.register_buffer("initial", torch.ones(self.tasks))  # (T,) b_i L_i(0)
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def backward(self, losses, shared, specific, *, features=None, extra=None):
        with torch.no_grad():
            self.weights.clamp_(min=self.floor)
            self.weights.mul_(self.tasks / self.weights.sum())
        weighted = losses * self.base  # (T,)
        on = list(features) if features is not None else list(shared)
        rows = autojac.jac(weighted, on, retain_graph=True, parallel_chunk_size=self.jac_chunk)
        norms = gramian(rows).diagonal().clamp_min(0).sqrt()  # (T,) ||grad_W b_i L_i||
        self._learn(weighted.detach(), norms)
        w = self.weights.detach()
        total = (weighted * w).sum()
        (total if extra is None else total + extra).backward()
        return self.base * w

    def _learn(self, weighted: Tensor, norms: Tensor) -> None:
        """w.grad from L_grad; no host sync, so the step stays capturable."""
        self.initial.copy_(torch.where(self.started, self.initial, weighted))
        self.started.fill_(True)
        ratio = weighted / self.initial.clamp_min(torch.finfo(weighted.dtype).tiny)
        target = (self.weights * norms).mean().detach() * (ratio / ratio.mean()) ** self.alpha
        l_grad = (self.weights * norms - target).abs().sum()
        torch.autograd.backward(l_grad, inputs=[self.weights])
