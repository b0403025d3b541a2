"""The trainer's fast path on CUDA: its step captured once as a CUDA graph and replayed (the trainer
decides when: CUDA, Adam / AdamW, no extra loss, a graph-safe weighting method)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class GraphedStep:
    """A training step captured once as a CUDA graph and replayed: one launch instead of hundreds.

    Capture needs a few warm-up steps (they create gradients and optimizer state); their effect is
    undone afterwards on every module given (the model and the weighting method, whose learned
    weights and statistics the warm-up also moved), so training starts as an eager run would.
    """

    WARMUP = 3

    def __init__(self, step: Callable, modules: list[nn.Module], opt: torch.optim.Optimizer,
                 x: torch.Tensor, y: dict[str, torch.Tensor], m: dict[str, torch.Tensor]):
        # static input buffers: batch, targets, label masks
        self.x, self.y, self.m = x.clone(), {t: v.clone() for t, v in y.items()}, {t: v.clone() for t, v in m.items()}
        saved = [{k: v.detach().clone() for k, v in module.state_dict().items()} for module in modules]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                step(self.x, self.y, self.m)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        try:
            with torch.cuda.graph(self.graph):
                step(self.x, self.y, self.m)
        finally:
            restore(modules, opt, saved)

    def __call__(self, x: torch.Tensor, y: dict[str, torch.Tensor], m: dict[str, torch.Tensor]) -> None:
        self.x.copy_(x)
        for t, v in y.items():
            self.y[t].copy_(v)
        for t, v in m.items():
            self.m[t].copy_(v)
        self.graph.replay()


@torch.no_grad()
def restore(modules: list[nn.Module], opt: torch.optim.Optimizer, saved: list[dict[str, torch.Tensor]]) -> None:
    """Each module's state back to `saved` (one state_dict per module), the optimizer's moments and
    step counts to zero."""
    for module, state in zip(modules, saved):
        for k, v in module.state_dict().items():
            v.copy_(state[k])
    for state in opt.state.values():  # fresh optimizer: zero moments and step counts
        for v in state.values():
            if torch.is_tensor(v):
                v.zero_()
