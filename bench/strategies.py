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
from typing import Callable

import numpy as np
import torch
from torch import nn

from bench.data import Split, TaskSet
from bench.kinds import TaskSpec
from bench.models import Backbone, CrossStitchNet, MultiHeadNet, check_heads
from bench.registry import Registry
from bench.trainer import FitResult, Trainer

STRATEGIES = Registry("strategy")
MakeBackbone = Callable[[], Backbone]


@dataclass(frozen=True)
class Members:
    """The cells a combining strategy is computed from: strategy entry `of`'s cells for `seeds`."""

    of: str  # a strategy id of the same suite
    seeds: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """Joint training of one model on all of the cell's tasks (the default hooks)."""

    multi_task = True  # False for single-task baselines; the report pairs the others against them

    def cell_tasks(self, tasks: tuple[str, ...]) -> list[tuple[str, ...]]:
        return [tasks]

    def build(self, specs: dict[str, TaskSpec], make_backbone: MakeBackbone) -> nn.Module:
        raise NotImplementedError

    def fit(self, model: nn.Module, data: TaskSet, specs: dict[str, TaskSpec], trainer: Trainer) -> FitResult:
        return trainer.fit(model, data, specs)

    def members(self) -> Members | None:
        """The cells this one is computed from, without training; None for a strategy that trains."""
        return None

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
        return MultiHeadNet(make_backbone(), specs, self.heads)


@STRATEGIES.register("stl")
@dataclass(frozen=True, kw_only=True)
class SingleTask(HardShare):
    """Single-task learning: one independent model per task, each its own cell."""

    multi_task = False

    def cell_tasks(self, tasks):
        return [(t,) for t in super().cell_tasks(tasks)[0]]


@STRATEGIES.register("cross_stitch")
@dataclass(frozen=True, kw_only=True)
class CrossStitch(WithHeads):
    """One backbone column per task, mixed by learned cross-stitch units after the given stages."""

    # 1-based backbone stages; None: after stages 1 and 2 where they are not the trunk (last) stage,
    # so [1, 2] on alexnet_cifar (as seed 001) and [1] on the two-stage dual_stream / spatial_only.
    stitch_after: list[int] | None = None
    self_weight: float = 0.9  # initial diagonal; the rest (1 - self_weight) is spread over the others

    def build(self, specs, make_backbone):
        stitch_after = None if self.stitch_after is None else list(self.stitch_after)
        return CrossStitchNet(make_backbone, specs, stitch_after=stitch_after,
                              self_weight=self.self_weight, heads=self.heads)


@STRATEGIES.register("ensemble")
@dataclass(frozen=True, kw_only=True)
class Ensemble(Strategy):
    """Average of another entry's cells over seeds (probabilities or regression outputs); trains nothing.

    STL members are per task, so each task averages the member cells that predict it.
    """

    of: str = ""  # the strategy id whose cells are averaged; required
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # need not be among the suite's seeds

    def members(self) -> Members:
        return Members(self.of, tuple(self.seeds))

    def combine(self, spec, preds):
        return spec.combine(preds)  # the kind's average: probabilities, or regression outputs


