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
seed 003 capped its model at 8M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from bench.models import BACKBONES, Backbone, BackboneContext

SHARED_HEAD = ("early", "mid", "late")  # the shared head's three layers, as param groups shared/<name>


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def res_stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    """`blocks` torchvision BasicBlocks, the first halving the resolution (with a 1x1 projection)."""
    down = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))
    return nn.Sequential(BasicBlock(cin, cout, 2, down), *(BasicBlock(cout, cout) for _ in range(blocks - 1)))


class Neck(nn.Module):
    """Fuses the fine map (B, c_fine, h, w) with the coarser map the deeper blocks make of it
    (B, c_deep, h / 2, w / 2): upsample, concatenate, conv1x1, conv3x3 -> (B, channels, h, w)."""

    def __init__(self, c_fine: int, c_deep: int, neck_channels: int, channels: int, blocks: int):
        super().__init__()
        self.deeper = res_stage(c_fine, c_deep, blocks)
        self.fuse = nn.Sequential(conv_bn_relu(c_fine + c_deep, neck_channels, 1),
                                  conv_bn_relu(neck_channels, channels, 3))

    def forward(self, fine: torch.Tensor) -> torch.Tensor:
        coarse = F.interpolate(self.deeper(fine), size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([fine, coarse], 1))


class OneHeadBackbone(Backbone):
    """The onehead stages with seed 003's finer parameter groups."""

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        *early, neck, head1, head2, head3 = self.stages
        groups = {"backbone": [p for m in early for p in m.parameters()] + list(neck.deeper.parameters()),
                  "shared/neck": list(neck.fuse.parameters())}
        groups.update({f"shared/{name}": list(m.parameters()) for name, m in zip(SHARED_HEAD, (head1, head2, head3))})
        return groups


@BACKBONES.register("onehead")
def onehead(ctx: BackboneContext, *, widths: list[int] | tuple[int, ...] = (16, 32, 64), blocks: int = 1,
            neck_channels: int = 64, channels: int = 64) -> Backbone:
    """`widths` (at least 2): the stem's, each stage's and the neck's deeper blocks'; the last two
    strides are fused. `channels`: the neck's output and the shared head's width."""
    widths = list(widths)
    if len(widths) < 2 or min(widths) < 1 or blocks < 1 or neck_channels < 1 or channels < 1:
        raise ValueError(f"backbone: onehead needs >= 2 positive widths, blocks >= 1 and positive channels; "
                         f"got widths {widths}, blocks {blocks}, neck_channels {neck_channels}, channels {channels}")
    if ctx.image_size % 2 ** len(widths):
        raise ValueError(f"backbone.widths: {len(widths)} halvings need an image side divisible by "
                         f"{2 ** len(widths)}, got {ctx.image_size} px; use fewer widths")
    stages = [conv_bn_relu(ctx.in_channels, widths[0], 3, stride=2)]
    stages += [res_stage(cin, cout, blocks) for cin, cout in zip(widths[:-2], widths[1:-1])]
    stages.append(Neck(widths[-2], widths[-1], neck_channels, channels, blocks))
    stages += [conv_bn_relu(channels, channels, 3) for _ in SHARED_HEAD]
    return OneHeadBackbone(stages, image_size=ctx.image_size, channels=channels, stride=2 ** (len(widths) - 1))
