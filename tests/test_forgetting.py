"""Forgetting arithmetic on hand-made R matrices, and the distillation loss against hand computations."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tabulate import tabulate

from bench.kinds import make_spec
from bench.report.forgetting import average_final, bwt, forgetting

# Stages: accuracy task a, MAE task m (lower is better), accuracy task c.
R = [[0.80, 0.50, 0.30],
     [0.78, 0.40, 0.35],
     [0.77, 0.44, 0.90]]
HIGHER = [True, False, True]


def test_drop_and_pass_fail_follow_metric_direction():
    f = forgetting(R, HIGHER, threshold=5.0)
    np.testing.assert_allclose(f.baseline, [0.80, 0.40, 0.90])
    np.testing.assert_allclose(f.final, [0.77, 0.44, 0.90])
    # a: 100 * 0.03 / 0.80; m: MAE rose 0.40 -> 0.44, so +10 % worse; c: its own stage is the last
    np.testing.assert_allclose(f.drop_pct, [3.75, 10.0, 0.0])
    assert f.passed.tolist() == [True, False, True]
    assert forgetting(R, HIGHER, threshold=12.0).passed.all()


def test_improvement_is_a_negative_drop():
    f = forgetting([[0.5, 0.1], [0.6, 0.9]], [True, True], threshold=5.0)
    np.testing.assert_allclose(f.drop_pct, [-20.0, 0.0])


def test_bwt_is_mean_signed_change_of_earlier_tasks():
    # a: 0.77 - 0.80 = -0.03; m: MAE 0.40 -> 0.44 counts as -0.04 (worse); c is the last: excluded
    assert bwt(R, HIGHER) == pytest.approx(-0.035)
    assert bwt(R, HIGHER, tasks=[0, 2]) == pytest.approx(-0.03)
    assert math.isnan(bwt([[0.7]], [True]))
    # Lopez-Paz & Ranzato's accuracy-only case
    assert bwt([[0.9, 0.1], [0.6, 0.8]], [True, True]) == pytest.approx(-0.3)


def test_average_final_over_chosen_tasks():
    assert average_final(R, tasks=[0, 2]) == pytest.approx((0.77 + 0.90) / 2)
    assert average_final(R) == pytest.approx((0.77 + 0.44 + 0.90) / 3)


def test_non_square_r_is_refused():
    with pytest.raises(ValueError, match="square"):
        forgetting([[0.1, 0.2]], [True, True], 5.0)


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_multiclass_distillation_is_t2_kl_of_softened_softmaxes():
    spec = make_spec("multiclass", name="c", classes=3)
    student, teacher, temp = [[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]], [[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]], 2.0
    expected = sum(_kl(_softmax([v / temp for v in t]), _softmax([v / temp for v in s]))
                   for s, t in zip(student, teacher)) / 2 * temp**2
    got = spec.distill(torch.tensor(student), torch.tensor(teacher), temp)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert spec.distill(torch.tensor(teacher), torch.tensor(teacher), temp).item() == pytest.approx(0, abs=1e-6)


def test_binary_distillation_is_t2_bernoulli_kl_of_softened_sigmoids():
    spec = make_spec("binary", name="b", classes=2)
    student, teacher, temp = [0.5, -1.0], [2.0, 0.0], 3.0
    sig = lambda z: 1 / (1 + math.exp(-z / temp))  # noqa: E731
    expected = sum(_kl([sig(t), 1 - sig(t)], [sig(s), 1 - sig(s)]) for s, t in zip(student, teacher)) / 2 * temp**2
    got = spec.distill(torch.tensor(student)[:, None], torch.tensor(teacher)[:, None], temp)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_regression_distillation_is_mse():
    spec = make_spec("regression", name="r", dim=2)
    student, teacher = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 2.0], [3.0, 1.0]])
    assert spec.distill(student, teacher, 2.0).item() == pytest.approx((1 + 0 + 9 + 1) / 4)


def test_a_drop_from_a_zero_baseline_is_undefined_with_no_verdict(tmp_path):
    """Issue 12, item 7: a task at 0 right after its own stage has no relative drop (it was -inf and 'pass')."""
    R0 = [[0.0, 0.2], [0.4, 0.8]]  # task a scored 0 after its own stage; b is the last stage
    f = forgetting(R0, [True, True], threshold=5.0)
    assert math.isnan(f.drop_pct[0]) and f.drop_pct[1] == 0.0
    assert f.passed.tolist() == [False, True]  # False: no pass (drop_pct says why)

    from bench.report import sections  # noqa: F401  (it imports forgetting_section, which needs it first)
    from bench.report.forgetting_section import _strategy_block

    specs = {t: make_spec("multiclass", name=t, classes=2) for t in "ab"}
    R1 = [[0.5, 0.2], [0.4, 0.8]]  # another seed: a drops 20 %
    d = SimpleNamespace(table=lambda name, rows: tabulate(rows, headers="keys", tablefmt="github",
                                                          disable_numparse=True))  # the Markdown, no CSV
    text = _strategy_block(d, "lwf", ["a", "b"], np.array([R0, R1], dtype=float), 5.0, specs)
    row_a = next(line for line in text.splitlines() if line.startswith("| a "))
    cells = [c.strip() for c in row_a.split("|")[1:-1]]
    assert cells[-2:] == ["undefined (baseline 0 on 1 of 2 seeds)", "-"]
    assert "inf" not in text and "pass" in next(line for line in text.splitlines() if line.startswith("| b "))
