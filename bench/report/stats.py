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
