"""Strategies: how a cell turns a dataset's tasks into a model and trains it.

A strategy is a small frozen dataclass whose fields are its suite parameters, with up to three
hooks: `cell_tasks` (how the grid splits the tasks into cells), `build` (the model, from a backbone
factory) and `fit` (the training, through the Trainer; joint training by default). Strategies see
only the model seam `forward(x) -> {task: output}` and `param_groups()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from bench.data import TaskSet
from bench.models import Backbone, CrossStitchNet, MultiHeadNet
from bench.registry import Registry
from bench.tasks import TaskSpec
from bench.trainer import FitResult, Trainer

STRATEGIES = Registry("strategy")
MakeBackbone = Callable[[], Backbone]


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


@STRATEGIES.register("hard_share")
@dataclass(frozen=True, kw_only=True)
class HardShare(Strategy):
    """One shared backbone and trunk, one head per task."""

    heads: dict[str, dict] = field(default_factory=dict)  # task -> {hidden: [..], dropout, sigmoid}

    def build(self, specs, make_backbone):
        return MultiHeadNet(make_backbone(), specs, self.heads)


@STRATEGIES.register("stl")
@dataclass(frozen=True, kw_only=True)
class SingleTask(HardShare):
    """Single-task learning: one independent model per task, each its own cell."""

    multi_task = False

    def cell_tasks(self, tasks):
        return [(t,) for t in tasks]


@STRATEGIES.register("cross_stitch")
@dataclass(frozen=True, kw_only=True)
class CrossStitch(Strategy):
    """One backbone column per task, mixed by learned cross-stitch units after the given stages."""

    stitch_after: list[int] = field(default_factory=lambda: [1, 2])  # 1-based backbone stages
    self_weight: float = 0.9  # initial diagonal; the rest (1 - self_weight) is spread over the others
    heads: dict[str, dict] = field(default_factory=dict)

    def build(self, specs, make_backbone):
        return CrossStitchNet(make_backbone, specs, stitch_after=list(self.stitch_after),
                              self_weight=self.self_weight, heads=self.heads)
