"""What a task is (TaskSpec) and everything that dispatches on its kind: outputs, losses, metrics.

A new task kind touches only this module. Kinds:
- multiclass: `classes` logits, cross-entropy, accuracy + macro F1 (primary: accuracy);
  distillation: KL between temperature-softened softmaxes.
- binary: one logit, binary cross-entropy, accuracy + macro F1 (primary: accuracy);
  distillation: KL between temperature-softened Bernoullis (sigmoids).
- regression: `dim` outputs, MSE, MAE + RMSE (primary: MAE, lower is better); distillation: MSE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

KINDS = ("multiclass", "binary", "regression")


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str
    kind: str
    classes: int = 0  # multiclass / binary: number of classes (binary: 2)
    dim: int = 1  # regression: number of outputs
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: unknown kind {self.kind!r}; valid: {', '.join(KINDS)}")

    @property
    def out_dim(self) -> int:
        return {"multiclass": self.classes, "binary": 1, "regression": self.dim}[self.kind]

    @property
    def is_classification(self) -> bool:
        return self.kind != "regression"

    @property
    def primary(self) -> str:
        return "accuracy" if self.is_classification else "mae"

    @property
    def higher_is_better(self) -> bool:
        return self.is_classification

    @classmethod
    def from_dict(cls, d: dict) -> "TaskSpec":
        """Rebuild a spec stored as JSON (`dataclasses.asdict`) in a cell's metrics.json."""
        return cls(**{**d, "class_names": tuple(d.get("class_names", ()))})

    def label(self, i: int) -> str:
        return self.class_names[i] if i < len(self.class_names) else str(i)


def loss(spec: TaskSpec, out: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean loss of one task. out: (B, out_dim) float; target: (B,) int64 or (B, dim) float."""
    out = out.float()
    if spec.kind == "multiclass":
        return F.cross_entropy(out, target, label_smoothing=label_smoothing)
    if spec.kind == "binary":
        t = target.float()
        if label_smoothing:
            t = t * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(out.squeeze(1), t)
    return F.mse_loss(out, target.float().view_as(out))


PROB_FLOOR = 1e-7  # probabilities are clipped here before the log: float16 storage rounds tiny ones to 0


def per_sample_loss(spec: TaskSpec, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(N,) loss of each item from stored predictions, matching `loss` without label smoothing.

    Classification: -log p(true class) from probabilities (N, C) (binary's (N, 2) too, = BCE).
    Regression: squared error averaged over the output dimensions (N, dim).
    """
    pred = pred.astype(np.float64).reshape(len(pred), -1)
    if spec.is_classification:
        p = pred[np.arange(len(pred)), target.astype(np.int64)]
        return -np.log(np.maximum(p, PROB_FLOOR))
    return ((pred - target.astype(np.float64).reshape(len(target), -1)) ** 2).mean(1)


def distill(spec: TaskSpec, student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Mean distillation loss pulling `student` outputs towards a frozen `teacher`'s. Both (B, out_dim).

    Classification: T^2 * KL(teacher || student) of the outputs softened by temperature T, averaged
    over the batch (Hinton et al. 2015; the T^2 keeps gradients the same size for any T). A binary
    logit z becomes the two logits (0, z), whose softmax is (1 - sigmoid(z), sigmoid(z)).
    Regression: MSE (temperature unused).
    """
    s, t = student.float(), teacher.float().detach()
    if spec.kind == "regression":
        return F.mse_loss(s, t)
    if spec.kind == "binary":
        s, t = F.pad(s, (1, 0)), F.pad(t, (1, 0))  # (B, 1) -> (B, 2): a zero logit first
    log_s, log_t = F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * temperature**2


def to_prediction(spec: TaskSpec, out: torch.Tensor) -> torch.Tensor:
    """Model output -> what is stored and averaged by ensembles: class probabilities or values."""
    out = out.float()
    if spec.kind == "multiclass":
        return out.softmax(1)
    if spec.kind == "binary":
        p = out.squeeze(1).sigmoid()
        return torch.stack([1 - p, p], 1)
    return out


def metrics(spec: TaskSpec, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Metrics from stored predictions (probabilities (N, C) or values (N, dim)) and targets."""
    if spec.is_classification:
        return classification_metrics(pred.argmax(1), target, spec.classes)
    err = pred.reshape(len(pred), -1) - target.reshape(len(target), -1)
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean()))}


def confusion(y_pred: np.ndarray, y_true: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts; rows are true classes, columns predicted."""
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(classes, classes)


def classification_metrics(y_pred: np.ndarray, y_true: np.ndarray, classes: int) -> dict[str, float]:
    """Accuracy plus macro / weighted precision, recall and F1 over the classes present in y_true."""
    cm = confusion(y_pred, y_true, classes).astype(float)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    weights = support / support.sum()
    out = {"accuracy": float(tp.sum() / cm.sum())}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"macro_{name}"] = float(values[present].mean())
        out[f"weighted_{name}"] = float((values * weights).sum())
    return out


def higher_is_better(metric: str) -> bool:
    return metric not in ("mae", "rmse", "loss")
