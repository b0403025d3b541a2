"""Statistics over seeds for the report: mean +- std, t-intervals, paired tests against the STL
reference, Holm's correction, win / tie / loss, delta_m and the binomial standard error.

Every function is pure (numbers in, numbers out); the sections decide what to show. Seed-level
statistics treat each seed as one observation: a strategy's seed s is paired with the reference's
seed s (`pair_by_seed`), so a difference's spread is the spread over training runs. Statistics on
the test images themselves (McNemar, the image bootstrap) and calibration are in `prediction_stats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple, Sequence, TypeVar

import numpy as np
from scipy import special  # the t distribution's cdf and quantile; scipy.stats costs ~1 s more to import

K = TypeVar("K")


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0 for one value) and n, ignoring NaN."""
    v = _finite(values)
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


def fmt_interval(mean: float, low: float, high: float, scale: float = 1.0, digits: int = 2) -> str:
    """A signed mean and its interval, e.g. "+0.29 [-0.51, +1.10]"; the mean alone when the interval is
    NaN (one seed); "-" when the mean is NaN too. Values are multiplied by `scale` (x100: points)."""
    if math.isnan(mean):
        return "-"
    text = f"{mean * scale:+.{digits}f}"
    if math.isnan(low) or math.isnan(high):
        return text
    return f"{text} [{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"


def fmt_p(p: float) -> str:
    """A p-value with 2 significant digits, "<0.001" below that, "-" for NaN (no test)."""
    if math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.2g}"


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


def _finite(values: Iterable[float | None]) -> np.ndarray:
    """The values that are neither None nor NaN, as float64 (1-D)."""
    return np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)


class Interval(NamedTuple):
    """A mean with its two-sided confidence interval, in the units of the values, over n values."""
    mean: float
    low: float
    high: float
    n: int


