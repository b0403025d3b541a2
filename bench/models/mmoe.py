"""MMoE, Multi-gate Mixture-of-Experts (Ma, Zhao, Yi, Chen, Hong and Chi, "Modeling Task Relationships
in Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018), over any staged backbone.

E experts, each a full column of the backbone (its stages and trunk), are shared by every task;
each task t has its own gate, a softmax over the experts computed from the input x (the paper's
g^t(x) = softmax(W_gt x), on the flattened image, (C H W) -> E):

    f_k(x): expert k's features, its trunk vector (B, D) or its last map (B, C, h, w)
    y_t = h_t(sum_k g^t(x)_k f_k(x))       task t's head on its own mixture of the experts

Experts are columns rather than the paper's small MLPs because a staged image backbone is the unit
this harness shares; so a cell costs E backbones' compute and parameters (`experts`, default 3).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bench.kinds import TaskSpec
from bench.models import Backbone, Features, make_heads


class MMoENet(nn.Module):
    """E expert backbones, one softmax gate and one head per task (see the module doc).

    ValueError for `experts` < 1, or a backbone without a Conv2d to read the input channels from.
    """

    def __init__(self, make_backbone: Callable[[], Backbone], specs: dict[str, TaskSpec], *, experts: int = 3,
                 heads: dict[str, dict] | None = None):
        super().__init__()
        if experts < 1:
            raise ValueError(f"experts: expected at least 1, got {experts}")
        self.tasks = list(specs)
        self.experts = nn.ModuleList(make_backbone() for _ in range(experts))
        c, h, w = self.experts[0].shapes()[0]  # the input image
        self.gates = nn.ModuleDict({t: nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, experts), nn.Softmax(dim=1))
                                    for t in self.tasks})
        self.heads = make_heads(self.experts[0].features(), specs, heads or {})
        if not any(h.reads == "vector" for h in self.heads.values()):
            for expert in self.experts:
                expert.trunk = None  # every head reads the map (dense tasks): a trunk would never train

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], Features]:
        """The outputs, and each task's mixture its head reads ("<task>/map" or "<task>/vector")."""
        maps = torch.stack([e(x) for e in self.experts])  # (E, B, C, h, w)
        reads = {self.heads[t].reads for t in self.tasks}
        vectors = torch.stack([e.trunk(m) for e, m in zip(self.experts, maps)]) if "vector" in reads else None
        out, features = {}, {}
        for t in self.tasks:
            head = self.heads[t]
            stacked = vectors if head.reads == "vector" else maps  # (E, B, ...)
            gate = self.gates[t](x).to(stacked.dtype).T  # (E, B)
            z = (gate.reshape(*gate.shape, *[1] * (stacked.ndim - 2)) * stacked).sum(0)
            features[f"{t}/{head.reads}"] = z
            out[t] = head(z)
        return out, features

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The experts' backbone groups, joined by name (backbone: their stages; shared: their trunks,
        or finer shared/<part>); head/<task>: the head and the gate."""
        groups: dict[str, list[nn.Parameter]] = {}
        for expert in self.experts:
            for name, params in expert.param_groups().items():
                groups.setdefault(name, []).extend(params)
        groups.update({f"head/{t}": list(self.heads[t].parameters()) + list(self.gates[t].parameters())
                       for t in self.tasks})
        return groups
