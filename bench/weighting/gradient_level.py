"""Gradient-level methods: the Jacobian of the weighted losses on the shared parameters (or
features), its rows combined by a torchjd aggregator; CAGrad's dual is solved here with scipy."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor
from torchjd import aggregation as jda
from torchjd import autojac

from bench.weighting import WEIGHTINGS, Weighting, gramian, require


class Aggregated(Weighting):
    """Jacobian of the weighted losses b_i L_i on the shared parameters, rows combined by `aggregator`.

    J (T, n), n the number of shared scalars, row i = g_i = grad b_i L_i; the aggregate d (n,) goes
    into the shared parameters' `.grad`, split back into their shapes. Heads (and `extra`, on every
    parameter) get plain gradients. Weights: alpha_i b_i, where d = sum_i alpha_i g_i; nan for
    aggregators that do not combine the rows linearly. Not graph-safe: the aggregators solve on the
    CPU or branch on values. Cost per step: T backward passes (one vmapped call) and T x n floats,
    plus the aggregator.
    """

    graph_safe = False

    def __init__(self, base: Tensor, seed: int, aggregator: jda.Aggregator):
        super().__init__(base, seed)
        self.aggregator = aggregator

    def backward(self, losses, shared, specific, *, features=None, extra=None):
        weighted = losses * self.base  # (T,)
        shared = list(shared)
        _own_gradients(weighted, shared, list(specific), extra)
        if not shared:  # nothing to aggregate: every task has only its own parameters
            return self.base.clone()
        autojac.backward(weighted, inputs=shared, parallel_chunk_size=self.jac_chunk)  # .jac: (T, *shape)
        alpha = autojac.jac_to_grad(shared, self.aggregator)  # adds the combination to .grad
        if alpha is None:
            return torch.full_like(self.base, float("nan"))
        return alpha.detach().to(self.base) * self.base


def _own_gradients(weighted: Tensor, shared: list[Tensor], specific: list[Tensor], extra: Tensor | None) -> None:
    """Heads: grad of their own weighted loss; `extra`: its gradient on every parameter. Keeps the graph."""
    if specific:
        torch.autograd.backward(weighted.sum(), inputs=specific, retain_graph=True)
    if extra is not None:
        torch.autograd.backward(extra, inputs=shared + specific, retain_graph=True)


@WEIGHTINGS.register("upgrad")
class UPGrad(Aggregated):
    """UPGrad (Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv 2024):
    each row g_i (n,) projected onto the dual cone of the rows of J (T, n), the projections
    averaged. One T x T QP per row (quadprog, CPU)."""

    def __init__(self, base: Tensor, seed: int = 0):
        super().__init__(base, seed, jda.UPGrad())


@WEIGHTINGS.register("pcgrad")
class PCGrad(Aggregated):
    """PCGrad (Yu, Kumar, Gupta, Levine, Hausman and Finn, NeurIPS 2020): each row g_i (n,) loses its
    component along every g_j it conflicts with (g_i . g_j < 0), in a random order of j (torch's
    global generator), g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j; the results are summed."""

    def __init__(self, base: Tensor, seed: int = 0):
        super().__init__(base, seed, jda.PCGrad())


@WEIGHTINGS.register("mgda")
class MGDA(Aggregated):
    """MGDA (Sener and Koltun, NeurIPS 2018, after Desideri, C. R. Math. 2012): the min-norm point
    d (n,) of the convex hull of the rows of J (T, n), by Frank-Wolfe on the Gramian (T, T) (their
    Algorithm 2); weights alpha (T,) on the simplex (sum 1)."""

    def __init__(self, base: Tensor, seed: int = 0, *, epsilon: float = 1e-3, max_iters: int = 100):
        require(epsilon > 0, "epsilon", "a positive number", epsilon)
        require(max_iters >= 1, "max_iters", "an integer >= 1", max_iters)
        super().__init__(base, seed, jda.MGDA(epsilon=epsilon, max_iters=max_iters))


@WEIGHTINGS.register("mgda_ub")
class MGDAUB(Weighting):
    """MGDA-UB (Sener and Koltun, NeurIPS 2018): MGDA's min-norm weights alpha (T,) from the gradients
    on the shared features Z (e.g. (B, D); Jacobian (T, B, D)) instead of the shared parameters (an
    upper bound, T backward passes through the heads only); the shared parameters then get
    grad sum_i alpha_i b_i L_i, back-propagated from the losses (exact also where the features are
    not a cut, e.g. a map and the trunk's vector computed from it, read by different heads)."""

    graph_safe = False
    uses_features = needs_features = True

    def __init__(self, base: Tensor, seed: int = 0, *, epsilon: float = 1e-3, max_iters: int = 100):
        super().__init__(base, seed)
        require(epsilon > 0, "epsilon", "a positive number", epsilon)
        require(max_iters >= 1, "max_iters", "an integer >= 1", max_iters)
        self.solver = jda.MGDAWeighting(epsilon=epsilon, max_iters=max_iters)

    def backward(self, losses, shared, specific, *, features=None, extra=None):
        if features is None:
            raise ValueError("mgda_ub needs the shared features (the tensors the heads read)")
        weighted, feats, shared = losses * self.base, list(features), list(shared)
        _own_gradients(weighted, shared, list(specific), extra)
        rows = autojac.jac(weighted, feats, retain_graph=True, parallel_chunk_size=self.jac_chunk)  # (T, *z.shape)
        alpha = self.solver(gramian(rows)).detach()  # (T,)
        if shared:
            torch.autograd.backward((alpha.to(weighted.dtype) * weighted).sum(), inputs=shared)
        return alpha * self.base


class _CAGradWeighting(jda.Weighting):
    """CAGrad's weights from the Gramian G (T, T): solve the dual min_{w in simplex}
    w^T G 1/T + c ||g0|| sqrt(w^T G w) with SLSQP, then d = g0 + (c ||g0|| / ||g_w||) g_w."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, gramian: Tensor) -> Tensor:
        g = gramian.detach().cpu().double().numpy()
        t = len(g)
        g = g / max(np.trace(g) / t, np.finfo(float).tiny)  # scale-free: the weights do not change
        mean = np.full(t, 1.0 / t)
        radius = self.c * np.sqrt(max(mean @ g @ mean, 0.0))  # c ||g0||

        def dual(w):
            norm = np.sqrt(max(w @ g @ w, 1e-12))
            return w @ g @ mean + radius * norm, g @ mean + radius * (g @ w) / norm

        res = minimize(dual, mean, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * t,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}])
        w = np.clip(res.x, 0.0, None)
        w /= w.sum()
        gw_norm = np.sqrt(max(w @ g @ w, 0.0))
        weights = mean + radius / gw_norm * w if gw_norm > 1e-9 else mean  # g_w = 0: Pareto-stationary
        return torch.as_tensor(weights, dtype=gramian.dtype, device=gramian.device)


@WEIGHTINGS.register("cagrad")
class CAGrad(Aggregated):
    """CAGrad (Liu, Liu, Jin, Stone and Liu, NeurIPS 2021): the update d in the ball
    ||d - g0|| <= c ||g0|| around the mean gradient g0 that maximises the worst task's
    improvement min_i g_i . d (their Algorithm 1, no rescaling); g_i (n,) the rows of J (T, n).
    c = 0 is the mean gradient; larger c moves towards MGDA (the paper ablates c in [0, 1); 0.4 is
    a middle value). The dual over the simplex (T,) is solved by scipy's SLSQP on the Gramian
    (T, T) here: torchjd's own CAGrad needs cvxpy."""

    def __init__(self, base: Tensor, seed: int = 0, *, c: float = 0.4):
        require(c >= 0, "c", "a number >= 0", c)
        super().__init__(base, seed, jda.GramianWeightedAggregator(_CAGradWeighting(c)))


@WEIGHTINGS.register("dualproj")
class DualProj(Aggregated):
    """DualProj (the dual-cone projection of GEM, Lopez-Paz and Ranzato, NeurIPS 2017, applied to the
    mean row by torchjd): the mean of the rows of J (T, n) projected onto their dual cone. One QP."""

    def __init__(self, base: Tensor, seed: int = 0):
        super().__init__(base, seed, jda.DualProj())


@WEIGHTINGS.register("aligned_mtl")
class AlignedMTL(Aggregated):
    """Aligned-MTL (Senushkin, Patakin, Kuznetsov and Konushin, CVPR 2023): the principal components
    of the rows of J (T, n), from the eigendecomposition of the Gramian (T, T), rescaled to equal
    magnitude (`scale_mode`: the min, median or rmse eigenvalue)."""

    def __init__(self, base: Tensor, seed: int = 0, *, scale_mode: str = "min"):
        require(scale_mode in ("min", "median", "rmse"), "scale_mode", "one of min, median, rmse", scale_mode)
        super().__init__(base, seed, jda.AlignedMTL(scale_mode=scale_mode))


@WEIGHTINGS.register("config")
class ConFIG(Aggregated):
    """ConFIG (Liu, Chu and Thuerey, ICLR 2025): the direction d (n,) with equal positive inner
    products with every unit row of J (T, n), scaled by the sum of the rows' projections. Weights:
    nan (not a row combination torchjd exposes)."""

    def __init__(self, base: Tensor, seed: int = 0):
        super().__init__(base, seed, jda.ConFIG())


@WEIGHTINGS.register("graddrop")
class GradDrop(Aggregated):
    """GradDrop (Chen, Ngiam, Huang, Luong, Kretzschmar, Chai and Anguelov, NeurIPS 2020): per
    coordinate of J (T, n), keep the rows of one sign, chosen at random by the sign purity (torch's global
    generator). Weights: nan (a per-coordinate mask)."""

    def __init__(self, base: Tensor, seed: int = 0):
        super().__init__(base, seed, jda.GradDrop())


@WEIGHTINGS.register("gradvac")
class GradVac(Aggregated):
    """Gradient Vaccine (Wang, Tsvetkov, Firat and Cao, ICLR 2021): like PCGrad on the rows of J (T, n),
    but pulls each pair's cosine up to an EMA target (T, T; decay `beta`) rather than to 0. Stateful
    across steps; visits the other tasks in a random order (torch's global generator)."""

    def __init__(self, base: Tensor, seed: int = 0, *, beta: float = 0.5):
        require(0 <= beta <= 1, "beta", "a number in [0, 1]", beta)
        super().__init__(base, seed, jda.GradVac(beta=beta))


@WEIGHTINGS.register("imtl_g")
class IMTLG(Aggregated):
    """IMTL-G (Liu, Li, Kuang, Xue, Chen, Yang, Liao and Zhang, ICLR 2021): the combination d (n,) of
    the rows of J (T, n) whose projections onto every unit row are equal (torchjd's generalisation
    to linearly dependent rows)."""

    def __init__(self, base: Tensor, seed: int = 0):
        super().__init__(base, seed, jda.IMTLG())


@WEIGHTINGS.register("krum")
class Krum(Aggregated):
    """Krum (Blanchard, El Mhamdi, Guerraoui and Stainer, NeurIPS 2017), a Byzantine-robust rule: the
    mean of the `n_selected` rows of J (T, n) closest to their neighbours. Needs n_byzantine + 3
    tasks."""

    def __init__(self, base: Tensor, seed: int = 0, *, n_byzantine: int = 0, n_selected: int = 1):
        tasks = len(base)
        require(0 <= n_byzantine <= tasks - 3, "n_byzantine",
                f"an integer in [0, tasks - 3] (Krum needs n_byzantine + 3 tasks; this cell has {tasks})", n_byzantine)
        require(1 <= n_selected <= tasks, "n_selected", f"an integer in [1, {tasks}]", n_selected)
        super().__init__(base, seed, jda.Krum(n_byzantine=n_byzantine, n_selected=n_selected))


@WEIGHTINGS.register("trimmed_mean")
class TrimmedMean(Aggregated):
    """Coordinate-wise trimmed mean (Yin, Chen, Ramchandran and Bartlett, ICML 2018): drops the
    `trim_number` largest and smallest values of every column of J (T, n). Needs 2 trim_number + 1 tasks.
    Weights: nan (per coordinate)."""

    def __init__(self, base: Tensor, seed: int = 0, *, trim_number: int = 1):
        tasks = len(base)
        require(0 <= trim_number and 2 * trim_number + 1 <= tasks, "trim_number",
                f"an integer with 2 trim_number + 1 <= tasks ({tasks})", trim_number)
        super().__init__(base, seed, jda.TrimmedMean(trim_number=trim_number))


@WEIGHTINGS.register("pcd")
class PCD(Aggregated):
    """Priority-Constrained Descent ("Not All Objectives Are Born Equal", TMLR 2026, arXiv:2606.29521,
    as cited by torchjd): follows the first row of J (T, n), the primary task, guaranteeing every
    other task a fraction `tau` of its normalised progress; squared gradient norms (T,) are tracked
    by an EMA (decay `beta`)."""

    def __init__(self, base: Tensor, seed: int = 0, *, tau: float = 0.02, beta: float = 0.999):
        require(0 <= tau <= 1, "tau", "a number in [0, 1]", tau)
        require(0 <= beta < 1, "beta", "a number in [0, 1)", beta)
        super().__init__(base, seed, jda.PCD(tau=tau, beta=beta))


@WEIGHTINGS.register("excess_mtl")
class ExcessMTL(Aggregated):
    """ExcessMTL (He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi and Zhao, ICML 2024): weights (T,) on the
    simplex, updated by exponentiated gradient from each task's excess risk (distance to
    convergence) estimated from its row of J (T, n). Stateful."""

    def __init__(self, base: Tensor, seed: int = 0, *, robust_step_size: float = 1.0, n_warmup_steps: int = 0):
        require(robust_step_size > 0, "robust_step_size", "a positive number", robust_step_size)
        require(n_warmup_steps >= 0, "n_warmup_steps", "an integer >= 0", n_warmup_steps)
        super().__init__(base, seed, jda.ExcessMTL(robust_step_size=robust_step_size, n_warmup_steps=n_warmup_steps))


@WEIGHTINGS.register("fairgrad")
class FairGrad(Aggregated):
    """FairGrad (Ban and Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024): weights
    w (T,) >= 0 solving G w = w^(-1/alpha) on the Gramian G (T, T) of J (T, n) (alpha-fairness;
    1 = proportional fairness, 0 = the plain mean), by scipy's least squares."""

    def __init__(self, base: Tensor, seed: int = 0, *, alpha: float = 1.0):
        require(alpha >= 0, "alpha", "a number >= 0", alpha)
        super().__init__(base, seed, jda.FairGrad(alpha=alpha))
