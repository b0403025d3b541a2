"""Statistics for the report: mean +- std over seeds, with n stated."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0 for one value) and n, ignoring NaN."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def fmt_mean_std(values: Iterable[float], scale: float = 1.0, digits: int = 2) -> str:
    m, s, n = mean_std(values)
    if n == 0:
        return "-"
    if n == 1:
        return f"{m * scale:.{digits}f}"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def delta_m(values: dict[str, float], baseline: dict[str, float], higher_is_better: dict[str, bool]) -> float:
    """Maninis et al. 2019, eq. 4, in percent: mean over tasks i of (-1)^l_i (M_i - M_b,i) / M_b,i * 100.

    `values` and `baseline` map task -> primary metric (M and the single-task M_b); l_i = 1 when lower
    is better for task i. The tasks are `values`' keys; NaN when a baseline is missing, NaN or 0.
    """
    terms = []
    for task, value in values.items():
        base = baseline.get(task, math.nan)
        if math.isnan(base) or base == 0:
            return math.nan
        sign = 1 if higher_is_better[task] else -1
        terms.append(sign * (value - base) / base * 100)
    return float(np.mean(terms)) if terms else math.nan
