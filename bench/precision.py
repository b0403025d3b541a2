"""Numerics of one cell: its compute precision, TF32, cuDNN autotuning and determinism.

`TrainConfig.precision`:
- `auto`: bf16 autocast on CUDA (the harness's fast default), fp32 on CPU;
- `fp32`: no autocast and no TF32: IEEE float32 matmuls and convolutions;
- `bf16`: bf16 autocast (float32 weights and optimizer state);
- `fp16`: fp16 autocast with a gradient scaler (`torch.amp.GradScaler`: the loss is scaled before
  backward, gradients unscaled before the step, and a step whose gradients hold inf / NaN is skipped
  while the scale shrinks; Micikevicius et al. 2018, "Mixed Precision Training").
On CPU every cell computes in fp32, whatever it asks for: CPU fp16 autocast ran 16x slower than fp32
on this harness's 2-core test machine. The record's `numerics` says what ran and what was asked.

`TrainConfig.deterministic: true` sets `cudnn.deterministic`, turns cuDNN's autotuner off
(`cudnn.benchmark`), calls `torch.use_deterministic_algorithms(True, warn_only=True)` (ops that have a
deterministic implementation use it; the others warn once, not fail), and sets
`CUBLAS_WORKSPACE_CONFIG=:4096:8`, cuBLAS's condition for reproducible matmuls on CUDA >= 10.2 (it
takes effect only if cuBLAS was not yet initialised in the process). Otherwise cuDNN autotunes
(`benchmark`), as before. These are process-wide torch flags: `apply` sets every one of them at the
start of each cell, so no cell inherits another's.

The CUDA-graph training step is used only with bf16 and without `deterministic` (the configuration
it was validated in): fp16 needs the scaler's host-side inf check between backward and step, which a
replayed graph cannot make, and fp32 / deterministic protocols are about fidelity, not speed.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CUBLAS_WORKSPACE = ":4096:8"  # one of the two settings cuBLAS documents for deterministic results


@dataclass(frozen=True)
class Numerics:
    """What one cell computes with (the record stores `to_dict()`)."""

    requested: str  # TrainConfig.precision
    precision: str  # what runs: fp32 | bf16 | fp16
    deterministic: bool
    tf32: bool  # TF32 allowed in float32 matmuls and convolutions (CUDA)
    cudnn_benchmark: bool  # cuDNN autotuning
    device_type: str

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype, and the dtype of normalised inputs on CUDA."""
        return DTYPES[self.precision]

    @property
    def graph_safe(self) -> bool:
        """May the training step be captured as a CUDA graph (see the module docstring)?"""
        return self.precision == "bf16" and not self.deterministic

    def autocast(self, cache: bool = True) -> AbstractContextManager:
        """Autocast to this precision (off for fp32). `cache=False` under CUDA-graph capture."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.precision != "fp32",
                              cache_enabled=cache)

    def scaler(self) -> torch.amp.GradScaler | None:
        """A fresh gradient scaler for fp16, else None."""
        return torch.amp.GradScaler(self.device_type) if self.precision == "fp16" else None

    def to_dict(self) -> dict:
        return asdict(self)


def numerics(precision: str, deterministic: bool, device: torch.device) -> Numerics:
    """The numerics a cell with these settings gets on `device`; ValueError for an unknown precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: {precision!r} unknown; valid: {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    ran = "fp32" if not cuda else ("bf16" if precision == "auto" else precision)
    return Numerics(requested=precision, precision=ran, deterministic=deterministic,
                    tf32=cuda and ran != "fp32", cudnn_benchmark=cuda and not deterministic,
                    device_type=device.type)


def apply(n: Numerics) -> None:
    """Set torch's process-wide flags for this cell (every flag, every time)."""
    tf32 = "tf32" if n.tf32 else "ieee"
    # torch >= 2.9's precision API only: reading or mixing the legacy allow_tf32 flags raises.
    torch.backends.cuda.matmul.fp32_precision = tf32
    torch.backends.cudnn.conv.fp32_precision = tf32
    torch.backends.cudnn.benchmark = n.cudnn_benchmark
    torch.backends.cudnn.deterministic = n.deterministic
    torch.use_deterministic_algorithms(n.deterministic, warn_only=True)
    if n.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


def backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """loss.backward() and the optimizer step, through the fp16 gradient scaler when there is one."""
    if scaler is None:
        loss.backward()
        opt.step()
        return
    scaler.scale(loss).backward()
    scaler.step(opt)  # unscales first; skips the step if a gradient is inf / NaN
    scaler.update()
