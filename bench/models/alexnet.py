"""`alexnet_cifar`: the AlexNet-like network of seed 001, adapted to 32x32 inputs.

Stages (shapes for a 32x32 input):
  1. Conv(64, 3x3) ReLU MaxPool          -> (B, 64, 16, 16)
  2. Conv(192) ReLU MaxPool              -> (B, 192, 8, 8)
  3. Conv(384) ReLU Conv(256) ReLU Conv(256) ReLU MaxPool -> (B, 256, 4, 4), stride 8
  trunk: flatten Dropout Linear(4096, 1024) ReLU Dropout Linear(1024, 1024) ReLU -> (B, 1024)
Cross-stitch units go after stages 1 and 2; classification heads read the 1024 trunk features,
dense heads the stride-8 map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from bench.models import BACKBONES, BackboneContext
from bench.registry import Range

if TYPE_CHECKING:
    from torch import nn

    from bench.models.nets import Backbone


def _conv(cin: int, cout: int) -> list[nn.Module]:
    from torch import nn

    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]


@BACKBONES.register("alexnet_cifar")
def alexnet_cifar(ctx: BackboneContext, *, dropout: Annotated[float, Range("[0, 1)")] = 0.5,
                  width: Annotated[int, Range(">= 1")] = 1024) -> Backbone:
    from torch import nn

    from bench.models.nets import Backbone

    flat = 256 * (ctx.image_size // 8) ** 2  # three 2x2 pools
    stages = [
        nn.Sequential(*_conv(ctx.in_channels, 64), nn.MaxPool2d(2)),
        nn.Sequential(*_conv(64, 192), nn.MaxPool2d(2)),
        nn.Sequential(*_conv(192, 384), *_conv(384, 256), *_conv(256, 256), nn.MaxPool2d(2)),
    ]
    trunk = nn.Sequential(
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, width), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(width, width), nn.ReLU(inplace=True),
    )
    return Backbone(stages, image_size=ctx.image_size, channels=256, stride=8, trunk=trunk, vector_dim=width)
