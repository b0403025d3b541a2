"""Strategies: how a cell turns a dataset's tasks into a model and trains it.

A strategy is a small frozen dataclass whose fields are its suite parameters, with up to three
hooks: `cell_tasks` (how the grid splits the tasks into cells), `build` (the model, from a backbone
factory) and `fit` (the training, through the Trainer; joint training by default). Strategies see
only the model seam `forward(x) -> {task: output}` and `param_groups()`. Value checks that types
cannot express go in `__post_init__` (checked by the suite loader) or `cell_tasks` (by the grid) as
ValueError starting with the parameter name; both prefix the suite entry.

A combining strategy (`ensemble`) trains nothing: `members` names the cells it is computed from
(another entry's cells for some seeds; the grid orders them first) and `combine` merges their
stored test predictions, one task at a time (see bench/combine.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Annotated, Callable, ClassVar

import numpy as np

from bench.models import check_heads
from bench.registry import SEEDS, Range, Registry

if TYPE_CHECKING:
    import torch
    from torch import nn
    from bench.data import Split, TaskSet
    from bench.kinds import TaskSpec
    from bench.models.nets import Backbone
    from bench.trainer import FitResult, Trainer

STRATEGIES = Registry("strategy")
MakeBackbone = Callable[[], "Backbone"]


@dataclass(frozen=True)
class Members:
    """The cells a combining strategy is computed from: strategy entry `of`'s cells for `seeds`."""

    of: str  # a strategy id of the same suite
    seeds: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """Joint training of one model on all of the cell's tasks (the default hooks)."""

    multi_task = True  # False for single-task baselines; the report pairs the others against them
    weighs_tasks = True  # trains its tasks together, so a suite may give it a `weighting` method
    # bench/-relative modules of the models `build` makes besides bench/models/nets.py (imported where
    # they build, so a suite validates without torch): they join the cell's key.
    builds: ClassVar[tuple[str, ...]] = ()

    def cell_tasks(self, tasks: tuple[str, ...]) -> list[tuple[str, ...]]:
        return [tasks]

    def build(self, specs: dict[str, TaskSpec], make_backbone: MakeBackbone) -> nn.Module:
        raise NotImplementedError

    def fit(self, model: nn.Module, data: TaskSet, specs: dict[str, TaskSpec], trainer: Trainer) -> FitResult:
        # on a union of datasets, only the images labelled for some task of this cell (STL: its own)
        return trainer.fit(model, data, specs, train=data.train.any_of(list(specs)))

    def members(self) -> Members | None:
        """The cells this one is computed from, without training; None for a strategy that trains."""
        return None

    def epochs(self, train_epochs: int, tasks: tuple[str, ...]) -> int:
        """The epochs a cell of `tasks` trains in all (its history rows), given its `train.epochs`."""
        return train_epochs

    def combine(self, spec: TaskSpec, preds: list[np.ndarray]) -> np.ndarray:
        """One task's stored member predictions (its kind's layout) -> the cell's."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class WithHeads(Strategy):
    """Base of the strategies whose models take per-task head settings, checked before training."""

    heads: dict[str, dict] = field(default_factory=dict)  # task -> {hidden: [..], dropout, sigmoid}

    def __post_init__(self) -> None:
        check_heads(self.heads)

    def cell_tasks(self, tasks):
        check_heads(self.heads, tuple(tasks))
        return super().cell_tasks(tasks)


@STRATEGIES.register("hard_share")
@dataclass(frozen=True, kw_only=True)
class HardShare(WithHeads):
    """One shared backbone and trunk, one head per task."""

    def build(self, specs, make_backbone):
        from bench.models.nets import MultiHeadNet

        return MultiHeadNet(make_backbone(), specs, self.heads)


@STRATEGIES.register("stl")
@dataclass(frozen=True, kw_only=True)
class SingleTask(HardShare):
    """Single-task learning: one independent model per task, each its own cell."""

    multi_task = False
    weighs_tasks = False

    def cell_tasks(self, tasks):
        return [(t,) for t in super().cell_tasks(tasks)[0]]


@STRATEGIES.register("cross_stitch")
@dataclass(frozen=True, kw_only=True)
class CrossStitch(WithHeads):
    """One backbone column per task, mixed by learned cross-stitch units after the given stages."""

    # 1-based backbone stages; None: after stages 1 and 2 where they are not the trunk (last) stage,
    # so [1, 2] on alexnet_cifar (as seed 001) and [1] on the two-stage dual_stream / spatial_only.
    stitch_after: Annotated[list[int] | None, Range(">= 1")] = None
    self_weight: Annotated[float, Range("[0, 1]")] = 0.9  # initial diagonal; the rest (1 - self_weight) is spread

    def build(self, specs, make_backbone):
        from bench.models.nets import CrossStitchNet

        stitch_after = None if self.stitch_after is None else list(self.stitch_after)
        return CrossStitchNet(make_backbone, specs, stitch_after=stitch_after,
                              self_weight=self.self_weight, heads=self.heads)


@STRATEGIES.register("mtan")
@dataclass(frozen=True, kw_only=True)
class MTAN(WithHeads):
    """A shared backbone with task-specific attention modules over its stages (Liu, Johns and Davison 2019)."""

    builds = ("models/mtan.py",)

    def build(self, specs, make_backbone):
        from bench.models.mtan import MTANNet

        return MTANNet(make_backbone(), specs, self.heads)


@STRATEGIES.register("mmoe")
@dataclass(frozen=True, kw_only=True)
class MMoE(WithHeads):
    """Shared expert backbones mixed by a softmax gate per task (Ma et al. 2018)."""

    builds = ("models/mmoe.py",)
    experts: Annotated[int, Range(">= 1")] = 3  # backbone columns; each adds one backbone's compute and parameters

    def build(self, specs, make_backbone):
        from bench.models.mmoe import MMoENet

        return MMoENet(make_backbone, specs, experts=self.experts, heads=self.heads)


@STRATEGIES.register("ensemble")
@dataclass(frozen=True, kw_only=True)
class Ensemble(Strategy):
    """Average of another entry's cells over seeds (probabilities or regression outputs); trains nothing.

    STL members are per task, so each task averages the member cells that predict it.
    """

    weighs_tasks = False

    of: str = ""  # the strategy id whose cells are averaged; required
    seeds: Annotated[list[int], SEEDS] = field(default_factory=lambda: [0, 1, 2])  # need not be among the suite's

    def members(self) -> Members:
        return Members(self.of, tuple(self.seeds))

    def combine(self, spec, preds):
        return spec.combine(preds)  # the kind's average: probabilities, or regression outputs


@STRATEGIES.register("sequential_lwf")
@dataclass(frozen=True, kw_only=True)
class SequentialLwF(HardShare):
    """Tasks learned one stage at a time on one multi-head model: Learning without Forgetting (Li & Hoiem 2016).

    Stage k trains task k's loss only; the model as it was after stage k-1, frozen, is the teacher
    that every earlier head is distilled towards (`Distiller`), each by its kind's distillation, plus
    optionally the shared features the heads read (seed 003's feature distillation). After every stage
    each task is scored on the test set; the matrix R[stage][task] of primary metrics goes to
    FitResult.extra. Learning-rate factors per parameter group apply from the second stage on: the
    first stage trains every group at the full rate (there is nothing to protect yet).
    """

    weighs_tasks = False  # one task per stage (plus distillation): nothing to weigh

    order: list[str] = field(default_factory=list)  # stage order; empty: the cell's task order
    # for all tasks, or task -> T (missing: 2.0); LwF's T
    temperature: Annotated[float | dict[str, float], Range("> 0")] = 2.0
    # for all tasks, or task -> weight (missing: 1.0)
    distill_weight: Annotated[float | dict[str, float], Range(">= 0")] = 1.0
    # MSE between the student's and the teacher's shared features (`forward_features`), weighted by
    # the sum of this over the distilled tasks; seed 003 used 2.5 for detection, 0 for the others
    feature_weight: Annotated[float | dict[str, float], Range(">= 0")] = 0.0
    # train inputs stored per earlier task to distil on; 0: distil on the stage's batches
    replay: Annotated[int, Range(">= 0")] = 0
    replay_batch: Annotated[int | None, Range(">= 1")] = None  # replayed inputs per step; None: the training batch size
    # lr factors per parameter group from the second stage on; all 1.0 as in LwF, which tunes everything
    # jointly (0 leaves a group out of the stage's optimizer; the current head must learn)
    lr_backbone: Annotated[float, Range(">= 0")] = 1.0
    lr_shared: Annotated[float, Range(">= 0")] = 1.0  # every "shared" group, and each "shared/<part>" not in lr_groups
    lr_current_head: Annotated[float, Range("> 0")] = 1.0
    lr_old_heads: Annotated[float, Range(">= 0")] = 1.0  # the heads being distilled
    # finer groups, e.g. {shared/late: 1.0} (onehead); not the heads, whose factors are the two above
    lr_groups: Annotated[dict[str, float], Range(">= 0")] = field(default_factory=dict)
    # from the second stage on, batch norm keeps the first stage's statistics (a new task's images,
    # and the replayed ones, would otherwise shift what the earlier heads were trained on)
    freeze_norm: bool = False
    disjoint: bool = False  # stages train on disjoint slices of the train split, not the same images
    # epochs, for every stage or one per stage; None: train.epochs
    stage_epochs: Annotated[int | list[int] | None, Range(">= 1")] = None
    # peak lr, for every stage or one per stage; None: train.lr
    stage_lr: Annotated[float | list[float] | None, Range("> 0")] = None
    # % drop of a task's primary metric that still passes (report)
    forgetting_threshold: Annotated[float, Range(">= 0")] = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        heads = sorted(k for k in self.lr_groups if k.startswith("head"))
        if heads:
            raise ValueError(f"lr_groups: {heads} are head groups, whose factors are lr_current_head and "
                             "lr_old_heads; name non-head groups (e.g. shared/late)")

    def cell_tasks(self, tasks):
        super().cell_tasks(tasks)
        order = tuple(self.order) or tuple(tasks)
        if sorted(order) != sorted(tasks):
            raise ValueError(f"order: {list(order)} must name each of the tasks {list(tasks)} once")
        for name in ("temperature", "distill_weight", "feature_weight"):
            value = getattr(self, name)
            unknown = set(value) - set(tasks) if isinstance(value, dict) else set()
            if unknown:
                raise ValueError(f"{name}: {sorted(unknown)} not among the tasks {list(tasks)}")
        for name in ("stage_epochs", "stage_lr"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != len(order):
                raise ValueError(f"{name}: {len(value)} values for {len(order)} stages; give one, or one per stage")
        return [order]

    def epochs(self, train_epochs, tasks):
        return sum(self.per_stage("stage_epochs", k) or train_epochs for k in range(len(tasks)))  # a stage per task

    def fit(self, model, data, specs, trainer):
        from bench.trainer import FitResult

        order = list(self.order) or list(specs)
        self._check_groups(model)
        trains = [data.train.part(t) for t in order]  # the items labelled for each stage's task
        if self.disjoint:
            if any(t in data.train.labelled for t in order):
                raise ValueError("disjoint: these tasks' labels already come on separate images (a union "
                                 "dataset); leave disjoint at false")
            trains = [data.train.take(i.to(data.train.x.device)) for i in disjoint_indices(len(data.train), len(order))]
        buffers: dict[str, torch.Tensor] = {}  # task -> (replay, C, H, W) uint8 train inputs
        stages, R = [], []
        for k, task in enumerate(order):
            distiller = self.distiller(model, order[:k], specs, buffers, trainer, data)
            stages.append(trainer.fit(model, data, {task: specs[task]}, train=trains[k],
                                      epochs=self.per_stage("stage_epochs", k), lr=self.per_stage("stage_lr", k),
                                      extra_loss=distiller, lr_factors=self.lr_factors(order, k),
                                      freeze_norm=self.freeze_norm and k > 0, stage=f"{k + 1}:{task}",
                                      monitor={t: specs[t] for t in order[:k]}))
            test = trainer.evaluate(model, data, data.test, specs)
            R.append([test[t][specs[t].primary] for t in order])
            if self.replay:
                buffers[task] = replay_buffer(trains[k], self.replay, seed=trainer.seed + k)
        # the model now holds the best epoch of the last stage: the runner's test predictions are its
        return FitResult(
            history=[row for s in stages for row in s.history], best_epoch=stages[-1].best_epoch,
            val_metrics=trainer.evaluate(model, data, data.val, specs),
            train_seconds=sum(s.train_seconds for s in stages), images=sum(s.images for s in stages),
            extra={"R": R, "stages": order, "stage_best_epochs": [s.best_epoch for s in stages],
                   "forgetting_threshold": self.forgetting_threshold},
        )

    def per_task(self, name: str, task: str) -> float:
        """A per-task parameter: the scalar, or the dict's entry (missing: the field's default)."""
        value = getattr(self, name)
        if not isinstance(value, dict):
            return float(value)
        default = next(f.default for f in fields(self) if f.name == name)
        return float(value.get(task, default))

    def per_stage(self, name: str, k: int):
        """A per-stage parameter for stage k: the list's entry, or the scalar (None: the cell's train setting)."""
        value = getattr(self, name)
        return value[k] if isinstance(value, list) else value

    def distiller(self, model: nn.Module, earlier: list[str], specs: dict[str, TaskSpec], buffers: dict,
                  trainer: Trainer, data: TaskSet) -> "Distiller | None":
        """The stage's extra loss, or None (no teacher at all) when nothing of an earlier task is distilled."""
        import torch

        weights = {t: self.per_task("distill_weight", t) for t in earlier}
        weights = {t: w for t, w in weights.items() if w > 0}
        feature_weight = sum(self.per_task("feature_weight", t) for t in earlier)
        if not weights and not feature_weight:
            return None
        replay = torch.cat([buffers[t] for t in earlier]) if self.replay else None
        return Distiller(model, {t: specs[t] for t in weights}, weights,
                         {t: self.per_task("temperature", t) for t in weights}, feature_weight=feature_weight,
                         replay=replay, norm=trainer.normaliser(data),
                         batch_size=self.replay_batch or trainer.cfg.batch_size, seed=trainer.seed)

    def lr_factors(self, order: list[str], k: int) -> dict[str, float]:
        """lr factor per `param_groups()` name or prefix for stage k (0 leaves a group out of the optimizer)."""
        factors = {} if k == 0 else {"backbone": self.lr_backbone, "shared": self.lr_shared, **self.lr_groups}
        factors.update({f"head/{t}": self.lr_old_heads for t in order[:k]})
        factors.update({f"head/{t}": 0.0 for t in order[k + 1:]})  # not learned yet: left as initialised
        factors[f"head/{order[k]}"] = self.lr_current_head
        return factors

    def _check_groups(self, model: nn.Module) -> None:
        names = list(model.param_groups())
        unknown = [g for g in self.lr_groups if not any(n == g or n.startswith(g + "/") for n in names)]
        if unknown:
            raise ValueError(f"lr_groups: {unknown} name no parameter group of this model; its groups: {', '.join(names)}")


