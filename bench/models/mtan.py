"""MTAN, the Multi-Task Attention Network (Liu, Johns and Davison, "End-to-End Multi-Task Learning
with Attention", CVPR 2019), over any staged backbone of the registry.

One backbone is shared by every task (the paper's global feature pool). Each task owns one soft
attention module per backbone stage, which selects features from that stage's output p_j
(B, C_j, h_j, w_j):

    in_1 = p_1,   in_j = [p_j ; f_j(x_{j-1})]  (channels concatenated, j > 1)
    a_j  = sigmoid(BN(conv1x1(ReLU(BN(conv1x1(in_j))))))   (B, C_j, h_j, w_j), the task's mask in (0, 1)
    x_j  = a_j * p_j                                        the task's attended features

f_j (conv3x3 BN ReLU, C_{j-1} -> C_j, then average pooling to p_j's size) is shared by the tasks, as
in the paper. A task's head reads x_L, its attended last map, or the backbone's trunk applied to x_L
(the trunk's weights are shared; it runs once per task). Deviation from the paper: its mask reads
the first layer of a block and gates the block's last; the backbone seam exposes stage outputs only,
so here the mask reads the very output it gates. Stage shapes come from one dry run of the backbone
(`Backbone.shapes`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bench.kinds import TaskSpec
from bench.models import Backbone, Features, make_heads


def _conv_bn(cin: int, cout: int, k: int, act: nn.Module) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), act]


class Attention(nn.Sequential):
    """The paper's task-specific mask g: [conv1x1 BN ReLU] [conv1x1 BN sigmoid], cin -> channels."""

    def __init__(self, cin: int, channels: int):
        super().__init__(*_conv_bn(cin, channels, 1, nn.ReLU(inplace=True)), *_conv_bn(channels, channels, 1, nn.Sigmoid()))


class Resample(nn.Module):
    """The paper's shared f: conv3x3 BN ReLU (cin -> cout), then average pooling to `size` (h, w)."""

    def __init__(self, cin: int, cout: int, size: tuple[int, int]):
        super().__init__()
        self.conv = nn.Sequential(*_conv_bn(cin, cout, 3, nn.ReLU(inplace=True)))
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if tuple(x.shape[-2:]) == self.size else F.adaptive_avg_pool2d(x, self.size)


class MTANNet(nn.Module):
    """A shared backbone, per-task attention at every stage, one head per task (see the module doc).

    ValueError for a backbone without a Conv2d to read the input channels from (`Backbone.shapes`).
    """

    def __init__(self, backbone: Backbone, specs: dict[str, TaskSpec], heads: dict[str, dict] | None = None):
        super().__init__()
        self.backbone, self.tasks = backbone, list(specs)
        stages = backbone.shapes()[1:]  # (C_j, h_j, w_j) per stage
        self.resample = nn.ModuleList(Resample(c0, c1, (h1, w1)) for (c0, _, _), (c1, h1, w1) in zip(stages, stages[1:]))
        self.attention = nn.ModuleDict({t: nn.ModuleList(
            Attention(c if j == 0 else 2 * c, c) for j, (c, _, _) in enumerate(stages)) for t in self.tasks})
        self.heads = make_heads(backbone.features(), specs, heads or {})
        if not any(h.reads == "vector" for h in self.heads.values()):
            backbone.trunk = None  # every head reads the map (dense tasks): a trunk would never train

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Features]:
        """The outputs, and what each task's head reads ("<task>/map" or "<task>/vector"): every task
        reads its own attended features, so no representation after the backbone is shared."""
        stages = self.backbone.forward_stages(x)  # p_j, (B, C_j, h_j, w_j)
        out, features = {}, {}
        for t in self.tasks:
            attended = None
            for j, (p, mask) in enumerate(zip(stages, self.attention[t])):
                inp = p if attended is None else torch.cat([p, self.resample[j - 1](attended)], 1)
                attended = mask(inp) * p
            head = self.heads[t]
            z = attended if head.reads == "map" else self.backbone.trunk(attended)
            features[f"{t}/{head.reads}"] = z
            out[t] = head(z)
        return out, features

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The backbone's groups (backbone, shared: its trunk, or finer shared/<part>), the resampling
        convs f added to "shared"; head/<task>: the head and that task's attention modules."""
        groups = self.backbone.param_groups()
        groups["shared"] = groups.get("shared", []) + list(self.resample.parameters())
        groups.update({f"head/{t}": list(self.heads[t].parameters()) + list(self.attention[t].parameters())
                       for t in self.tasks})
        return groups
