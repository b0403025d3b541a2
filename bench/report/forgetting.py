"""Forgetting arithmetic on one R matrix (pure numpy; the report section calls it per seed).

R[k][j] is task j's primary test metric after stage k, tasks in stage order, so R[j][j] is task j
right after its own stage. Per task j: baseline = R[j][j], final = R[last][j], and
drop % = 100 * (baseline - final) / |baseline|, sign-flipped for lower-is-better metrics (MAE) so that
a positive drop always means worse; a task passes when its drop is at most the threshold (%). A
relative drop from a baseline of 0 is undefined: NaN, and such a task neither passes nor fails.
Backward transfer (BWT, Lopez-Paz & Ranzato 2017) = mean over j < last of R[last][j] - R[j][j],
with the same flip, so a negative BWT means forgetting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Forgetting:
    baseline: np.ndarray  # (K,) R[j][j]
    final: np.ndarray  # (K,) R[last][j]
    drop_pct: np.ndarray  # (K,) % of the baseline lost by the end; positive = worse; NaN where baseline is 0
    passed: np.ndarray  # (K,) bool: drop_pct <= threshold (False where undefined: check drop_pct for NaN)


def forgetting(R: Sequence[Sequence[float]], higher_is_better: Sequence[bool], threshold: float) -> Forgetting:
    R = _square(R)
    baseline, final = np.diag(R).copy(), R[-1].copy()
    sign = _signs(higher_is_better)
    with np.errstate(divide="ignore", invalid="ignore"):
        drop = np.where(baseline != 0, 100 * sign * (baseline - final) / np.abs(baseline), np.nan)
    return Forgetting(baseline=baseline, final=final, drop_pct=drop, passed=drop <= threshold)


def bwt(R: Sequence[Sequence[float]], higher_is_better: Sequence[bool], tasks: Sequence[int] | None = None) -> float:
    """Mean over earlier tasks j (all but the last stage's; optionally only those in `tasks`) of the
    direction-adjusted final - baseline. NaN when no such task (e.g. one stage)."""
    R = _square(R)
    last = len(R) - 1
    cols = [j for j in (range(last) if tasks is None else tasks) if j < last]
    if not cols:
        return float("nan")
    sign = _signs(higher_is_better)[cols]
    return float(np.mean(sign * (R[last, cols] - R[cols, cols])))


def average_final(R: Sequence[Sequence[float]], tasks: Sequence[int] | None = None) -> float:
    """Mean of the final row over all tasks, or over the columns `tasks` (tasks sharing a metric)."""
    final = _square(R)[-1]
    return float(final.mean() if tasks is None else final[list(tasks)].mean())


def _square(R) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1]:
        raise ValueError(f"R must be square (stages x tasks), got shape {R.shape}")
    return R


def _signs(higher_is_better: Sequence[bool]) -> np.ndarray:
    return np.where(np.asarray(higher_is_better, dtype=bool), 1.0, -1.0)
