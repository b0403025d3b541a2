"""Models through the registries: parameter counts of the CIFAR setups, every backbone x strategy
forward and backward on tiny CPU tensors with tasks of every kind, and every weighting method x
every multi-task architecture through the trainer's own step."""

from __future__ import annotations

import pytest
import torch

from bench.config import PluginConfig, TrainConfig
from bench.kinds import KINDS, TaskSpec, make_spec
from bench.models import BACKBONES, BackboneContext, count_params
from bench.registry import declared_params
from bench.strategies import STRATEGIES, Strategy
from bench.trainer import Trainer
from bench.weighting import WEIGHTINGS, split_params

CIFAR = {
    "class10": make_spec("multiclass", name="class10", classes=10),
    "animal": make_spec("binary", name="animal", classes=2),
}


def _cifar_params(strategy: str, tasks: tuple[str, ...]) -> int:
    ctx = BackboneContext(in_channels=3, image_size=32)
    model = STRATEGIES.get(strategy)().build({t: CIFAR[t] for t in tasks},
                                             lambda: BACKBONES.get("alexnet_cifar")(ctx))
    return count_params(model)


@pytest.mark.parametrize("strategy, tasks, expected", [
    ("stl", ("class10",), 7_506_762),
    ("stl", ("animal",), 7_497_537),
    ("hard_share", ("class10", "animal"), 7_507_787),
    ("cross_stitch", ("class10", "animal"), 15_004_307),
])
def test_cifar_parameter_counts(strategy, tasks, expected):
    # alexnet_cifar at 32x32: convs 2,251,584 + trunk 5,244,928 (4096 -> 1024 -> 1024) = 7,496,512;
    # heads 10,250 (class10) and 1,025 (animal); cross-stitch: two columns, heads, 2 units x 2x2 alphas.
    assert _cifar_params(strategy, tasks) == expected


BATCH, SIZE = 4, 32
# One task of every kind, with out_dim > 1 where the kind allows, so a transposed output would show.
SPECS = {
    "multiclass": make_spec("multiclass", name="mc", classes=5),
    "binary": make_spec("binary", name="bin", classes=2),
    "regression": make_spec("regression", name="reg", dim=2),
    "segmentation": make_spec("segmentation", name="seg", classes=3),
    "detection": make_spec("detection", name="det", classes=2, image_size=SIZE),
}
TINY_PARAMS = {"width": 64, "widths": [8, 16], "channels": 8, "neck_channels": 8}  # where a backbone declares them


def test_specs_cover_every_task_kind():
    assert set(SPECS) == set(KINDS.names())


def _builds_a_model(strategy: Strategy) -> bool:
    # Strategies that only combine other cells' results (an ensemble, say) keep the base build.
    return type(strategy).build is not Strategy.build


