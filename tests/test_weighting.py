"""Weighting methods: each against a hand computation or its paper's formula, and every registered
method through one step of a tiny shared-trunk model on CPU."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bench.registry import check_params
from bench.weighting import WEIGHTINGS, build, task_gradient_cosines

NO_ROW_WEIGHTS = {"config", "graddrop", "trimmed_mean"}  # aggregators that are not row combinations
NEEDS_THREE = {"krum", "trimmed_mean"}  # with their defaults: n_byzantine + 3, 2 trim_number + 1 tasks


class TinyNet(nn.Module):
    """A shared trunk (B, 4) -> (B, 6) and one linear head per task; z is what the heads read."""

    def __init__(self, tasks: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6))
        self.heads = nn.ModuleList(nn.Linear(6, 3) for _ in range(tasks))

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T,) losses, alternating cross-entropy and MSE, and the features z (B, 6)."""
        z = self.trunk(x)
        parts = [nn.functional.cross_entropy(h(z), y[:, i].long() % 3) if i % 2 == 0
                 else nn.functional.mse_loss(h(z), y[:, i:i + 1].expand(-1, 3)) for i, h in enumerate(self.heads)]
        return torch.stack(parts), z

    def split(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        return list(self.trunk.parameters()), list(self.heads.parameters())


def _batch(tasks: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16, tasks), generator=gen).float()


def _linear_losses(rows: list[list[float]]) -> tuple[torch.Tensor, nn.Parameter]:
    """Losses L_i = g_i . theta, so the gradient of L_i on theta is exactly the hand-made g_i."""
    theta = nn.Parameter(torch.ones(len(rows[0])))  # L_i = sum of g_i: nonzero, as GradNorm's L_i(0) must be
    return torch.stack([torch.tensor(g) @ theta for g in rows]), theta


# ---- the default is today's step --------------------------------------------------------------
@pytest.mark.parametrize("with_extra", [False, True])
def test_equal_is_bit_identical_to_the_weighted_sum(with_extra):
    torch.manual_seed(0)
    net, base = TinyNet(3), torch.tensor([1.0, 2.5, 10.0])
    ref = copy.deepcopy(net)
    x, y = _batch(3)
    losses, z = ref.losses(x, y)
    extra = (z ** 2).mean() if with_extra else losses.new_zeros(())
    ((losses * base).sum() + extra).backward()  # the trainer's step before the seam

    losses, z = net.losses(x, y)
    weights = build("equal", {}, base).backward(losses, *net.split(), features=[z],
                                                extra=(z ** 2).mean() if with_extra else None)
    assert torch.equal(weights, base)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad)


