"""Diagnostics computed from stored predictions: pure functions of arrays, no files, no figures.

Per-class accuracy and the most confused class pairs (from confusion matrices, rows true), the
distribution of regression residuals (pred - target, pooled over output dimensions), and the
labels of the stored highest-loss test images (the runner keeps those images; see `bench.runner`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.kinds import TaskSpec

SHAPIRO_MAX_N = 5000  # scipy's Shapiro-Wilk p-value is accurate only up to N = 5000 (it warns above)


def per_class_accuracy(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall of each true class (NaN where it has no test item) and its support, from (C, C) counts."""
    support = cm.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(support > 0, np.diag(cm) / support, np.nan)
    return acc, support


def top_confusions(cm: np.ndarray, k: int) -> list[dict]:
    """The k largest off-diagonal cells of (C, C) counts (rows true), largest first, ties by (true, pred).

    Each: true and predicted class index, count, and share of that true class's items.
    """
    off = cm.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off.ravel(), kind="stable")[:k]  # stable: equal counts keep row-major order
    support = cm.sum(1)
    pairs = []
    for i, j in zip(*np.unravel_index(flat, cm.shape)):
        if off[i, j] > 0:
            pairs.append({"true": int(i), "predicted": int(j), "count": int(off[i, j]),
                          "share": float(off[i, j] / support[i])})
    return pairs


def residuals(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """pred - target as float64, pooled over output dimensions: (N * dim,)."""
    n = len(pred)
    return (pred.astype(np.float64).reshape(n, -1) - target.astype(np.float64).reshape(n, -1)).ravel()


def shapiro_sample(r: np.ndarray) -> np.ndarray:
    """`r` itself, or a fixed random subsample of SHAPIRO_MAX_N items (seed 0, original order kept)."""
    if len(r) <= SHAPIRO_MAX_N:
        return r
    return r[np.sort(np.random.default_rng(0).choice(len(r), SHAPIRO_MAX_N, replace=False))]


def residual_stats(r: np.ndarray) -> dict[str, float]:
    """Mean, std (ddof=1), skewness, excess kurtosis (Fisher; 0 for a normal) and Shapiro-Wilk p of `r`."""
    from scipy import stats  # here, not at the top: only regression tasks pay for importing scipy.stats (~1 s)

    sample = shapiro_sample(r)
    return {"n": len(r), "mean": float(r.mean()), "std": float(r.std(ddof=1)),
            "skewness": float(stats.skew(r)), "kurtosis": float(stats.kurtosis(r)),
            "shapiro_p": float(stats.shapiro(sample).pvalue) if len(sample) >= 3 else float("nan"),
            "shapiro_n": len(sample)}


@dataclass
class Example:
    """One stored high-loss test image with what the report prints under it."""

    image: np.ndarray  # (C, H, W) uint8
    index: int  # position in the test set
    true: str
    predicted: str
    loss: float


def hardest_examples(spec: TaskSpec, arrays: dict[str, np.ndarray], task: str) -> list[Example]:
    """The gallery the runner stored for `task` in one cell's predictions, highest loss first."""
    if f"gallery_index__{task}" not in arrays:
        return []
    idx = arrays[f"gallery_index__{task}"]
    pred, target = arrays[f"pred__{task}"][idx].astype(np.float32), arrays[f"target__{task}"][idx]
    images, losses = arrays[f"gallery_x__{task}"], arrays[f"gallery_loss__{task}"]
    return [Example(images[n], int(i), spec.describe(target[n]), spec.describe(pred[n], predicted=True),
                    float(losses[n])) for n, i in enumerate(idx)]