def t_interval(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Student-t confidence interval for the mean: mean +- t_{(1+c)/2, n-1} * s / sqrt(n).

    `values`: one number per seed (None and NaN are dropped; n counts the rest). s is the sample
    standard deviation (ddof=1); the quantile is `scipy.special.stdtrit`, which `scipy.stats.t.ppf`
    calls. n = 1 gives a NaN interval (no
    spread can be estimated from one run) and n = 0 a NaN mean too. Raises ValueError unless
    0 < confidence < 1.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    v = _finite(values)
    n = len(v)
    if n < 2:
        return Interval(float(v[0]) if n else math.nan, math.nan, math.nan, n)
    half = special.stdtrit(n - 1, (1 + confidence) / 2) * v.std(ddof=1) / math.sqrt(n)
    return Interval(float(v.mean()), float(v.mean() - half), float(v.mean() + half), n)


def ttest_p(values: Iterable[float], popmean: float = 0.0) -> float:
    """Two-sided one-sample t-test p-value of H0: mean = popmean, as `scipy.stats.ttest_1samp`:
    t = (mean - popmean) / (s / sqrt(n)) with s the sample std (ddof=1), p = 2 P(T_{n-1} > |t|) from
    the t distribution's cdf (`scipy.special.stdtr`, which scipy.stats' t uses; the tests compare).

    None and NaN are dropped. NaN for n < 2. When every value equals `popmean` exactly (no spread
    and no difference; scipy returns NaN) the p-value is 1; when every value is the same other
    number, t is infinite and p = 0.
    """
    v = _finite(values)
    n = len(v)
    if n < 2:
        return math.nan
    if np.all(v == popmean):
        return 1.0
    sd = v.std(ddof=1)
    t = math.inf if sd == 0 else abs(v.mean() - popmean) / (sd / math.sqrt(n))
    return float(2 * special.stdtr(n - 1, -t))


def pair_by_seed(values: Mapping[int, float], reference: Mapping[int, float]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The seeds present, with a finite value, in both mappings (seed -> metric), sorted, and the two
    aligned arrays. A strategy's row is compared with the reference only over these seeds, so every
    statistic built on them states one n (issue 12, item 8)."""
    seeds = sorted(s for s in values.keys() & reference.keys()
                   if not (math.isnan(values[s]) or math.isnan(reference[s])))
    return seeds, np.array([values[s] for s in seeds], float), np.array([reference[s] for s in seeds], float)


@dataclass(frozen=True)
class PairedDifference:
    """values - reference, paired by seed, in the units of the inputs (e.g. accuracy fraction; x100 = points)."""
    differences: tuple[float, ...]  # per seed, in the caller's seed order
    mean: float
    low: float  # t-interval of the mean difference
    high: float
    p: float  # two-sided paired t-test; NaN for n < 2
    n: int
    reference_mean: float
    percent: float  # 100 * mean / reference_mean: the difference in % of the reference
    percent_low: float  # the interval scaled the same way (the reference mean taken as fixed)
    percent_high: float


def paired_difference(values: Sequence[float], reference: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """Mean paired difference values - reference, its t-interval and the two-sided paired t-test.

    `values[i]` and `reference[i]` must be the same seed (see `pair_by_seed`); equal lengths, no NaN,
    else ValueError. The test is `scipy.stats.ttest_rel(values, reference)`, computed as the identical
    one-sample test on the differences (`ttest_p`); the interval is `t_interval` of the differences.
    The relative difference divides by |mean(reference)|, so its sign is the sign of the difference
    (NaN when that mean is 0). Signs are raw: for a lower-is-better metric a negative difference is a
    gain (`win_tie_loss` knows the direction).
    """
    a, b = np.asarray(values, float), np.asarray(reference, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"values and reference must be 1-D of equal length, got {a.shape} and {b.shape}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("values and reference must not contain NaN; pair the seeds with pair_by_seed first")
    d = a - b
    mean, low, high, n = t_interval(d, confidence)
    ref = float(b.mean()) if len(b) else math.nan
    scale = 100 / abs(ref) if ref and not math.isnan(ref) else math.nan
    return PairedDifference(tuple(map(float, d)), mean, low, high, ttest_p(d), n, ref,
                            mean * scale, low * scale, high * scale)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, in the input order.

    With the m non-NaN p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value is
    p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)); rejecting H_i when p~_i <= alpha is Holm's
    procedure at family-wise error rate alpha. NaN entries (no test) pass through as NaN and do not
    count towards m. scipy has no Holm (`scipy.stats.false_discovery_control` is Benjamini-Hochberg);
    the tests check this against the procedure's definition and a hand-worked example.
    Raises ValueError for a p-value outside [0, 1].
    """
    p = np.asarray(pvalues, float)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}")
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[(p < 0) | (p > 1)]}")
    out = np.full_like(p, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])  # (m - j + 1) p_(j), j from 1
    out[order] = np.minimum(stepped, 1.0)
    return out


def win_tie_loss(difference: float, adjusted_p: float, higher_is_better: bool, alpha: float = 0.05) -> str:
    """"win", "tie" or "loss" of a strategy against the reference on one task.

    `difference` is strategy - reference (any units), `adjusted_p` its Holm-adjusted p-value over the
    report's family of comparisons (`holm`). A difference counts only when adjusted_p < alpha: then
    it is a win if it goes the good way (up when higher is better, down for MAE), else a loss.
    Otherwise "tie" (no evidence either way, not evidence of equality). "n/a" when there is no test
    (adjusted_p or difference NaN, e.g. one seed).
    """
    if math.isnan(adjusted_p) or math.isnan(difference):
        return "n/a"
    if adjusted_p >= alpha or difference == 0:
        return "tie"
    return "win" if (difference > 0) == higher_is_better else "loss"


def delta_m_interval(per_seed_delta_m: Iterable[float], confidence: float = 0.95) -> Interval:
    """delta_m % (one value per seed, each against the same seed's STL; see `delta_m`) as mean, t-interval
    and n: `t_interval` of the per-seed values. Its p-value against 0 is `ttest_p(per_seed_delta_m)`."""
    return t_interval(per_seed_delta_m, confidence)


def binomial_se(accuracy: float, n: int) -> float:
    """Test-set sampling error of an accuracy measured on n images: sqrt(p (1 - p) / n), the standard
    error of a binomial proportion, in the units of `accuracy` (a fraction; x100 for points).

    Raises ValueError unless 0 <= accuracy <= 1 and n >= 1. It is the error of one model's score on a
    finite test set, not the spread over seeds.
    """
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
    if n < 1:
        raise ValueError(f"n must be a positive number of test images, got {n}")
    return math.sqrt(accuracy * (1 - accuracy) / n)