# ---- every method on every task count ---------------------------------------------------------
@pytest.mark.parametrize("tasks", [1, 2, 3])  # 1: a single-task cell, if a suite sets a method for it
@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_method_leaves_finite_gradients_and_weights(name, tasks):
    base = torch.tensor([1.0, 0.5, 2.0][:tasks])
    if name in NEEDS_THREE and tasks < 3:
        with pytest.raises(ValueError, match="tasks"):
            build(name, {}, base)
        return
    torch.manual_seed(0)
    net, method = TinyNet(tasks), build(name, {}, base, seed=0)
    losses, z = net.losses(*_batch(tasks))
    weights = method.backward(losses, *net.split(), features=[z])
    for pname, p in list(net.named_parameters()) + list(method.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: {pname} has no finite gradient"
    assert weights.shape == (tasks,) and not weights.requires_grad
    assert torch.isnan(weights).all() if name in NO_ROW_WEIGHTS else torch.isfinite(weights).all()


@pytest.mark.parametrize("name", ["upgrad", "mgda_ub", "uncertainty", "gradnorm"])
def test_extra_loss_adds_its_own_gradient(name):
    torch.manual_seed(0)
    net = TinyNet(2)
    twin = copy.deepcopy(net)
    x, y = _batch(2)
    losses, z = net.losses(x, y)
    build(name, {}, torch.ones(2)).backward(losses, *net.split(), features=[z])
    losses, z = twin.losses(x, y)
    extra = 0.3 * z.pow(2).mean() + twin.heads[1].weight.sum()
    build(name, {}, torch.ones(2)).backward(losses, *twin.split(), features=[z], extra=extra)
    losses, z = net.losses(x, y)  # add the extra loss's gradient to the first run's
    (0.3 * z.pow(2).mean() + net.heads[1].weight.sum()).backward()
    for p, q in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_mgda_ub_needs_features():
    net = TinyNet(2)
    losses, _ = net.losses(*_batch(2))
    with pytest.raises(ValueError, match="features"):
        build("mgda_ub", {}, torch.ones(2)).backward(losses, *net.split())


# ---- gradient level against hand computations -------------------------------------------------
def _project(g: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
    """PCGrad's step (Yu et al. 2020, Alg. 1): remove g's component along a conflicting gradient."""
    dot = g @ onto
    return g - dot / (onto @ onto) * onto if dot < 0 else g


@pytest.mark.parametrize("base", [(1.0, 1.0), (2.0, 1.0)])
def test_pcgrad_matches_the_projection_formula(base):
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1: they conflict
    losses, theta = _linear_losses([g1.tolist(), g2.tolist()])
    weights = build("pcgrad", {}, torch.tensor(base)).backward(losses, [theta], [])
    r1, r2 = base[0] * g1, base[1] * g2
    expected = _project(r1, r2) + _project(r2, r1)
    torch.testing.assert_close(theta.grad, expected)
    torch.testing.assert_close(weights[0] * g1 + weights[1] * g2, expected)  # effective weights
    if base == (1.0, 1.0):
        torch.testing.assert_close(theta.grad, torch.tensor([0.5, 1.5]))  # by hand


def test_pcgrad_leaves_agreeing_gradients_alone():
    losses, theta = _linear_losses([[1.0, 0.0], [1.0, 1.0]])
    build("pcgrad", {}, torch.ones(2)).backward(losses, [theta], [])
    torch.testing.assert_close(theta.grad, torch.tensor([2.0, 1.0]))


def _min_norm(g1: torch.Tensor, g2: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Closed form for two gradients (Sener and Koltun 2018, Alg. 1): gamma g1 + (1 - gamma) g2."""
    gamma = float(((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2))).clamp(0, 1))
    return gamma, gamma * g1 + (1 - gamma) * g2


@pytest.mark.parametrize("g1, g2", [([1.0, 0.0], [-1.0, 1.0]), ([1.0, 0.0], [3.0, 0.0]), ([0.0, 2.0], [1.0, 1.0])])
def test_mgda_is_the_min_norm_combination(g1, g2):
    losses, theta = _linear_losses([g1, g2])
    weights = build("mgda", {}, torch.ones(2)).backward(losses, [theta], [])
    gamma, expected = _min_norm(torch.tensor(g1), torch.tensor(g2))
    torch.testing.assert_close(theta.grad, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights, torch.tensor([gamma, 1 - gamma]), atol=1e-5, rtol=0)


def test_mgda_on_conflicting_pair_by_hand():
    # g1 = (1, 0), g2 = (-1, 1): gamma = 3 / 5, d = (0.2, 0.4), with d . g1 = d . g2 = 0.2
    losses, theta = _linear_losses([[1.0, 0.0], [-1.0, 1.0]])
    build("mgda", {}, torch.ones(2)).backward(losses, [theta], [])
    torch.testing.assert_close(theta.grad, torch.tensor([0.2, 0.4]))


def test_mgda_ub_weighs_the_feature_gradients():
    torch.manual_seed(0)
    net = TinyNet(2)
    x, y = _batch(2)
    losses, z = net.losses(x, y)
    build("mgda_ub", {}, torch.ones(2)).backward(losses, *net.split(), features=[z])

    ref = copy.deepcopy(net)
    for p in ref.parameters():
        p.grad = None
    losses, z = ref.losses(x, y)
    gz = [torch.autograd.grad(losses[i], z, retain_graph=True)[0].flatten() for i in range(2)]
    gamma, _ = _min_norm(*gz)
    shared, heads = ref.split()
    expected_shared = torch.autograd.grad(gamma * losses[0] + (1 - gamma) * losses[1], shared, retain_graph=True)
    expected_heads = torch.autograd.grad(losses.sum(), heads)  # each head: its own loss
    for p, g in zip(net.split()[0] + net.split()[1], expected_shared + expected_heads):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)


def test_cagrad_matches_the_papers_update():
    # J = [[-4, 1, 1], [6, 1, 1]], c = 0.5. F(w) = g_w . g0 + c ||g0|| ||g_w|| decreases in w_1 on
    # the whole simplex (dF/dw_1 < 0), so w = (1, 0), g_w = g1 and d = g0 + c ||g0|| / ||g1|| g1.
    # torchjd's documentation prints the same aggregation, [0.1835, 1.2041, 1.2041].
    g1, g2 = torch.tensor([-4.0, 1.0, 1.0]), torch.tensor([6.0, 1.0, 1.0])
    losses, theta = _linear_losses([g1.tolist(), g2.tolist()])
    build("cagrad", {"c": 0.5}, torch.ones(2)).backward(losses, [theta], [])
    g0 = (g1 + g2) / 2
    expected = g0 + 0.5 * g0.norm() / g1.norm() * g1
    torch.testing.assert_close(theta.grad, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(theta.grad, torch.tensor([0.1835, 1.2041, 1.2041]), atol=1e-4, rtol=0)


def test_cagrad_with_c_zero_is_the_mean_gradient():
    losses, theta = _linear_losses([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    build("cagrad", {"c": 0.0}, torch.ones(2)).backward(losses, [theta], [])
    torch.testing.assert_close(theta.grad, torch.tensor([1.0, 1.0, 1.0]))


def test_upgrad_reproduces_torchjds_documented_example():
    losses, theta = _linear_losses([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    build("upgrad", {}, torch.ones(2)).backward(losses, [theta], [])
    torch.testing.assert_close(theta.grad, torch.tensor([0.2929, 1.9004, 1.9004]), atol=1e-4, rtol=0)


def test_task_gradient_cosines_by_hand():
    losses, theta = _linear_losses([[1.0, 0.0], [-1.0, 1.0], [0.0, 2.0]])
    cos = task_gradient_cosines(losses, [theta])
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(cos, torch.tensor([[1.0, -s, 0.0], [-s, 1.0, s], [0.0, s, 1.0]]))
    losses.sum().backward()  # the graph is kept for the step's own backward
    torch.testing.assert_close(theta.grad, torch.tensor([0.0, 3.0]))


# ---- loss level against the papers' formulas -------------------------------------------------
def test_uncertainty_log_variance_moves_to_the_log_loss_scale():
    # Toy regression: two targets linear in x plus noise of std 0.3 and 3, so each task's loss
    # settles near its noise variance; s_i = log sigma_i^2 should follow log L_i (its minimiser).
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=gen)
    noise = torch.randn(256, 2, generator=gen) * torch.tensor([0.3, 3.0])
    y = x @ torch.randn(3, 2, generator=gen) + noise
    torch.manual_seed(0)
    trunk, heads = nn.Linear(3, 8), nn.ModuleList(nn.Linear(8, 1) for _ in range(2))
    method = build("uncertainty", {}, torch.ones(2))
    opt = torch.optim.Adam([*trunk.parameters(), *heads.parameters(), *method.parameters()], lr=0.05)
    for _ in range(200):
        z = trunk(x)
        losses = torch.stack([nn.functional.mse_loss(h(z).squeeze(1), y[:, i]) for i, h in enumerate(heads)])
        opt.zero_grad(set_to_none=True)
        s_used = method.log_vars.detach().clone()
        weights = method.backward(losses, list(trunk.parameters()), list(heads.parameters()), features=[z])
        opt.step()
    torch.testing.assert_close(weights, torch.exp(-s_used))  # the weights of the step: exp(-s_i)
    s = method.log_vars.detach()  # from 0 to the log of each task's loss ...
    torch.testing.assert_close(s, losses.detach().log(), atol=0.05, rtol=0)
    torch.testing.assert_close(s, torch.tensor([0.09, 9.0]).log(), atol=0.15, rtol=0)  # ... ~ log sigma^2


def test_gradnorm_weight_gradient_is_the_papers_l_grad():
    # First step: r_i = 1, so the target is mean_j G_j and grad_w sum_i |w_i n_i - mean G| =
    # n_i sign(n_i - mean n) at w = 1. Gradients (3, 4) and (0, 1): n = (5, 1), mean 3.
    losses, theta = _linear_losses([[3.0, 4.0], [0.0, 1.0]])
    method = build("gradnorm", {"alpha": 1.5}, torch.ones(2))
    weights = method.backward(losses, [theta], [])
    torch.testing.assert_close(method.weights.grad, torch.tensor([5.0, -1.0]))
    torch.testing.assert_close(theta.grad, torch.tensor([3.0, 5.0]))  # w = 1: the plain sum
    torch.testing.assert_close(weights, torch.ones(2))


@pytest.mark.parametrize("lr", [0.01, 50.0])  # 50: steps far past zero, which the clamp must absorb
def test_gradnorm_weights_stay_positive_and_sum_to_the_task_count(lr):
    torch.manual_seed(0)
    net = TinyNet(3)
    x, y = _batch(3)
    method = build("gradnorm", {}, torch.ones(3))
    opt = torch.optim.SGD([{"params": net.parameters(), "lr": 0.01}, {"params": method.parameters(), "lr": lr}])
    for step in range(30):
        losses, z = net.losses(x, y)
        losses = losses * torch.tensor([1.0, 1.0, 30.0])  # task 2's gradients are ~30x larger
        opt.zero_grad(set_to_none=True)
        weights = method.backward(losses, *net.split(), features=[z])
        opt.step()
        assert (weights > 0).all() and abs(float(weights.sum()) - 3) < 1e-5, (step, weights)
    if lr == 0.01:
        assert weights[2] < 1 < weights[0]  # the large-gradient task is weighted down


def test_dwa_follows_its_formula_on_a_hand_made_history():
    method = build("dwa", {}, torch.ones(2))
    theta = None

    def weights() -> torch.Tensor:
        nonlocal theta
        losses, theta = _linear_losses([[1.0, 0.0], [0.0, 1.0]])
        return method.backward(losses, [theta], [])

    def dwa(ratios: list[float]) -> torch.Tensor:  # Liu et al. 2019, eq. 7, T = 2
        e = [math.exp(r / 2.0) for r in ratios]
        return torch.tensor([2 * v / sum(e) for v in e])

    torch.testing.assert_close(weights(), torch.ones(2))  # epoch 1
    method.end_epoch(torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(weights(), torch.ones(2))  # epoch 2
    method.end_epoch(torch.tensor([0.5, 1.8]))
    torch.testing.assert_close(weights(), dwa([0.5 / 1.0, 1.8 / 2.0]))  # epoch 3
    torch.testing.assert_close(theta.grad, dwa([0.5, 0.9]))  # the step used them
    method.end_epoch(torch.tensor([0.25, 1.8]))
    torch.testing.assert_close(weights(), dwa([0.25 / 0.5, 1.8 / 1.8]))  # epoch 4


def test_rlw_draws_softmax_normal_weights_from_the_seed():
    def run(seed: int) -> list[torch.Tensor]:
        method = build("rlw", {}, torch.tensor([1.0, 1.0, 1.0]), seed=seed)
        out = []
        for _ in range(3):
            losses, theta = _linear_losses([[1.0], [2.0], [3.0]])
            out.append(method.backward(losses, [theta], []))
        return out

    gen = torch.Generator().manual_seed(7)
    expected = [torch.softmax(torch.randn(3, generator=gen), 0) for _ in range(3)]
    for w, e in zip(run(7), expected):
        torch.testing.assert_close(w, e)
    assert not torch.equal(run(7)[0], run(8)[0])


# ---- declared behaviour -----------------------------------------------------------------------
GRAPH_SAFE = {"equal", "uncertainty", "dwa", "gradnorm"}


def test_graph_safe_flags():
    assert {n for n in WEIGHTINGS.names() if WEIGHTINGS.get(n).graph_safe} == GRAPH_SAFE
    assert {n for n in WEIGHTINGS.names() if WEIGHTINGS.get(n).needs_features} == {"mgda_ub"}


class _HostSyncs(TorchDispatchMode):
    """Records ops that copy a tensor's value to the host (.item(), if on a tensor): they break capture."""

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "_local_scalar_dense" in str(func):
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", sorted(GRAPH_SAFE))
def test_graph_safe_methods_never_read_values_on_the_host(name):
    torch.manual_seed(0)
    net, method = TinyNet(2), build(name, {}, torch.ones(2))
    for _ in range(2):  # the second step too: GradNorm's first-step branch is a tensor select
        losses, z = net.losses(*_batch(2))
        with _HostSyncs() as mode:
            method.backward(losses, *net.split(), features=[z])
        assert mode.syncs == [], f"{name} syncs with the host: {mode.syncs}"


def test_a_gradient_method_reads_values_on_the_host():
    # The detector above does see a sync: MGDA's Frank-Wolfe loop branches on tensor values.
    net = TinyNet(2)
    losses, z = net.losses(*_batch(2))
    with _HostSyncs() as mode:
        build("mgda", {}, torch.ones(2)).backward(losses, *net.split(), features=[z])
    assert mode.syncs


@pytest.mark.parametrize("name, params, key, tasks", [
    ("cagrad", {"c": -0.1}, "c", 2),
    ("gradnorm", {"alpha": -1.0}, "alpha", 2),
    ("dwa", {"temperature": 0.0}, "temperature", 2),
    ("mgda", {"epsilon": 0.0}, "epsilon", 2),
    ("mgda_ub", {"max_iters": 0}, "max_iters", 2),
    ("aligned_mtl", {"scale_mode": "max"}, "scale_mode", 2),
    ("gradvac", {"beta": 1.5}, "beta", 2),
    ("pcd", {"tau": 2.0}, "tau", 2),
    ("excess_mtl", {"robust_step_size": 0.0}, "robust_step_size", 2),
    ("fairgrad", {"alpha": -1.0}, "alpha", 2),
    ("krum", {"n_byzantine": 1}, "n_byzantine", 3),
    ("trimmed_mean", {"trim_number": 2}, "trim_number", 4),
])
def test_invalid_values_name_the_parameter(name, params, key, tasks):
    with pytest.raises(ValueError, match=rf"^train\.weighting\.{key}: expected"):
        build(name, params, torch.ones(tasks), where="train.weighting")


def test_unknown_method_lists_the_choices():
    with pytest.raises(ValueError, match=r"^train\.weighting\.name: unknown weighting 'pcgard'; valid: .*pcgrad"):
        build("pcgard", {}, torch.ones(2), where="train.weighting")


def test_misspelt_or_mistyped_parameter_names_the_key_path():
    with pytest.raises(ValueError, match=r"^train\.weighting\.temprature: unknown parameter; valid: temperature$"):
        build("dwa", {"temprature": 2.0}, torch.ones(2), where="train.weighting")
    with pytest.raises(ValueError, match=r"^train\.weighting\.alpha: expected float, got 'big'"):
        check_params(WEIGHTINGS.get("gradnorm"), {"alpha": "big"}, "train.weighting")


def test_every_method_documents_its_source():
    for name in WEIGHTINGS.names():
        doc = WEIGHTINGS.get(name).__doc__ or ""
        assert len(doc) > 80, f"{name} has no real docstring"
