"""Backbones (a registry) and the multi-task models built from them.

A backbone is a list of stages producing a feature map (B, channels, H / stride, W / stride),
optionally followed by a trunk that turns the map into a vector (B, vector_dim): for AlexNet its
flatten + classifier MLP, for the dual-stream net its fusion layer. The trunk is shared by every
head that reads a vector (classification, regression); dense heads read the map. Models expose
one seam, `forward(x) -> {task: output}`, plus `param_groups()` naming which parameters are
shared and which belong to each task ("backbone", "shared" or finer "shared/<part>", "head/<task>"),
so strategies never reach into a model's internals, and
`forward_features(x) -> (outputs, features)` giving also the representation the heads read, for
methods that work on it (MGDA-UB, feature distillation). Heads come from the task kinds
(`TaskSpec.head`, bench/kinds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from bench.kinds import FeatureInfo, TaskSpec
from bench.registry import Registry

BACKBONES = Registry("backbone")


@dataclass(frozen=True)
class BackboneContext:
    """What a backbone may know of its data: shape, and a normalised train sample for statistics."""

    in_channels: int
    image_size: int
    sample: torch.Tensor | None = None  # (N, C, H, W) float, normalised train images


class Backbone(nn.Module):
    """Feature stages (each a module on the previous one's output) and an optional trunk.

    `channels` and `stride` describe the last stage's map for an `image_size` input; `vector_dim`
    the trunk's output width.
    """

    def __init__(self, stages: list[nn.Module], *, image_size: int, channels: int, stride: int,
                 trunk: nn.Module | None = None, vector_dim: int | None = None):
        super().__init__()
        if (trunk is None) != (vector_dim is None):
            raise ValueError("a backbone's trunk and its vector_dim come together")
        self.stages = nn.ModuleList(stages)
        self.trunk = trunk
        self.image_size, self.channels, self.stride, self.vector_dim = image_size, channels, stride, vector_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x  # (B, channels, H / stride, W / stride)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output, first to last (for necks that fuse strides, or per-stage attention)."""
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def features(self) -> FeatureInfo:
        return FeatureInfo(channels=self.channels, stride=self.stride, vector_dim=self.vector_dim,
                           image_size=self.image_size)

    def shapes(self) -> list[tuple[int, int, int]]:
        """(channels, h, w) of the input, then of every stage's output, for one `image_size` image.

        From a dry run in eval mode without gradients (no batch statistics, no random numbers), for
        modules that size themselves per stage (MTAN's attention) or on the input (MMoE's gates).
        The input's channels are read from the first convolution; ValueError when there is none.
        """
        first = next((m for m in self.stages.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise ValueError("this backbone's stages have no Conv2d to read the input channels from")
        param = next(self.parameters())
        x = torch.zeros(1, first.in_channels, self.image_size, self.image_size, device=param.device, dtype=param.dtype)
        training = self.training
        self.eval()
        with torch.no_grad():
            outs = self.forward_stages(x)
        self.train(training)
        return [tuple(x.shape[1:]), *(tuple(o.shape[1:]) for o in outs)]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups of the backbone's parameters: "backbone" (the stages) and "shared" (the trunk).
        A family may split them finer as "<group>/<part>" (onehead: "shared/neck", "shared/late", ...);
        learning-rate factors given for "shared" then apply to every "shared/<part>" (bench.trainer)."""
        return {"backbone": list(self.stages.parameters()),
                "shared": list(self.trunk.parameters()) if self.trunk is not None else []}

    def units(self) -> list[nn.Module]:
        """Stages then the trunk: the positions a cross-stitch unit can follow (1-based)."""
        return [*self.stages, *([self.trunk] if self.trunk is not None else [])]


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


def make_heads(features: FeatureInfo, specs: dict[str, TaskSpec], heads: dict[str, dict]) -> nn.ModuleDict:
    """One head per task, built by its kind on `features`, with the suite's per-task head settings."""
    check_heads(heads)
    return nn.ModuleDict({t: s.head(features, **heads.get(t, {})) for t, s in specs.items()})


Features = dict[str, torch.Tensor]  # name -> a shared representation the heads read (see forward_features)


def apply_heads(heads: nn.ModuleDict, trunk: nn.Module | None, fmap: torch.Tensor) -> tuple[dict[str, torch.Tensor], Features]:
    """Each head on what it reads: the feature map, or the trunk's vector (computed once).

    Returns the outputs and the features the heads read: "map" (B, C, h, w) and / or "vector" (B, D)."""
    vector = trunk(fmap) if trunk is not None and any(h.reads == "vector" for h in heads.values()) else None
    out = {t: h(vector if h.reads == "vector" else fmap) for t, h in heads.items()}
    features = {"vector": vector} if vector is not None else {}
    if any(h.reads == "map" for h in heads.values()):
        features["map"] = fmap
    return out, features


class MultiHeadNet(nn.Module):
    """One backbone shared by every task, one head per task (hard parameter sharing; STL with one task)."""

    def __init__(self, backbone: Backbone, specs: dict[str, TaskSpec], heads: dict[str, dict] | None = None):
        super().__init__()
        self.backbone = backbone
        self.heads = make_heads(backbone.features(), specs, heads or {})
        if not any(h.reads == "vector" for h in self.heads.values()):
            backbone.trunk = None  # every head reads the map (dense tasks): a trunk would never train

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Features]:
        """The outputs, and the shared representation the heads read (for methods that work on it:
        MGDA-UB's gradients, feature distillation)."""
        return apply_heads(self.heads, self.backbone.trunk, self.backbone(x))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = self.backbone.param_groups()
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
    """One backbone column per task, cross-stitch units after the chosen units (1-based).

    A column's units are its stages then its trunk. `stitch_after=None` stitches after the first
    two units that are not the last: [1, 2] for a backbone of four units, [1] for one of two. An
    explicit unit outside 1..n_units-1 is a ValueError.
    """

    def __init__(self, make_backbone: Callable[[], Backbone], specs: dict[str, TaskSpec], *,
                 stitch_after: list[int] | None = None, self_weight: float = 0.9, heads: dict[str, dict] | None = None):
        super().__init__()
        self.tasks = list(specs)
        self.columns = nn.ModuleList(make_backbone() for _ in self.tasks)
        n_units = len(self.columns[0].units())
        if stitch_after is None:
            stitch_after = [s for s in (1, 2) if s < n_units]
        for s in stitch_after:
            if not 1 <= s < n_units:
                raise ValueError(f"stitch_after: stage {s} out of range 1..{n_units - 1}")
        self.stitch_after = sorted(stitch_after)
        self.stitches = nn.ModuleDict({str(s): CrossStitchUnit(len(self.tasks), self_weight) for s in self.stitch_after})
        features = self.columns[0].features()
        self.heads = nn.ModuleDict({t: make_heads(features, {t: specs[t]}, heads or {})[t] for t in self.tasks})
        for column, t in zip(self.columns, self.tasks):
            if self.heads[t].reads == "map":
                column.trunk = None  # this task's head reads the map: its column's trunk would never train

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Features]:
        """The outputs, and what each task's head reads from its own column ("<task>/map" or
        "<task>/vector"): after the last stitch, no representation is shared by all tasks."""
        hs = [x] * len(self.tasks)
        for i in range(len(self.columns[0].stages)):  # stitches follow stages only, never the trunk (the last unit)
            hs = [c.stages[i](h) for c, h in zip(self.columns, hs)]
            if str(i + 1) in self.stitches:
                hs = self.stitches[str(i + 1)](hs)
        out, features = {}, {}
        for t, column, m in zip(self.tasks, self.columns, hs):
            head = self.heads[t]
            features[f"{t}/{head.reads}"] = column.trunk(m) if head.reads == "vector" else m
            out[t] = head(features[f"{t}/{head.reads}"])
        return out, features

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {
            "backbone": [p for c in self.columns for p in c.stages.parameters()] + list(self.stitches.parameters()),
            "shared": [p for c in self.columns if c.trunk is not None for p in c.trunk.parameters()],
        }
        groups.update({f"head/{t}": list(h.parameters()) for t, h in self.heads.items()})
        return groups


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# Importing the backbone modules registers them.
from bench.models import alexnet, convnet, dual_stream, onehead  # noqa: E402,F401