@STRATEGIES.register("sequential_finetune")
@dataclass(frozen=True, kw_only=True)
class SequentialFinetune(SequentialLwF):
    """Sequential fine-tuning: LwF's stages with no distillation, the baseline that shows forgetting."""

    distill_weight: float | dict[str, float] = field(default=0.0, init=False)
    temperature: float | dict[str, float] = field(default=2.0, init=False)  # unused without distillation
    feature_weight: float | dict[str, float] = field(default=0.0, init=False)
    replay: int = field(default=0, init=False)  # stored inputs would only feed distillation
    replay_batch: int | None = field(default=None, init=False)


class Distiller:
    """One stage's extra loss: sum over earlier tasks of weight * distill(student head, teacher head),
    plus feature_weight * the MSE between the student's and the teacher's shared features.

    The teacher is a frozen copy (eval mode, no gradients) of the model as it is when the stage
    starts. Without replay it sees the stage's own (augmented) batch; with replay it sees a batch
    drawn from the stored inputs of all earlier tasks, which the student then also runs on.
    """

    def __init__(self, model: nn.Module, specs: dict[str, TaskSpec], weights: dict[str, float],
                 temperatures: dict[str, float], *, feature_weight: float = 0.0, replay: torch.Tensor | None,
                 norm: Callable[[torch.Tensor], torch.Tensor], batch_size: int, seed: int):
        import torch

        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.specs, self.weights, self.temperatures = specs, weights, temperatures
        self.feature_weight = feature_weight
        self.replay, self.norm = replay, norm  # replay: (N, C, H, W) uint8 or None
        self.batch_size = batch_size if replay is None else min(batch_size, len(replay))
        device = next(model.parameters()).device
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, model: nn.Module, x: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if self.replay is not None:
            idx = torch.randint(len(self.replay), (self.batch_size,), device=self.replay.device, generator=self.gen)
            x, out = self.norm(self.replay[idx]), None
        features = {}
        if out is None or self.feature_weight:  # the student on the replayed batch, or its features too
            out, features = model.forward_features(x)
        with torch.no_grad():
            target, teacher_features = self.teacher.forward_features(x)
        terms = [w * self.specs[t].distill(out[t], target[t], self.temperatures[t]) for t, w in self.weights.items()]
        if self.feature_weight:
            terms.append(self.feature_weight * torch.stack([
                F.mse_loss(features[k].float(), teacher_features[k].float()) for k in features]).mean())
        return torch.stack(terms).sum()


def disjoint_indices(n: int, k: int) -> list[torch.Tensor]:
    """k disjoint sorted index sets covering range(n), sizes within one; the same for every seed."""
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return [idx.sort().values for idx in perm.tensor_split(k)]


def replay_buffer(split: Split, n: int, seed: int) -> torch.Tensor:
    """n inputs (all if fewer) drawn without replacement from `split`: (n, C, H, W) uint8."""
    import torch

    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return split.x[idx.to(split.x.device)]
