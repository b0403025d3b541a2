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

This package's top level imports no torch, so a suite validates without it: here are the registry,
what a backbone may know of its data and the check of head settings; the modules (Backbone,
MultiHeadNet, CrossStitchNet, ...) are in `bench.models.nets`, imported on first use of their
names from here (`from bench.models import MultiHeadNet` works as before). Backbone modules import
torch inside the functions that build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.registry import Registry

if TYPE_CHECKING:
    import torch

BACKBONES = Registry("backbone")


@dataclass(frozen=True)
class BackboneContext:
    """What a backbone may know of its data: shape, and a normalised train sample for statistics."""

    in_channels: int
    image_size: int
    sample: torch.Tensor | None = None  # (N, C, H, W) float, normalised train images


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


NETS = ("Backbone", "CrossStitchNet", "CrossStitchUnit", "Features", "MultiHeadNet", "apply_heads", "count_params",
        "make_heads")  # defined in bench.models.nets


def __getattr__(name: str) -> Any:
    """The torch modules of bench.models.nets, imported when first asked for (PEP 562)."""
    if name in NETS:
        from bench.models import nets

        return getattr(nets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Importing the backbone modules registers them.
from bench.models import alexnet, convnet, dual_stream, onehead  # noqa: E402,F401
