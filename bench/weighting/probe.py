"""A diagnostic the trainer runs beside any method: how much the tasks' gradients conflict.

Every `every` training steps, before the step, the probe recomputes the batch's per-task losses and
measures the (T, T) cosines between the tasks' gradients on the shared parameters
(`task_gradient_cosines`), then leaves no trace on training: the random-number state is forked (dropout
draws the same masks in the real step) and the model's buffers (BatchNorm statistics) are restored.
It runs eagerly, never inside a captured CUDA graph. Cost per measurement: one forward pass and T
backward passes (vmapped), plus T x (shared parameter count) floats for the Jacobian; the trainer
times it apart from training.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from bench.weighting import task_gradient_cosines

# (batch (B, C, H, W), task -> targets, task -> (B,) label mask) -> per-task losses (T,)
LossFn = Callable[[Tensor, dict[str, Tensor], dict[str, Tensor]], Tensor]


class CosineProbe:
    """Cosines between task gradients on `shared`, every `every` steps; per-epoch means for the history."""

    def __init__(self, model: nn.Module, losses: LossFn, shared: Sequence[Tensor], tasks: int, every: int,
                 device: torch.device, clock: Callable[[], float], chunk: int | None = None):
        if every < 1:
            raise ValueError(f"every: expected a number of steps >= 1, got {every}")
        self.model, self.losses, self.shared, self.every = model, losses, list(shared), every
        self.device, self.clock, self.chunk = device, clock, chunk  # chunk: Jacobian rows per backward pass
        self.total = torch.zeros(tasks, tasks, device=device)  # sum of the epoch's (T, T) cosines
        self.count, self.seconds = 0, 0.0

    def __call__(self, step: int, xb: Tensor, yb: dict[str, Tensor], mb: dict[str, Tensor]) -> None:
        """Measure on this batch when `step` (counted over the whole fit, from 0) is a multiple of `every`."""
        if step % self.every:
            return
        t0 = self.clock()
        buffers = {k: v.clone() for k, v in self.model.named_buffers()}
        forked = [torch.cuda.current_device()] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):
            cosines = task_gradient_cosines(self.losses(xb, yb, mb), self.shared, self.chunk).detach()
        with torch.no_grad():
            for k, v in self.model.named_buffers():
                v.copy_(buffers[k])
        self.total += cosines
        self.count += 1
        self.seconds += self.clock() - t0

    def end_epoch(self, tasks: list[str]) -> tuple[dict[str, float], float]:
        """The epoch's history columns `grad_cos_<a>_vs_<b>` (a before b in `tasks`' order; the mean
        of its measurements, nan when none fell in it) and the seconds spent; resets."""
        mean = (self.total / self.count if self.count else torch.full_like(self.total, float("nan"))).cpu()
        seconds = self.seconds
        self.total.zero_()
        self.count, self.seconds = 0, 0.0
        return {f"grad_cos_{a}_vs_{b}": float(mean[i, j]) for i, a in enumerate(tasks)
                for j, b in enumerate(tasks) if i < j}, seconds