@STRATEGIES.register("sequential_lwf")
@dataclass(frozen=True, kw_only=True)
class SequentialLwF(HardShare):
    """Tasks learned one stage at a time on one multi-head model: Learning without Forgetting (Li & Hoiem 2016).

    Stage k trains task k's loss only; the model as it was after stage k-1, frozen, is the teacher
    that every earlier head is distilled towards (`Distiller`). After every stage each task is
    scored on the test set; the matrix R[stage][task] of primary metrics goes to FitResult.extra.
    """

    order: list[str] = field(default_factory=list)  # stage order; empty: the cell's task order
    temperature: float | dict[str, float] = 2.0  # for all tasks, or task -> T (missing: 2.0); LwF's T
    distill_weight: float | dict[str, float] = 1.0  # for all tasks, or task -> weight (missing: 1.0)
    replay: int = 0  # train inputs stored per earlier task to distil on; 0: distil on the stage's batches
    # lr factors per parameter group within a stage; all 1.0 as in LwF, which tunes everything jointly
    lr_backbone: float = 1.0
    lr_shared: float = 1.0
    lr_current_head: float = 1.0
    lr_old_heads: float = 1.0
    disjoint: bool = False  # stages train on disjoint slices of the train split, not the same images
    stage_epochs: int | None = None  # epochs per stage; None: the cell's train.epochs
    forgetting_threshold: float = 5.0  # % drop of a task's primary metric that still passes (report)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, strict in (("temperature", True), ("distill_weight", False)):
            value = getattr(self, name)
            for v in value.values() if isinstance(value, dict) else [value]:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (strict and v == 0):
                    raise ValueError(f"{name}: expected a number {'>' if strict else '>='} 0, got {v!r}")
        ok = {"replay": self.replay >= 0, "stage_epochs": self.stage_epochs is None or self.stage_epochs >= 1,
              "lr_backbone": self.lr_backbone >= 0, "lr_shared": self.lr_shared >= 0,
              "lr_old_heads": self.lr_old_heads >= 0, "lr_current_head": self.lr_current_head > 0}
        bad = next((n for n, good in ok.items() if not good), None)
        if bad:
            raise ValueError(f"{bad}: {getattr(self, bad)!r} out of range (replay and lr factors >= 0, "
                             "lr_current_head > 0, stage_epochs >= 1)")

    def cell_tasks(self, tasks):
        super().cell_tasks(tasks)
        order = tuple(self.order) or tuple(tasks)
        if sorted(order) != sorted(tasks):
            raise ValueError(f"order: {list(order)} must name each of the tasks {list(tasks)} once")
        for name in ("temperature", "distill_weight"):
            value = getattr(self, name)
            unknown = set(value) - set(tasks) if isinstance(value, dict) else set()
            if unknown:
                raise ValueError(f"{name}: {sorted(unknown)} not among the tasks {list(tasks)}")
        return [order]

    def fit(self, model, data, specs, trainer):
        order = list(self.order) or list(specs)
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
            stages.append(trainer.fit(model, data, {task: specs[task]}, train=trains[k], epochs=self.stage_epochs,
                                      extra_loss=distiller, lr_factors=self.lr_factors(order, k),
                                      stage=f"{k + 1}:{task}", monitor={t: specs[t] for t in order[:k]}))
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

    def distiller(self, model: nn.Module, earlier: list[str], specs: dict[str, TaskSpec], buffers: dict,
                  trainer: Trainer, data: TaskSet) -> "Distiller | None":
        """The stage's extra loss, or None (no teacher at all) when no earlier task is distilled."""
        weights = {t: self.per_task("distill_weight", t) for t in earlier}
        weights = {t: w for t, w in weights.items() if w > 0}
        if not weights:
            return None
        replay = torch.cat([buffers[t] for t in earlier]) if self.replay else None
        return Distiller(model, {t: specs[t] for t in weights}, weights,
                         {t: self.per_task("temperature", t) for t in weights},
                         replay=replay, norm=trainer.normaliser(data), batch_size=trainer.cfg.batch_size,
                         seed=trainer.seed)

    def lr_factors(self, order: list[str], k: int) -> dict[str, float]:
        """lr factor per `param_groups()` name for stage k (0 leaves a group out of the optimizer)."""
        factors = {"backbone": self.lr_backbone, "shared": self.lr_shared}
        factors.update({f"head/{t}": self.lr_old_heads for t in order[:k]})
        factors.update({f"head/{t}": 0.0 for t in order[k + 1:]})  # not learned yet: left as initialised
        factors[f"head/{order[k]}"] = self.lr_current_head
        return factors


@STRATEGIES.register("sequential_finetune")
@dataclass(frozen=True, kw_only=True)
class SequentialFinetune(SequentialLwF):
    """Sequential fine-tuning: LwF's stages with no distillation, the baseline that shows forgetting."""

    distill_weight: float | dict[str, float] = field(default=0.0, init=False)
    temperature: float | dict[str, float] = field(default=2.0, init=False)  # unused without distillation
    replay: int = field(default=0, init=False)  # stored inputs would only feed distillation


class Distiller:
    """One stage's extra loss: sum over earlier tasks of weight * distill(student head, teacher head).

    The teacher is a frozen copy (eval mode, no gradients) of the model as it is when the stage
    starts. Without replay it sees the stage's own (augmented) batch; with replay it sees a batch
    drawn from the stored inputs of all earlier tasks, which the student then also runs on.
    """

    def __init__(self, model: nn.Module, specs: dict[str, TaskSpec], weights: dict[str, float],
                 temperatures: dict[str, float], *, replay: torch.Tensor | None,
                 norm: Callable[[torch.Tensor], torch.Tensor], batch_size: int, seed: int):
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.specs, self.weights, self.temperatures = specs, weights, temperatures
        self.replay, self.norm = replay, norm  # replay: (N, C, H, W) uint8 or None
        self.batch_size = batch_size if replay is None else min(batch_size, len(replay))
        device = next(model.parameters()).device
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, model: nn.Module, x: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.replay is not None:
            idx = torch.randint(len(self.replay), (self.batch_size,), device=self.replay.device, generator=self.gen)
            x = self.norm(self.replay[idx])
            out = model(x)
        with torch.no_grad():
            target = self.teacher(x)
        return torch.stack([w * self.specs[t].distill(out[t], target[t], self.temperatures[t])
                            for t, w in self.weights.items()]).sum()


def disjoint_indices(n: int, k: int) -> list[torch.Tensor]:
    """k disjoint sorted index sets covering range(n), sizes within one; the same for every seed."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return [idx.sort().values for idx in perm.tensor_split(k)]


def replay_buffer(split: Split, n: int, seed: int) -> torch.Tensor:
    """n inputs (all if fewer) drawn without replacement from `split`: (n, C, H, W) uint8."""
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return split.x[idx.to(split.x.device)]
