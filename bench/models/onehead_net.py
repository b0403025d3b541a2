"""The layers of the `onehead` backbone (registered in bench/models/onehead.py, whose docstring
describes the network): the stem and residual stages, the neck, the shared head's parameter groups."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from bench.models import BackboneContext
from bench.models.nets import Backbone

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


def build(ctx: BackboneContext, widths: list[int], blocks: int, neck_channels: int, channels: int) -> Backbone:
    """The onehead backbone for checked settings (see `onehead`)."""
    stages = [conv_bn_relu(ctx.in_channels, widths[0], 3, stride=2)]
    stages += [res_stage(cin, cout, blocks) for cin, cout in zip(widths[:-2], widths[1:-1])]
    stages.append(Neck(widths[-2], widths[-1], neck_channels, channels, blocks))
    stages += [conv_bn_relu(channels, channels, 3) for _ in SHARED_HEAD]
    return OneHeadBackbone(stages, image_size=ctx.image_size, channels=channels, stride=2 ** (len(widths) - 1))
