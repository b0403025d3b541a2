"""Metrics, losses and predictions per task kind, against numbers worked out by hand; and
stratified sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.data import stratified_sample
from bench.kinds import make_spec
from bench.kinds.classification import classification_metrics, confusion

THREE = make_spec("multiclass", name="t", classes=3)
BINARY = make_spec("binary", name="b", classes=2)


def _one_hot(y: list[int], classes: int) -> np.ndarray:
    return np.eye(classes)[y]


def test_multiclass_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = [0, 1, 1, 1, 2, 0]
    # class 0: tp 1 of 2 predicted, 2 true -> P 1/2, R 1/2, F1 1/2
    # class 1: tp 2 of 3 predicted, 2 true -> P 2/3, R 1, F1 4/5
    # class 2: tp 1 of 1 predicted, 2 true -> P 1, R 1/2, F1 2/3
    m = THREE.metrics(_one_hot(y_pred, 3), y_true)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert m["macro_precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["macro_recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    # rows are true classes, columns predicted
    assert confusion(np.array(y_pred), y_true, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_macro_f1_weights_classes_not_items():
    y_true = np.array([0] * 8 + [1] * 2)
    y_pred = np.zeros(10, dtype=int)  # always the majority class
    m = classification_metrics(y_pred, y_true, 2)
    assert m["accuracy"] == pytest.approx(0.8)
    # class 0: P 0.8, R 1 -> F1 8/9; class 1: never predicted -> F1 0
    assert m["macro_f1"] == pytest.approx((8 / 9 + 0) / 2)
    assert m["weighted_f1"] == pytest.approx(0.8 * 8 / 9)


def test_binary_prediction_loss_and_metrics():
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])  # (B, 1)
    target = torch.tensor([1, 0, 0, 0])
    pred = BINARY.to_prediction(logits)
    p = torch.sigmoid(logits.squeeze(1))
    assert torch.allclose(pred, torch.stack([1 - p, p], 1))
    expected = -np.mean([math.log(p[0]), math.log(1 - p[1]), math.log(1 - p[2]), math.log(1 - p[3])])
    assert BINARY.loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    m = BINARY.metrics(pred.numpy(), target.numpy())
    assert m["accuracy"] == pytest.approx(3 / 4)  # 0.5 -> p 0.62 -> class 1, wrong


def test_regression_metrics_and_loss_by_hand():
    spec = make_spec("regression", name="r", dim=1)
    pred, target = np.array([[1.0], [2.0], [4.0]]), np.array([[1.5], [2.0], [1.0]])
    m = spec.metrics(pred, target)
    assert m == pytest.approx({"mae": (0.5 + 0 + 3) / 3, "rmse": math.sqrt((0.25 + 0 + 9) / 3)})
    assert spec.loss(torch.tensor(pred), torch.tensor(target)).item() == pytest.approx((0.25 + 9) / 3)
    assert spec.primary == "mae" and not spec.higher_is_better and spec.out_channels == 1


def test_regression_metrics_over_several_outputs_match_sklearn():
    # shapes' `counts` predicts one value per shape type: MAE and RMSE run over items and outputs alike
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    spec = make_spec("regression", name="counts", dim=3)
    pred = np.array([[1.0, 0.0, 2.0], [0.5, 1.0, 1.0]])
    target = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 3.0]])
    m = spec.metrics(pred, target)
    assert m["mae"] == pytest.approx(mean_absolute_error(target, pred))  # (0 + 1 + 2 + 0.5 + 0 + 2) / 6
    assert m["mae"] == pytest.approx(5.5 / 6)
    assert m["rmse"] == pytest.approx(math.sqrt(mean_squared_error(target, pred)))  # sqrt((1 + 4 + 0.25 + 4) / 6)


def test_multiclass_loss_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([0, 2])
    expected = (-math.log(math.e**2 / (math.e**2 + 2)) + math.log(3)) / 2
    assert THREE.loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind 'ordinal'; valid: binary, detection, multiclass, regression, segmentation"):
        make_spec("ordinal", name="x")


def test_stratified_sample_keeps_class_shares():
    shuffle = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[shuffle]
    idx = stratified_sample(labels, 20, torch.Generator().manual_seed(1))
    assert len(idx) == 20 and len(idx.unique()) == 20
    assert torch.equal(idx, idx.sort().values)
    assert torch.bincount(labels[idx]).tolist() == [10, 6, 4]
    again = stratified_sample(labels, 20, torch.Generator().manual_seed(1))
    assert torch.equal(idx, again)


def test_stratified_sample_rounds_by_largest_remainder():
    labels = torch.tensor([0] * 7 + [1] * 2 + [2] * 1)
    # shares of 5: 3.5, 1.0, 0.5 -> floors 3, 1, 0 sum to 4; the one left goes to a largest remainder (0.5)
    counts = torch.bincount(labels[stratified_sample(labels, 5, torch.Generator().manual_seed(0))], minlength=3)
    assert counts.tolist() in ([4, 1, 0], [3, 1, 1])