def _boxes(gen: torch.Generator) -> torch.Tensor:
    """(BATCH, 2, 5): one box per image [x1, y1, x2, y2, class] inside the image, and a padding row."""
    corner = torch.randint(0, SIZE // 2, (BATCH, 2), generator=gen).float()
    size = torch.randint(4, SIZE // 2, (BATCH, 2), generator=gen).float()
    cls = torch.randint(0, 2, (BATCH, 1), generator=gen).float()
    box = torch.cat([corner, corner + size, cls], 1)
    return torch.stack([box, torch.tensor([0, 0, 0, 0, -1.0]).expand(BATCH, 5)], 1)


# Random targets in each kind's layout (first dimension: the batch).
TARGETS = {
    "multiclass": lambda s, g: torch.randint(0, s.classes, (BATCH,), generator=g),
    "binary": lambda s, g: torch.randint(0, 2, (BATCH,), generator=g),
    "regression": lambda s, g: torch.rand(BATCH, s.dim, generator=g),
    "segmentation": lambda s, g: torch.randint(0, s.classes, (BATCH, SIZE, SIZE), generator=g),
    "detection": lambda s, g: _boxes(g),
}


def test_targets_cover_every_task_kind():
    assert set(TARGETS) == set(KINDS.names())


def _targets(specs: dict[str, TaskSpec], gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {t: TARGETS[s.kind](s, gen) for t, s in specs.items()}


@pytest.mark.parametrize("strategy_name", STRATEGIES.names())
@pytest.mark.parametrize("backbone_name", BACKBONES.names())
def test_forward_backward_every_backbone_and_strategy(backbone_name, strategy_name):
    strategy = STRATEGIES.get(strategy_name)()
    if not _builds_a_model(strategy):
        pytest.skip(f"{strategy_name} builds no model of its own (it keeps Strategy.build)")
    gen = torch.Generator().manual_seed(0)
    build = BACKBONES.get(backbone_name)
    params = {k: v for k, v in TINY_PARAMS.items() if k in declared_params(build)}
    ctx = BackboneContext(in_channels=3, image_size=SIZE, sample=torch.randn(16, 3, SIZE, SIZE, generator=gen))
    specs = {s.name: s for s in SPECS.values()}
    torch.manual_seed(0)
    for tasks in strategy.cell_tasks(tuple(specs)):  # STL: one model per task
        cell_specs = {t: specs[t] for t in tasks}
        model = strategy.build(cell_specs, lambda: build(ctx, **params))
        _check_forward_backward(model, cell_specs, gen)
        _check_param_groups(model)
        _check_features(model, cell_specs, gen)


def _check_forward_backward(model: torch.nn.Module, specs: dict[str, TaskSpec], gen: torch.Generator) -> None:
    model.train()
    out = model(torch.randn(BATCH, 3, SIZE, SIZE, generator=gen))
    assert set(out) == set(specs)
    for t, s in specs.items():
        assert out[t].shape[:2] == (BATCH, s.out_channels), t  # (B, C) or a map (B, C, h, w)
        assert torch.isfinite(out[t]).all(), t
    y = _targets(specs, gen)
    sum(s.loss(out[t], y[t]) for t, s in specs.items()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"Some parameters are missing gradients: {missing}"
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, f"Some gradients are not finite: {bad}"


def _check_param_groups(model: torch.nn.Module) -> None:
    # The trainer builds its optimizer from param_groups(): a parameter left out would never train.
    grouped = [id(p) for ps in model.param_groups().values() for p in ps]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    left_out = sorted(n for i, n in names.items() if i not in set(grouped))
    assert not left_out, f"Parameters in no param group: {left_out}"


def _check_features(model: torch.nn.Module, specs: dict[str, TaskSpec], gen: torch.Generator) -> None:
    # The features are what the heads read: every output depends on them, and the outputs equal forward's.
    model.eval()
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
    out, features = model.forward_features(x)
    assert features and all(torch.allclose(out[t], o) for t, o in model(x).items())
    total = sum(o.float().sum() for o in out.values())
    grads = torch.autograd.grad(total, list(features.values()), allow_unused=True)
    assert all(g is not None for g in grads), f"a feature no head reads: {list(features)}"


MULTI_TASK = [n for n in STRATEGIES.names() if STRATEGIES.get(n).weighs_tasks]  # the architectures a weighting applies to


def test_the_multi_task_architectures():
    assert set(MULTI_TASK) == {"hard_share", "cross_stitch", "mtan", "mmoe"}


@pytest.mark.parametrize("weighting", WEIGHTINGS.names())
@pytest.mark.parametrize("strategy_name", MULTI_TASK)
def test_every_weighting_trains_every_multi_task_architecture(strategy_name, weighting):
    # One step of the trainer's step function (features only for methods that read them, the
    # method's own parameters in the optimizer), at lr 0 so the gradients stay to be checked.
    gen = torch.Generator().manual_seed(0)
    ctx = BackboneContext(in_channels=3, image_size=SIZE)
    specs = {s.name: s for s in SPECS.values()}
    torch.manual_seed(0)
    model = STRATEGIES.get(strategy_name)().build(specs, lambda: BACKBONES.get("convnet")(ctx, widths=[8, 16], hidden=16))
    trainer = Trainer(TrainConfig(), torch.device("cpu"), seed=0, weighting=PluginConfig(name=weighting))
    method = trainer.method(list(specs))
    opt = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.0)
    sums = torch.zeros(2 * len(specs) + 2)  # losses, extra, total, weights
    step = trainer._step_fn(trainer._losses_fn(model, specs, None, False, method), opt, method,
                            *split_params(model), sums)
    model.train()
    step(torch.randn(BATCH, 3, SIZE, SIZE, generator=gen), _targets(specs, gen), {})
    trainable = [(n, p) for n, p in [*model.named_parameters(), *method.named_parameters()] if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"Some parameters are missing gradients: {missing}"
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, f"Some gradients are not finite: {bad}"
    assert torch.isfinite(sums[:len(specs) + 2]).all()
@pytest.mark.parametrize("tasks, self_weight, other", [(2, 0.9, 0.1), (3, 0.9, 0.05), (3, 0.7, 0.15)])
def test_cross_stitch_units_start_near_identity_and_mix_by_alpha(tasks, self_weight, other):
    """Misra et al. 2016: x~_i = sum_j alpha_ij x_j; initialised with self_weight on the diagonal and
    the rest, (1 - self_weight), spread evenly over the other tasks (each row sums to 1)."""
    from bench.models import CrossStitchUnit

    unit = CrossStitchUnit(tasks, self_weight)
    want = torch.full((tasks, tasks), other)
    want.fill_diagonal_(self_weight)
    assert torch.allclose(unit.alpha.detach(), want)
    xs = [torch.full((2, 3), float(10 ** j)) for j in range(tasks)]  # column j is 10^j everywhere
    mixed = unit(xs)
    for i in range(tasks):  # by hand: alpha_ii * 10^i + other * (sum of the other columns)
        value = self_weight * 10 ** i + other * sum(10 ** j for j in range(tasks) if j != i)
        assert torch.allclose(mixed[i], torch.full((2, 3), value))


def test_a_one_task_cross_stitch_unit_keeps_its_column():
    # A single-task entry of cross_stitch (`tasks: [a]`) builds one column: its unit is the 1 x 1
    # [[self_weight]] (no other task to spread 1 - self_weight over), not a division by 0 tasks.
    from bench.models import CrossStitchUnit

    unit = CrossStitchUnit(1, 0.9)
    assert unit.alpha.detach().tolist() == [[pytest.approx(0.9)]]
    (mixed,) = unit([torch.full((2, 3), 10.0)])
    assert torch.allclose(mixed, torch.full((2, 3), 9.0))
