"""Heads on a backbone's features (torch; imported only when a model is built).

A head's `reads` says what it takes: "vector" (the backbone trunk's (B, D) output, computed once
and shared by every head that reads it) or "map" (the backbone's (B, C, h, w) feature map).
Classification and regression heads are MLPs (`mlp_head`); the dense kinds read the map
(`pixel_head` for segmentation, `centre_head` for detection).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.kinds import FeatureInfo


class Head(nn.Sequential):
    """nn.Sequential that records which features it reads."""

    def __init__(self, *layers: nn.Module, reads: str):
        super().__init__(*layers)
        self.reads = reads


def mlp_head(features: FeatureInfo, out_dim: int, *, hidden: list[int] | tuple[int, ...] = (),
             dropout: float = 0.0, sigmoid: bool = False) -> Head:
    """Optional hidden ReLU layers (dropout before the output), then Linear(out_dim) [Sigmoid].

    On the trunk's vector when the backbone has a trunk; otherwise global average pooling of the
    feature map first. `sigmoid` bounds a regression output to [0, 1] (seed 000's head C).
    """
    layers: list[nn.Module] = []
    if features.vector_dim is None:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        in_dim, reads = features.channels, "map"
    else:
        in_dim, reads = features.vector_dim, "vector"
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True)]
        in_dim = width
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(in_dim, out_dim))
    if sigmoid:
        layers.append(nn.Sigmoid())
    return Head(*layers, reads=reads)


def pixel_head(features: FeatureInfo, classes: int, *, task: str, **cfg) -> Head:
    """Segmentation (seed 003): a 1x1 conv to `classes` logits on the feature map, upsampled
    bilinearly to the input: (B, C, h, w) -> (B, classes, image_size, image_size). No settings."""
    _refuse_settings(task, "segmentation", cfg)
    size = (features.image_size, features.image_size)
    return Head(nn.Conv2d(features.channels, classes, 1),
                nn.Upsample(size=size, mode="bilinear", align_corners=False), reads="map")


def centre_head(features: FeatureInfo, out_channels: int, heatmaps: int, heatmap_bias: float, *, task: str,
                hidden: list[int] | tuple[int, ...] = (), **cfg) -> Head:
    """Detection (seed 003): Conv1x1(C -> hidden) BN ReLU Conv1x1(hidden -> out_channels) on the feature
    map, (B, C, h, w) -> (B, out_channels, h, w). `hidden` is one width (default C / 2, as seed 003's
    256 -> 128); the first `heatmaps` output channels start with bias `heatmap_bias`."""
    _refuse_settings(task, "detection", cfg)
    if len(hidden) > 1:
        raise ValueError(f"heads.{task}.hidden: a detection head has one hidden layer; give one width, got {list(hidden)}")
    width = hidden[0] if hidden else max(1, features.channels // 2)
    out = nn.Conv2d(width, out_channels, 1)
    with torch.no_grad():
        out.bias[:heatmaps] = heatmap_bias
    return Head(nn.Conv2d(features.channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                out, reads="map")


def _refuse_settings(task: str, kind: str, cfg: dict) -> None:
    if cfg:
        raise ValueError(f"heads.{task}: a {kind} head does not take {', '.join(sorted(cfg))}")
