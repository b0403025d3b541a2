"""Heads on a backbone's features (torch; imported only when a model is built).

A head's `reads` says what it takes: "vector" (the backbone trunk's (B, D) output, computed once
and shared by every head that reads it) or "map" (the backbone's (B, C, h, w) feature map).
"""

from __future__ import annotations

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
