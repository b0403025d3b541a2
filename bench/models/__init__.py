"""Backbones (a registry) and the multi-task models built from them.

A backbone is a list of stages ending in flat features (B, feature_dim); the last stage is the
"shared" trunk (for AlexNet its classifier MLP), the others the feature extractor. Models expose one
seam, `forward(x) -> {task: (B, out_dim)}`, plus `param_groups()` naming which parameters are
shared and which belong to each task, so strategies never reach into a model's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from bench.registry import Registry
from bench.tasks import TaskSpec

BACKBONES = Registry("backbone")


@dataclass(frozen=True)
class BackboneContext:
    """What a backbone may know of its data: shape, and a normalised train sample for statistics."""

    in_channels: int
    image_size: int
    sample: torch.Tensor | None = None  # (N, C, H, W) float, normalised train images


class Backbone(nn.Module):
    def __init__(self, stages: list[nn.Module], feature_dim: int):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x  # (B, feature_dim)


def make_head(in_dim: int, spec: TaskSpec, *, hidden: list[int] | tuple[int, ...] = (),
              dropout: float = 0.0, sigmoid: bool = False) -> nn.Sequential:
    """Task head: optional hidden ReLU layers (with dropout before the output), then the output layer.

    `sigmoid` bounds a regression output to [0, 1] (seed 000's head C).
    """
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True)]
        in_dim = width
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(in_dim, spec.out_dim))
    if sigmoid:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


HEAD_KEYS = ("hidden", "dropout", "sigmoid")


def check_heads(heads: dict[str, dict], tasks: tuple[str, ...] | None = None) -> None:
    """ValueError for a malformed `heads` parameter: unknown tasks (when given) or keys, bad values."""
    for task, cfg in heads.items():
        if tasks is not None and task not in tasks:
            raise ValueError(f"heads.{task}: not a task of this cell; valid: {', '.join(tasks)}")
        if not isinstance(cfg, dict) or set(cfg) - set(HEAD_KEYS):
            raise ValueError(f"heads.{task}: expected a mapping with keys from {', '.join(HEAD_KEYS)}, got {cfg!r}")
        hidden, dropout = cfg.get("hidden", []), cfg.get("dropout", 0.0)
        if not isinstance(hidden, list) or not all(isinstance(w, int) and w > 0 for w in hidden):
            raise ValueError(f"heads.{task}.hidden: expected a list of positive widths, got {hidden!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"heads.{task}.dropout: expected a number in [0, 1), got {dropout!r}")
        if not isinstance(cfg.get("sigmoid", False), bool):
            raise ValueError(f"heads.{task}.sigmoid: expected true or false, got {cfg['sigmoid']!r}")


def make_heads(in_dim: int, specs: dict[str, TaskSpec], heads: dict[str, dict]) -> nn.ModuleDict:
    check_heads(heads)
    return nn.ModuleDict({t: make_head(in_dim, s, **heads.get(t, {})) for t, s in specs.items()})


class MultiHeadNet(nn.Module):
    """One backbone shared by every task, one head per task (hard parameter sharing; STL with one task)."""

    def __init__(self, backbone: Backbone, specs: dict[str, TaskSpec], heads: dict[str, dict] | None = None):
        super().__init__()
        self.backbone = backbone
        self.heads = make_heads(backbone.feature_dim, specs, heads or {})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.backbone(x)
        return {t: head(z) for t, head in self.heads.items()}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        stages = self.backbone.stages
        groups = {
            "backbone": [p for s in stages[:-1] for p in s.parameters()],
            "shared": list(stages[-1].parameters()),
        }
        groups.update({f"head/{t}": list(h.parameters()) for t, h in self.heads.items()})
        return groups


class CrossStitchUnit(nn.Module):
    """Learned T x T mixing of the task columns' feature maps (Misra et al. 2016), one scalar per pair."""

    def __init__(self, tasks: int, self_weight: float = 0.9):
        super().__init__()
        other = (1 - self_weight) / (tasks - 1) if tasks > 1 else 0.0
        alpha = torch.full((tasks, tasks), other)
        alpha.fill_diagonal_(self_weight)
        self.alpha = nn.Parameter(alpha)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        stacked = torch.stack(xs)  # (T, B, ...)
        mixed = torch.tensordot(self.alpha.to(stacked.dtype), stacked, dims=1)
        return list(mixed.unbind(0))


class CrossStitchNet(nn.Module):
    """One backbone column per task, cross-stitch units after the chosen stages (1-based).

    `stitch_after=None` stitches after the first two stages that are not the last (trunk) stage:
    [1, 2] for a backbone of four stages, [1] for one of two. An explicit stage outside
    1..n_stages-1 is a ValueError.
    """

    def __init__(self, make_backbone: Callable[[], Backbone], specs: dict[str, TaskSpec], *,
                 stitch_after: list[int] | None = None, self_weight: float = 0.9, heads: dict[str, dict] | None = None):
        super().__init__()
        self.tasks = list(specs)
        self.columns = nn.ModuleList(make_backbone() for _ in self.tasks)
        n_stages = len(self.columns[0].stages)
        if stitch_after is None:
            stitch_after = [s for s in (1, 2) if s < n_stages]
        for s in stitch_after:
            if not 1 <= s < n_stages:
                raise ValueError(f"stitch_after: stage {s} out of range 1..{n_stages - 1}")
        self.stitch_after = sorted(stitch_after)
        self.stitches = nn.ModuleDict({str(s): CrossStitchUnit(len(self.tasks), self_weight) for s in self.stitch_after})
        dim = self.columns[0].feature_dim
        self.heads = nn.ModuleDict({t: make_heads(dim, {t: specs[t]}, heads or {})[t] for t in self.tasks})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        hs = [x] * len(self.tasks)
        for i in range(len(self.columns[0].stages)):
            hs = [col.stages[i](h) for col, h in zip(self.columns, hs)]
            if str(i + 1) in self.stitches:
                hs = self.stitches[str(i + 1)](hs)
        return {t: self.heads[t](h) for t, h in zip(self.tasks, hs)}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {
            "backbone": [p for c in self.columns for s in c.stages[:-1] for p in s.parameters()]
            + list(self.stitches.parameters()),
            "shared": [p for c in self.columns for p in c.stages[-1].parameters()],
        }
        groups.update({f"head/{t}": list(h.parameters()) for t, h in self.heads.items()})
        return groups


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# Importing the backbone modules registers them.
from bench.models import alexnet, convnet, dual_stream  # noqa: E402,F401
