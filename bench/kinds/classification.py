"""Classification kinds: `multiclass` (C logits, softmax) and `binary` (one logit, sigmoid).

Targets: (N,) int64 class indices. Predictions: class probabilities (N, C) (binary: (N, 2)).
Metrics: accuracy (primary) and macro / weighted precision, recall and F1 as scikit-learn
defines them (macro over the labels present in the targets or the predictions).
Distillation: T^2 * KL(teacher || student) of temperature-softened distributions (Hinton et al.
2015); a binary logit z is the two-class distribution (1 - sigmoid(z), sigmoid(z)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bench.kinds import PERCENT, FeatureInfo, TaskSpec, masked_mean, register

if TYPE_CHECKING:
    import torch

PROB_FLOOR = 1e-7  # probabilities are clipped here before the log: float16 storage rounds tiny ones to 0


class Classification(TaskSpec):
    """What multiclass and binary share: probabilities as predictions, their metrics and report panels."""

    primary = "accuracy"
    lower_is_better = frozenset({"loss", "nll", "ece"})
    columns = (("accuracy", "acc %"), ("macro_f1", "macro-F1 %"))
    display = PERCENT
    panels = frozenset({"class_metrics", "confusion", "per_class", "hardest"})

    def head(self, features: FeatureInfo, **cfg):
        from bench.kinds.heads import mlp_head

        return mlp_head(features, self.out_channels, **cfg)

    def stratify_labels(self, target):
        return target

    def check_targets(self, target, *, image_size, where):
        bad = ((target < 0) | (target >= self.classes)).nonzero()
        if len(bad):
            i = int(bad[0, 0])
            raise ValueError(f"{where}: task {self.name}, item {i}: class {int(target[i])} "
                             f"outside 0..{self.classes - 1}")

    def unflip_output(self, out):
        return out

    def metrics(self, pred, target):
        return classification_metrics(pred.argmax(1), target.astype(np.int64), self.classes)

    def item_losses(self, pred, target):
        """-log p(true class), the cross-entropy without label smoothing."""
        pred = pred.astype(np.float64).reshape(len(pred), -1)
        p = pred[np.arange(len(pred)), target.astype(np.int64)]
        return -np.log(np.maximum(p, PROB_FLOOR))

    def combine(self, preds):
        # float64 sum: the stored predictions are float16
        return np.mean([p.astype(np.float64) for p in preds], axis=0).astype(np.float32)

    def describe(self, value, predicted=False):
        return self.label(int(np.argmax(value)) if predicted else int(value))


@register("multiclass")
class Multiclass(Classification):
    """`classes` logits; cross-entropy (with optional label smoothing)."""

    @property
    def out_channels(self) -> int:
        return self.classes

    def loss(self, out, target, *, label_smoothing=0.0, labelled=None):
        import torch.nn.functional as F

        if labelled is None:
            return F.cross_entropy(out.float(), target, label_smoothing=label_smoothing)
        per_item = F.cross_entropy(out.float(), target, label_smoothing=label_smoothing, reduction="none")
        return masked_mean(per_item, labelled)

    def to_prediction(self, out):
        return out.float().softmax(1)

    def distill(self, student, teacher, temperature=2.0):
        return _softened_kl(student.float(), teacher.float().detach(), temperature)


@register("binary")
@dataclass(frozen=True, kw_only=True)
class Binary(Classification):
    """One logit; binary cross-entropy, label smoothing towards 0.5."""

    classes: int = 2

    @property
    def out_channels(self) -> int:
        return 1

    def loss(self, out, target, *, label_smoothing=0.0, labelled=None):
        import torch.nn.functional as F

        t = target.float()
        if label_smoothing:
            t = t * (1 - label_smoothing) + 0.5 * label_smoothing
        if labelled is None:
            return F.binary_cross_entropy_with_logits(out.float().squeeze(1), t)
        per_item = F.binary_cross_entropy_with_logits(out.float().squeeze(1), t, reduction="none")
        return masked_mean(per_item, labelled)

    def to_prediction(self, out):
        import torch

        p = out.float().squeeze(1).sigmoid()
        return torch.stack([1 - p, p], 1)

    def distill(self, student, teacher, temperature=2.0):
        import torch.nn.functional as F

        # (B, 1) -> (B, 2): a zero logit first, so softmax gives (1 - sigmoid(z), sigmoid(z))
        return _softened_kl(F.pad(student.float(), (1, 0)), F.pad(teacher.float().detach(), (1, 0)), temperature)


def _softened_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) of softmax(logits / T) over dim 1, averaged over the batch."""
    import torch.nn.functional as F

    log_s, log_t = F.log_softmax(student / temperature, 1), F.log_softmax(teacher / temperature, 1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * temperature**2


def confusion(y_pred: np.ndarray, y_true: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts; rows are true classes, columns predicted."""
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)


def classification_metrics(y_pred: np.ndarray, y_true: np.ndarray, classes: int) -> dict[str, float]:
    """accuracy, and macro_ / weighted_ precision, recall and f1, each a fraction in [0, 1].

    `y_pred`, `y_true`: (N,) integer class indices in [0, classes). Per label k, with tp, fp, fn its
    counts: precision = tp / (tp + fp), recall = tp / (tp + fn), F1 = 2 tp / (2 tp + fp + fn), and 0
    where a denominator is 0 (scikit-learn's zero_division default, which also warns; this does not).
    Macro: the unweighted mean over the labels present in y_true *or* y_pred, as scikit-learn's
    `unique_labels` (a label only predicted has recall 0 and F1 0 and pulls the average down).
    Weighted: by each label's support (count in y_true), so weighted recall = accuracy. Equals
    sklearn.metrics.accuracy_score and precision_recall_fscore_support(average="macro" / "weighted")
    with labels=None (tested), in numpy only: training scores with it and must not import sklearn.
    Raises ValueError for empty or mismatched inputs or labels out of range.
    """
    y_pred, y_true = np.asarray(y_pred), np.asarray(y_true)
    if y_pred.shape != y_true.shape or y_pred.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"y_pred and y_true must be non-empty (N,), got {y_pred.shape} and {y_true.shape}")
    for name, y in (("y_pred", y_pred), ("y_true", y_true)):
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= classes:
            raise ValueError(f"{name} must hold integer labels in [0, {classes})")
    cm = confusion(y_pred, y_true, classes)
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
