"""Statistics on the stored per-image test predictions: paired tests of two models on the same test
images (exact McNemar per seed; a bootstrap over seeds and images, the report's image-level test) and
calibration (NLL, expected calibration error).

Inputs are numpy arrays as the store holds them: per-image correctness (bool, (N,) or (S, N) for S
seeds), class probabilities (N, C) in float16 (binary tasks as (N, 2)) and integer targets (N,).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

NLL_FLOOR = 2.0**-24  # float16's smallest positive value: a stored 0 was a probability below 2**-25


class McNemar(NamedTuple):
    b: int  # images model A gets right and B wrong
    c: int  # images B gets right and A wrong
    p: float  # two-sided exact p-value


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact two-sided McNemar test of two models scored on the same N test images (one seed).

    `correct_a`, `correct_b`: (N,) bool, whether each model is right on image i. Under H0 (equal
    accuracy) each of the b + c discordant images is equally likely to favour either model, so
    p = `scipy.stats.binomtest(b, b + c, 0.5).pvalue` (two-sided); p = 1 when b + c = 0
    (McNemar 1947; the exact form as in Fagerland, Lydersen and Laake 2013). Raises ValueError for
    arrays that are not 1-D of the same length. With several seeds this is one test per seed;
    `bootstrap_difference` gives one interval and p-value over all of them.
    """
    from scipy import stats  # here, not at the top: importing scipy.stats costs the report ~1 s

    a, b_ = _correct_pair(correct_a, correct_b, ndim=1)
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    return McNemar(b, c, 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue))


class BootstrapDifference(NamedTuple):
    mean: float  # accuracy(A) - accuracy(B), a fraction, averaged over seeds
    low: float  # percentile interval
    high: float
    p: float  # two-sided; at least 2 / (n_boot + 1) unless the models never differ


