"""Accuracy and macro / weighted precision, recall and F1 as scikit-learn defines them, in numpy only
(the training path scores with this and must not import scikit-learn).

scikit-learn's averages run over the labels present in the targets *or* the predictions
(`sklearn.utils.multiclass.unique_labels`); a label that is only predicted has recall 0 and F1 0 and
pulls the macro average down. Averaging over the target labels alone (the old rule) reported
macro-F1 0.833 for predictions [0, 0, 1, 2] against targets [0, 0, 1, 1], where scikit-learn says
0.556 (issue 12, item 9).
"""

from __future__ import annotations

import numpy as np


def classification_metrics(y_pred: np.ndarray, y_true: np.ndarray, classes: int) -> dict[str, float]:
    """accuracy, and macro_ / weighted_ precision, recall and f1, each a fraction in [0, 1].

    `y_pred`, `y_true`: (N,) integer class indices in [0, classes). Per label k, with tp, fp, fn its
    counts: precision = tp / (tp + fp), recall = tp / (tp + fn), F1 = 2 tp / (2 tp + fp + fn), and 0
    where a denominator is 0 (scikit-learn's zero_division default, which also warns; this does not).
    Macro: the unweighted mean over labels present in y_true or y_pred. Weighted: weighted by each
    label's support (count in y_true), so weighted recall = accuracy. Equals
    sklearn.metrics.accuracy_score and precision_recall_fscore_support(average="macro" / "weighted")
    with labels=None (tested). Raises ValueError for empty or mismatched inputs or labels out of range.
    """
    y_pred, y_true = np.asarray(y_pred), np.asarray(y_true)
    if y_pred.shape != y_true.shape or y_pred.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"y_pred and y_true must be non-empty (N,), got {y_pred.shape} and {y_true.shape}")
    for name, y in (("y_pred", y_pred), ("y_true", y_true)):
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= classes:
            raise ValueError(f"{name} must hold integer labels in [0, {classes})")
    cm = np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)  # (classes,) each; rows are true labels
    fp, fn = predicted - tp, support - tp
    present = (support + predicted) > 0  # scikit-learn's labels: seen in y_true or y_pred
    scores = {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}
    out = {"accuracy": float(tp.sum() / len(y_true))}
    for name, values in scores.items():
        out[f"macro_{name}"] = float(values[present].mean())
        out[f"weighted_{name}"] = float((values * support).sum() / support.sum())
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den per label, 0 where den is 0 (zero_division=0)."""
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)
