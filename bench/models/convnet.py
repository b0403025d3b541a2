"""`convnet`: a plain CNN built from the suite (seed 004's config-built network).

Stages (one per conv block), for widths [w1, .., wn], then the trunk:
  block i: (Conv(w_i, 3x3) [BatchNorm] ReLU) x convs, then max / avg / no 2x2 pooling -> (B, w_i, H_i, W_i)
  trunk:   [global max / avg pooling] flatten, Dropout, Linear(hidden) ReLU  -> (B, hidden)
           (hidden: 0 leaves the flattened features as they are)
Cross-stitch units can go after any conv block (1..n); classification heads read the trunk's
features, dense heads the last block's map.

    backbone: {name: convnet, widths: [32, 64, 128], pool: max, global_pool: avg, hidden: 256}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from bench.models import BACKBONES, BackboneContext
from bench.registry import Range

if TYPE_CHECKING:
    from torch import nn

    from bench.models.nets import Backbone

POOLS = ("max", "avg", "none")


@BACKBONES.register("convnet")
def convnet(ctx: BackboneContext, *, widths: Annotated[list[int] | tuple[int, ...], Range(">= 1")] = (32, 64, 128),
            blocks: Annotated[int | None, Range(">= 1")] = None, convs: Annotated[int, Range(">= 1")] = 1,
            batch_norm: bool = True, pool: str | list[str] = "max", global_pool: str = "none",
            dropout: Annotated[float, Range("[0, 1)")] = 0.0, hidden: Annotated[int, Range(">= 0")] = 256) -> Backbone:
    """`blocks` (default: len(widths)) repeats a single width; `pool` is one value or one per block."""
    from torch import nn

    from bench.models.nets import Backbone

    widths = _per_block(list(widths), blocks, "widths")
    pools = _per_block([pool] if isinstance(pool, str) else list(pool), len(widths), "pool")
    for where, value in [("pool", p) for p in pools] + [("global_pool", global_pool)]:
        if value not in POOLS:
            raise ValueError(f"backbone.{where}: {value!r} unknown; valid: {', '.join(POOLS)}")
    stages, cin, size, stride = [], ctx.in_channels, ctx.image_size, 1
    for width, p in zip(widths, pools):
        layers = []
        for i in range(convs):
            layers += [nn.Conv2d(cin if i == 0 else width, width, 3, padding=1, bias=not batch_norm)]
            layers += [nn.BatchNorm2d(width)] if batch_norm else []
            layers += [nn.ReLU(inplace=True)]
        if p != "none":
            layers.append(nn.MaxPool2d(2) if p == "max" else nn.AvgPool2d(2))
            size //= 2
            stride *= 2
        stages.append(nn.Sequential(*layers))
        cin = width
    if size < 1:
        raise ValueError(f"backbone.pool: {len([p for p in pools if p != 'none'])} poolings shrink a "
                         f"{ctx.image_size}px image to nothing; use fewer blocks or pool: none on some")
    trunk = _trunk(cin, size, global_pool, dropout, hidden)
    vector_dim = hidden or cin * (1 if global_pool != "none" else size * size)
    return Backbone(stages, image_size=ctx.image_size, channels=cin, stride=stride, trunk=trunk,
                    vector_dim=vector_dim)


def _trunk(channels: int, size: int, global_pool: str, dropout: float, hidden: int) -> nn.Sequential:
    from torch import nn

    layers: list[nn.Module] = []
    if global_pool != "none":
        layers.append(nn.AdaptiveMaxPool2d(1) if global_pool == "max" else nn.AdaptiveAvgPool2d(1))
        size = 1
    layers.append(nn.Flatten())
    if dropout:
        layers.append(nn.Dropout(dropout))
    if hidden:
        layers += [nn.Linear(channels * size * size, hidden), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _per_block(values: list, blocks: int | None, key: str) -> list:
    """One value per block: a single value is repeated; otherwise the counts must agree."""
    if not values:
        raise ValueError(f"backbone.{key}: empty; give one value, or one per block")
    n = blocks if blocks is not None else len(values)
    if n < 1:
        raise ValueError(f"backbone.blocks: {n}; need at least one conv block")
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"backbone.{key}: {len(values)} values for {n} blocks; give one, or one per block")
    return values