def bootstrap_difference(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 10_000, seed: int = 0,
                         confidence: float = 0.95) -> BootstrapDifference:
    """Accuracy difference A - B with a bootstrap over seeds and test images; the image-level test.

    `correct_a`, `correct_b`: (S, N) bool, row s = seed s of each model (paired by seed: the caller
    aligns them), column i = test image i (the same images for every seed). Each replicate resamples
    the S seeds and, independently, the N images with replacement, the same images for every seed
    (images are shared, so their difficulty is too): the "pigeonhole" bootstrap for crossed
    seed x image data (Owen 2007, Ann. Appl. Stat. 1(2)). The statistic is the mean of
    correct_a - correct_b over the resampled cells. The interval is the percentile interval; p is the
    smallest two-sided level at which that interval excludes 0,
    p = min(1, 2 min(1 + #{t* <= 0}, 1 + #{t* >= 0}) / (n_boot + 1)), so identical models give p = 1
    and the smallest p is 2 / (n_boot + 1) (2e-4 at 10,000: Holm can still reach 0.05 over fewer than
    250 comparisons).

    Why this and not McNemar per seed: S McNemar p-values are S tests that condition on each trained
    model and ignore seed-to-seed variation; this gives one interval and one p-value that carry both
    the test-set sampling error and the seed variation. scipy.stats.bootstrap resamples one axis only,
    hence the two-axis resampling here. Caveat: with few seeds the bootstrap under-states the seed
    part of the variance (by (S - 1) / S: 2/3 at S = 3) and uses no t-quantile, so its interval is
    narrower than the seed-level t-interval; read it beside the paired t-test, not instead of it.
    Deterministic for a given `seed`. Raises ValueError for mismatched shapes or n_boot < 1.
    """
    a, b = _correct_pair(correct_a, correct_b, ndim=2)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = a.astype(np.int64) - b.astype(np.int64)  # (S, N) in {-1, 0, 1}
    n_seeds, n_images = d.shape
    # Drawing N images with replacement only matters through how often each column pattern of d is
    # drawn: a multinomial over the K <= min(3**S, N) distinct patterns (same distribution, K << N).
    # Each pattern is coded as one base-3 integer, most significant digit first, so that sorting the
    # codes orders the patterns as np.unique(d.T, axis=0) would, at a fraction of its cost.
    codes, counts = np.unique((d.T + 1) @ 3 ** np.arange(n_seeds - 1, -1, -1), return_counts=True)
    patterns = (codes[:, None] // 3 ** np.arange(n_seeds - 1, -1, -1)) % 3 - 1  # (K, S), counts (K,)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_images, counts / n_images, size=n_boot)  # (n_boot, K)
    per_seed = draws @ patterns / n_images  # (n_boot, S): each seed on the same resampled images
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    boot = np.take_along_axis(per_seed, seeds, 1).mean(1)  # (n_boot,)
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    p = min(1.0, 2 * (1 + min(int((boot <= 0).sum()), int((boot >= 0).sum()))) / (n_boot + 1))
    return BootstrapDifference(float(d.mean()), float(low), float(high), p)


def _correct_pair(a: np.ndarray, b: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape or a.ndim != ndim or a.size == 0:
        want = "(N,)" if ndim == 1 else "(S, N)"
        raise ValueError(f"correct_a and correct_b must both be non-empty {want}, got {a.shape} and {b.shape}")
    return a, b


def nll(probs: np.ndarray, targets: np.ndarray, floor: float = NLL_FLOOR) -> float:
    """Mean negative log-likelihood of the targets in nats: -mean_i log max(probs[i, y_i], floor).

    `probs`: (N, C) class probabilities as stored (float16; binary tasks (N, 2)), used as they are
    (rows are not renormalised; float16 rows sum to 1 within ~1e-3). `targets`: (N,) ints in [0, C).
    The floor (default 2**-24, float16's smallest positive value) stands in for probabilities rounded
    to 0, capping one image's term at 16.6 nats; where it applies, the NLL is a lower bound.
    sklearn.metrics.log_loss computes the same (the tests compare them) but clips at the dtype's
    machine epsilon, ~1e-3 for float16, which would cap each term at 6.9 nats.
    """
    p, t = _probs(probs, targets)
    return float(-np.log(np.maximum(p[np.arange(len(p)), t], floor)).mean())


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al. 2017, eq. 3), a fraction in [0, 1].

    The confidence of image i is max_k probs[i, k], its prediction the argmax (first on ties). The
    confidences fall in n_bins equal-width bins ((m - 1) / M, m / M], and
    ECE = sum_m |B_m| / N * |accuracy(B_m) - mean confidence(B_m)|. Shapes as in `nll`; binary tasks
    (N, 2) get the top-label ECE too. Matches torchmetrics' MulticlassCalibrationError(norm="l1")
    except at bin edges: torchmetrics bins are [lo, hi) with a separate bin for confidence exactly
    1.0, which float16 storage makes common; here 1.0 joins the last bin, as in Guo et al.
    (torchmetrics' BinaryCalibrationError bins the positive-class probability instead: another
    quantity.) Raises ValueError for n_bins < 1.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, t = _probs(probs, targets)
    conf, correct = p.max(1), p.argmax(1) == t
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # (lo, hi]
    gap = np.bincount(bins, correct, n_bins) - np.bincount(bins, conf, n_bins)  # per bin: sum(acc - conf)
    return float(np.abs(gap).sum() / len(p))


def _probs(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """probs as float64 (N, C) and targets (N,), after checking shapes, range and targets."""
    p, t = np.asarray(probs, np.float64), np.asarray(targets)
    if p.ndim != 2 or t.shape != (len(p),) or len(p) == 0:
        raise ValueError(f"probs must be (N, C) and targets (N,), N > 0; got {p.shape} and {t.shape}")
    if not np.issubdtype(t.dtype, np.integer) or t.min() < 0 or t.max() >= p.shape[1]:
        raise ValueError(f"targets must be integer class indices in [0, {p.shape[1]})")
    if np.isnan(p).any() or p.min() < 0 or p.max() > 1:
        raise ValueError("probs must be probabilities in [0, 1] (not logits), without NaN")
    return p, t
