"""Learning-rate schedules and early stopping, as the trainer drives them.

Per optimisation step (`LrSchedule.step(i)`, i counting steps from 0 over the whole fit), the learning
rate of every parameter group is its base rate times a factor:
- a linear warmup over `warmup_epochs` first (factor (i + 1) / warmup steps), then
- `onecycle`: linear decay to 0; `cosine`: half a cosine to 0 (Loshchilov & Hutter 2017, SGDR without
  restarts; `warmup_epochs: 0` for none); `constant`: 1;
- `plateau`: 1, until torch's `ReduceLROnPlateau` lowers it: at the end of every epoch after the
  warmup it sees the epoch's selection metric (validation loss, lower is better; or the score, higher
  is better) and multiplies the rates by `factor` once the metric has not improved by `threshold`
  for more than `patience` epochs, never below `min_lr` (the `plateau:` train setting; torch's
  defaults where a key is missing; Keras' callback of the same name with `threshold_mode: abs`).

`EarlyStopping` ends a fit once the selection metric has not improved by more than `min_delta` for
`patience` epochs in a row (Prechelt 1998's patience rule, as Keras' `EarlyStopping(patience,
min_delta)`): an epoch improves when it beats the best so far by more than `min_delta`. The trainer
still restores the best epoch's weights, chosen over every epoch trained.
"""

from __future__ import annotations

import math
from typing import Any

import torch

# ReduceLROnPlateau's parameters and torch's defaults (patience and cooldown in epochs; min_lr absolute)
PLATEAU_DEFAULTS: dict[str, Any] = {"factor": 0.1, "patience": 10, "min_lr": 0.0, "threshold": 1e-4,
                                    "threshold_mode": "rel", "cooldown": 0}
EARLY_STOPPING_KEYS = ("patience", "min_delta")


def check_plateau(raw: dict[str, Any]) -> None:
    """ValueError starting with the key, e.g. "factor: must be in (0, 1), got 2"."""
    for key, value in raw.items():
        if key not in PLATEAU_DEFAULTS:
            raise ValueError(f"{key}: unknown key; valid: {', '.join(PLATEAU_DEFAULTS)}")
        if key == "threshold_mode":
            if value not in ("rel", "abs"):
                raise ValueError(f"threshold_mode: must be rel or abs, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {value!r}")
    ok = {"factor": lambda v: 0 < v < 1, "patience": _count, "cooldown": _count,
          "min_lr": lambda v: v >= 0, "threshold": lambda v: v >= 0}
    for key, good in ok.items():
        if key in raw and not good(raw[key]):
            rule = "in (0, 1)" if key == "factor" else "a whole number >= 0" if key in ("patience", "cooldown") else ">= 0"
            raise ValueError(f"{key}: must be {rule}, got {raw[key]!r}")


def check_early_stopping(raw: dict[str, Any]) -> None:
    """ValueError starting with the key; {} is off, else `patience` (epochs, >= 1) and optional `min_delta` (>= 0)."""
    for key in raw:
        if key not in EARLY_STOPPING_KEYS:
            raise ValueError(f"{key}: unknown key; valid: {', '.join(EARLY_STOPPING_KEYS)}")
    if raw and ("patience" not in raw or not _count(raw["patience"]) or raw["patience"] < 1):
        raise ValueError(f"patience: expected a whole number of epochs >= 1, got {raw.get('patience')!r}")
    if not isinstance(raw.get("min_delta", 0.0), (int, float)) or raw.get("min_delta", 0.0) < 0:
        raise ValueError(f"min_delta: expected a number >= 0, got {raw['min_delta']!r}")


def _count(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and v >= 0 and float(v).is_integer()


class LrSchedule:
    """Sets the optimizer's learning rates per step and, for `plateau`, per epoch (see the module docstring).

    base_lrs: each group's rate at factor 1 (the group's lr when the schedule starts).
    """

    def __init__(self, opt: torch.optim.Optimizer, *, schedule: str, warmup_epochs: float, epochs: int,
                 steps_per_epoch: int, plateau: dict[str, Any] | None = None, higher_is_better: bool = False):
        self.opt, self.schedule = opt, schedule
        self.base_lrs = [float(g["lr"]) for g in opt.param_groups]
        self.per_epoch, self.total = steps_per_epoch, epochs * steps_per_epoch
        self.warm = max(1, int(warmup_epochs * steps_per_epoch)) if warmup_epochs > 0 else 0
        self.plateau = None
        if schedule == "plateau":
            p = {**PLATEAU_DEFAULTS, **(plateau or {})}
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max" if higher_is_better else "min", factor=p["factor"], patience=int(p["patience"]),
                threshold=p["threshold"], threshold_mode=p["threshold_mode"], cooldown=int(p["cooldown"]),
                min_lr=p["min_lr"])

    def factor(self, step: int) -> float:
        """The schedule's factor at a step (plateau: the warmup's only)."""
        if step < self.warm:
            return (step + 1) / self.warm
        if self.schedule in ("constant", "plateau"):
            return 1.0
        progress = (step - self.warm) / max(1, self.total - self.warm)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1 - progress)  # onecycle

    def step(self, step: int) -> None:
        """Before optimisation step `step`. After its warmup, plateau leaves the rates to ReduceLROnPlateau."""
        if self.plateau is None or step < self.warm:
            set_lr(self.opt, self.base_lrs, self.factor(step))

    def epoch_end(self, epoch: int, metric: float) -> None:
        """After epoch `epoch` (1-based) with this selection metric: ReduceLROnPlateau's step, past the warmup."""
        if self.plateau is not None and epoch * self.per_epoch >= self.warm:
            self.plateau.step(metric)


def set_lr(opt: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    """Scale every group's base learning rate; tensor rates (CUDA graphs) are updated in place."""
    for group, base in zip(opt.param_groups, base_lrs):
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(base * factor)
        else:
            group["lr"] = base * factor


class EarlyStopping:
    """Patience on the selection metric: `update(value)` is True when the fit should stop."""

    def __init__(self, patience: int, min_delta: float = 0.0, higher_is_better: bool = False):
        self.patience, self.min_delta, self.sign = int(patience), float(min_delta), 1.0 if higher_is_better else -1.0
        self.best: float | None = None
        self.wait = 0  # epochs since the last improvement

    def update(self, value: float) -> bool:
        if self.best is None or self.sign * (value - self.best) > self.min_delta:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        return self.wait >= self.patience
