"""Strategies: how a cell turns a dataset's tasks into a model and trains it.

A strategy is a small frozen dataclass whose fields are its suite parameters, with up to three
hooks: `cell_tasks` (how the grid splits the tasks into cells), `build` (the model, from a backbone
factory) and `fit` (the training, through the Trainer; joint training by default). Strategies see
only the model seam `forward(x) -> {task: output}` and `param_groups()`.

A combining strategy (`ensemble`) trains nothing: `members` names the cells it is computed from
(another entry's cells for some seeds; the grid orders them first) and `combine` merges their
stored test predictions, one task at a time (see bench/combine.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from torch import nn

from bench.data import TaskSet
from bench.models import Backbone, CrossStitchNet, MultiHeadNet
from bench.registry import Registry
from bench.tasks import TaskSpec
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

    def combine(self, preds: list[np.ndarray]) -> np.ndarray:
        """One task's stored member predictions, each (N, C) probabilities or (N, dim) values -> the cell's."""
        raise NotImplementedError


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

    # 1-based backbone stages; None: after stages 1 and 2 where they are not the trunk (last) stage,
    # so [1, 2] on alexnet_cifar (as seed 001) and [1] on the two-stage dual_stream / spatial_only.
    stitch_after: list[int] | None = None
    self_weight: float = 0.9  # initial diagonal; the rest (1 - self_weight) is spread over the others
    heads: dict[str, dict] = field(default_factory=dict)

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

    def combine(self, preds):
        # float64 sum: the stored predictions are float16
        return np.mean([p.astype(np.float64) for p in preds], axis=0).astype(np.float32)
