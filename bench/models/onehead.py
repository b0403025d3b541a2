"""`onehead`: seed 003's one-head model (backbone, neck, shared head), sized for small canvases.

    backbone: {name: onehead, widths: [16, 32, 64], channels: 64}

Seed 003 used an ImageNet-pretrained EfficientNet-B0 on 512 px images; nothing pretrained can be
fetched here and the canvases are 64 px, so the backbone is a small ResNet built from scratch out of
torchvision's `BasicBlock`, and the two fused strides are 4 and 8 rather than 16 and 32 (the fused
map of a 64 px canvas is then 16 x 16, as seed 003's 14 x 14 at 224 px). For widths [w1, .., wL]:

    stem         conv3x3 stride 2 (w1) BN ReLU                                      stride 2
    stages       `blocks` BasicBlocks per width w2 .. w(L-1), the first of each stride 2    ... 2^(L-1): the fine map
    neck         deeper: BasicBlocks of width wL, stride 2 (the coarse map, 2^L); upsample it
                 bilinearly to the fine map, concatenate (w(L-1) + wL), conv1x1 -> neck_channels,
                 conv3x3 -> channels, each BN ReLU (seed 003's neck)                     2^(L-1)
    shared head  three conv3x3 (channels) BN ReLU: early, mid, late                      2^(L-1)

Every task's head reads the shared head's last map (`forward_features` gives it as "map"): the kinds
put a 1x1 conv upsampled to the input (segmentation), two 1x1 convs (detection) or global average
pooling + linear (classification) on it. The stages form one chain, so `forward_stages`, cross-stitch
units and per-stage attention work on it like on any backbone. Parameter groups (`param_groups`):
"backbone" (stem, stages, the neck's deeper blocks), "shared/neck" (the fusion convs) and
"shared/early", "shared/mid", "shared/late" (the shared head), for LwF's differential learning rates.

With the defaults on 64 px, 1-channel canvases and seed 003's three tasks (11-class segmentation,
10-class detection, 10-class classification) the model has 230,611 trainable parameters (tested;
seed 003 capped its model at 8M). The layers are in bench/models/onehead_net.py, imported when a
network is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from bench.models import BACKBONES, BackboneContext
from bench.registry import Range

if TYPE_CHECKING:
    from bench.models.nets import Backbone


@BACKBONES.register("onehead")
def onehead(ctx: BackboneContext, *, widths: Annotated[list[int] | tuple[int, ...], Range(">= 1")] = (16, 32, 64),
            blocks: Annotated[int, Range(">= 1")] = 1, neck_channels: Annotated[int, Range(">= 1")] = 64,
            channels: Annotated[int, Range(">= 1")] = 64) -> Backbone:
    """`widths` (at least 2): the stem's, each stage's and the neck's deeper blocks'; the last two
    strides are fused. `channels`: the neck's output and the shared head's width."""
    widths = list(widths)
    if len(widths) < 2 or min(widths) < 1 or blocks < 1 or neck_channels < 1 or channels < 1:
        raise ValueError(f"backbone: onehead needs >= 2 positive widths, blocks >= 1 and positive channels; "
                         f"got widths {widths}, blocks {blocks}, neck_channels {neck_channels}, channels {channels}")
    if ctx.image_size % 2 ** len(widths):
        raise ValueError(f"backbone.widths: {len(widths)} halvings need an image side divisible by "
                         f"{2 ** len(widths)}, got {ctx.image_size} px; use fewer widths")
    from bench.models.onehead_net import build

    return build(ctx, widths, blocks, neck_channels, channels)
