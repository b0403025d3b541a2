"""The report's statistics against scipy, scikit-learn, torchmetrics and hand-worked numbers.

Each test would fail for the usual slips: population instead of sample std, a one-sided p, Holm
without its running maximum, McNemar's b and c swapped, images resampled separately per seed,
macro averages over the target labels only.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from bench.report import stats as S
from bench.kinds.classification import classification_metrics
from bench.report.prediction_stats import (NLL_FLOOR, bootstrap_difference, expected_calibration_error,
                                           mcnemar_exact, nll)

CIFAR = Path(__file__).resolve().parent / "data" / "h100_store" / "cifar_mtl"  # the store issue 8 quotes


# --- seed-level statistics -------------------------------------------------------------------------

def test_t_interval_hand_and_scipy():
    # [1, 2, 3, 4]: mean 2.5, s = 1.2910 (ddof=1), se = 0.6455, t_{0.975, 3} = 3.1824 -> +- 2.0543
    mean, low, high, n = S.t_interval([1.0, 2.0, 3.0, 4.0])
    assert (mean, n) == (2.5, 4)
    assert (low, high) == pytest.approx((0.44573, 4.55427), abs=1e-5)  # ddof=0 would give +- 1.779
    v = np.array([0.8384, 0.8445, 0.8352, 0.8411, 0.8290])
    want = st.t.interval(0.9, len(v) - 1, loc=v.mean(), scale=st.sem(v))
    assert S.t_interval(v, 0.9)[1:3] == pytest.approx(want, rel=1e-12)
    assert S.t_interval(v)[1:3] == pytest.approx(tuple(st.ttest_1samp(v, 0).confidence_interval(0.95)), rel=1e-12)


def test_t_interval_small_and_invalid():
    assert S.t_interval([3.0, math.nan, None])[0] == 3.0 and S.t_interval([3.0, math.nan])[3] == 1
    assert all(math.isnan(x) for x in S.t_interval([3.0])[1:3])  # one seed: no interval
    assert math.isnan(S.t_interval([])[0]) and S.t_interval([]).n == 0
    with pytest.raises(ValueError, match="confidence"):
        S.t_interval([1.0, 2.0], 95)


def test_paired_difference_matches_ttest_rel():
    a, b = np.array([84.1, 83.7, 84.9, 83.2]), np.array([84.5, 84.0, 84.6, 84.1])
    d = S.paired_difference(a, b)
    ref = st.ttest_rel(a, b)
    assert d.p == pytest.approx(ref.pvalue, rel=1e-12)  # two-sided: a one-sided p would be half (or 1 - half)
    assert (d.low, d.high) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-12)
    assert d.differences == pytest.approx(tuple(a - b)) and d.n == 4
    assert d.mean == pytest.approx(-0.325)
    assert d.percent == pytest.approx(100 * -0.325 / b.mean())
    assert d.percent_low == pytest.approx(100 * d.low / b.mean())


def test_paired_difference_percent_interval_is_the_interval_over_the_reference_mean():
    # Both ends of the % interval are scipy's interval of the differences, x 100 / |mean reference|; the
    # reference's sign does not flip them (a drop stays negative against a negative reference).
    a, b = np.array([0.62, 0.70, 0.66]), np.array([0.60, 0.64, 0.65])
    ci = st.ttest_rel(a, b).confidence_interval(0.95)
    d = S.paired_difference(a, b)
    assert (d.percent_low, d.percent_high) == pytest.approx((100 * ci.low / 0.63, 100 * ci.high / 0.63), rel=1e-9)
    neg = S.paired_difference(-a, -b)  # differences -0.02, -0.06, -0.01 against a mean of -0.63
    assert (neg.percent_low, neg.percent_high) == pytest.approx((-100 * ci.high / 0.63, -100 * ci.low / 0.63),
                                                                rel=1e-9)


def test_paired_difference_edges():
    same = S.paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.mean == 0 and same.p == 1.0  # scipy says NaN for zero spread; nothing differs
    one = S.paired_difference([1.0], [0.5])
    assert one.n == 1 and math.isnan(one.p) and math.isnan(one.low)
    with pytest.raises(ValueError, match="equal length"):
        S.paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        S.paired_difference([1.0, math.nan], [1.0, 2.0])


def test_pair_by_seed_keeps_seeds_present_in_both():
    seeds, a, b = S.pair_by_seed({0: 0.8, 1: 0.7, 2: math.nan, 3: 0.9}, {1: 0.6, 0: 0.5, 2: 0.4, 4: 0.3})
    assert seeds == [0, 1] and a.tolist() == [0.8, 0.7] and b.tolist() == [0.5, 0.6]


def test_holm_hand_worked():
    # Wikipedia, "Holm-Bonferroni method", example: p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05 rejects
    # H1 and H4. Sorted: 4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, 1 x 0.04 = 0.04 -> 0.06
    # (the running maximum keeps the adjusted values in the order of the raw ones).
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])
    assert S.holm([0.9, 0.6]).tolist() == [1.0, 1.0]  # 2 x 0.6 = 1.2, capped at 1


def test_holm_nan_passes_through_and_does_not_count():
    out = S.holm([0.01, math.nan, 0.04])
    assert math.isnan(out[1]) and out[[0, 2]] == pytest.approx([0.02, 0.04])  # m = 2, not 3
    assert S.holm([]).shape == (0,)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.holm([0.5, 1.2])


def _holm_rejects(p: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's procedure as he states it: step through the sorted p-values, reject while p_(j) <= alpha / (m - j + 1)."""
    reject, m = np.zeros(len(p), bool), len(p)
    for j, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - j):
            break
        reject[i] = True
    return reject


def test_holm_adjusted_p_is_the_smallest_level_that_rejects():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = np.concatenate([rng.uniform(0, 0.02, rng.integers(1, 5)), rng.uniform(0, 1, rng.integers(0, 8))])
        adj = S.holm(p)
        for alpha in (0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
            assert np.array_equal(adj <= alpha, _holm_rejects(p, alpha)), (p, alpha)


def test_holm_matches_statsmodels():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = np.random.default_rng(1).uniform(0, 0.1, 12)
    assert S.holm(p) == pytest.approx(multipletests(p, method="holm")[1], rel=1e-12)


@pytest.mark.parametrize("difference, p, higher, want", [
    (+1.2, 0.01, True, "win"), (-1.2, 0.01, True, "loss"), (+1.2, 0.2, True, "tie"),
    (-0.004, 0.01, False, "win"), (+0.004, 0.01, False, "loss"),  # MAE: lower is better
    (+1.2, 0.05, True, "tie"),  # significant means adjusted p < alpha
    (+1.2, math.nan, True, "n/a"),
])
def test_win_tie_loss(difference, p, higher, want):
    assert S.win_tie_loss(difference, p, higher) == want


def _cifar_accuracy(cell: str, task: str) -> float:
    return json.loads((CIFAR / cell / "metrics.json").read_text())["test"][task]["accuracy"]


def test_delta_m_interval_reproduces_cifar_mtl_hard_share():
    """Issue 8's example: hard sharing's delta_m +0.29 +- 0.32 (n = 3) has a 95% t-interval of about
    [-0.51, +1.10] and p about 0.26 (committed results, seeds 0-2, each paired with STL's seed)."""
    tasks = ("class10", "animal")
    per_seed = [S.delta_m({t: _cifar_accuracy(f"cifar10__hard_share__seed{s}", t) for t in tasks},
                          {t: _cifar_accuracy(f"cifar10__stl(task={t})__seed{s}", t) for t in tasks},
                          dict.fromkeys(tasks, True)) for s in range(3)]
    assert S.fmt_mean_std(per_seed) == "0.29 ± 0.32"
    mean, low, high, n = S.delta_m_interval(per_seed)
    assert n == 3 and mean == pytest.approx(0.2927, abs=1e-4)
    assert (low, high) == pytest.approx((-0.5117, 1.0970), abs=1e-4)
    assert S.ttest_p(per_seed) == pytest.approx(0.2579, abs=1e-4)


def test_binomial_se_against_scipy():
    assert S.binomial_se(0.8384, 10_000) == pytest.approx(st.binom(10_000, 0.8384).std() / 10_000, rel=1e-12)
    assert S.binomial_se(0.5, 100) == pytest.approx(0.05)
    assert S.binomial_se(1.0, 50) == 0.0
    with pytest.raises(ValueError, match="fraction"):
        S.binomial_se(83.84, 10_000)
    with pytest.raises(ValueError, match="positive"):
        S.binomial_se(0.5, 0)


def test_mean_std_unchanged():
    assert S.mean_std([1.0, 2.0, math.nan, 3.0]) == (2.0, 1.0, 3)
    assert S.fmt_mean_std([0.5], 100) == "50.00" and S.fmt_mean_std([]) == "-"
    assert S.delta_m({"a": 0.9, "m": 0.9}, {"a": 1.0, "m": 1.0}, {"a": True, "m": False}) == pytest.approx(0.0)


# --- paired tests on the test images ---------------------------------------------------------------

def test_mcnemar_exact_hand_and_binomtest():
    a = np.array([1] * 7 + [0] * 2 + [1] * 5 + [0] * 3, bool)  # 7 only A right, 2 only B right, 5 both, 3 neither
    b = np.array([0] * 7 + [1] * 2 + [1] * 5 + [0] * 3, bool)
    res = mcnemar_exact(a, b)
    assert (res.b, res.c) == (7, 2)
    assert res.p == pytest.approx(92 / 512)  # P(X <= 2) + P(X >= 7), X ~ Bin(9, 1/2): 2 (1 + 9 + 36) / 512
    assert res.p == pytest.approx(st.binomtest(7, 9, 0.5).pvalue)
    assert mcnemar_exact(b, a)[:2] == (2, 7)
    assert mcnemar_exact(a, a) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="same|both"):
        mcnemar_exact(a, b[:-1])


def test_bootstrap_identical_models():
    c = np.random.default_rng(0).random((3, 1000)) < 0.8
    res = bootstrap_difference(c, c, n_boot=2000)
    assert (res.mean, res.low, res.high, res.p) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_clear_difference():
    b = np.ones((3, 2000), bool)
    b[:, :600] = False  # B wrong on 30% of the images, A right everywhere
    a = np.ones_like(b)
    res = bootstrap_difference(a, b, n_boot=5000)
    assert res.mean == pytest.approx(0.3) and res.low > 0.27 and res.high < 0.33
    assert res.p == pytest.approx(2 / 5001)  # the smallest p this many replicates can give
    swapped = bootstrap_difference(b, a, n_boot=5000)
    assert swapped.mean == pytest.approx(-0.3) and swapped.high < 0 and swapped.p == res.p
    assert bootstrap_difference(a, b, n_boot=500, seed=3) == bootstrap_difference(a, b, n_boot=500, seed=3)


def test_bootstrap_spread_images_shared_across_seeds():
    rng = np.random.default_rng(1)
    n = 4000
    a1, b1 = rng.random(n) < 0.85, rng.random(n) < 0.80
    sd_image = np.sqrt((a1.astype(float) - b1).var() / n)  # the image bootstrap's SE of a mean difference
    one = bootstrap_difference(a1[None], b1[None], n_boot=4000)
    assert (one.high - one.low) / (2 * 1.96) == pytest.approx(sd_image, rel=0.1)
    # Three seeds that agree on every image: resampling images per seed independently would shrink the
    # spread by sqrt(3); shared images keep it.
    three = bootstrap_difference(np.tile(a1, (3, 1)), np.tile(b1, (3, 1)), n_boot=4000)
    assert (three.high - three.low) / (2 * 1.96) == pytest.approx(sd_image, rel=0.1)


def test_bootstrap_spread_over_seeds():
    # Each seed right on a fixed share of images, no image noise within a seed (A's images nest B's):
    # the spread is the seeds' bootstrap spread, sqrt(var_pop(seed differences) / S).
    n, shares = 1000, [0.02, 0.05, 0.08, 0.11]
    a = np.ones((4, n), bool)
    b = np.stack([np.arange(n) >= s * n for s in shares])
    res = bootstrap_difference(a, b, n_boot=8000)
    assert res.mean == pytest.approx(np.mean(shares))
    boot_sd = np.std(shares) / 2  # ddof=0, S = 4
    assert (res.high - res.low) / (2 * 1.96) == pytest.approx(boot_sd, rel=0.15)


def test_bootstrap_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(S, N\)"):
        bootstrap_difference(np.ones(5, bool), np.ones(5, bool))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_difference(np.ones((2, 5), bool), np.ones((2, 5), bool), n_boot=0)


# --- calibration -----------------------------------------------------------------------------------

def _random_probs(rng: np.random.Generator, n: int, classes: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    logits = rng.normal(0, 2.0, (n, classes))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    targets = np.where(rng.random(n) < 0.6, probs.argmax(1), rng.integers(0, classes, n))  # roughly calibrated
    return probs.astype(dtype), targets


@pytest.mark.parametrize("classes", [2, 10, 135])
def test_nll_matches_sklearn_log_loss(classes):
    log_loss = pytest.importorskip("sklearn.metrics").log_loss
    probs, targets = _random_probs(np.random.default_rng(classes), 3000, classes)
    assert nll(probs, targets) == pytest.approx(log_loss(targets, probs, labels=np.arange(classes)), rel=1e-10)


def test_nll_floor_for_float16_zeros():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]], np.float16)  # image 0: the true class was rounded to 0
    assert nll(probs, np.array([1, 0])) == pytest.approx((24 * math.log(2) + math.log(2)) / 2)
    assert NLL_FLOOR == np.finfo(np.float16).smallest_subnormal
    with pytest.raises(ValueError, match="logits"):
        nll(np.array([[2.0, -1.0]]), np.array([0]))
    with pytest.raises(ValueError, match="targets"):
        nll(np.array([[0.5, 0.5]]), np.array([2]))


@pytest.mark.parametrize("classes, n_bins", [(2, 15), (10, 15), (10, 7), (135, 15)])
def test_ece_matches_torchmetrics(classes, n_bins):
    tm = pytest.importorskip("torchmetrics.classification")
    torch = pytest.importorskip("torch")
    probs, targets = _random_probs(np.random.default_rng(classes + n_bins), 4000, classes, np.float32)
    metric = tm.MulticlassCalibrationError(num_classes=classes, n_bins=n_bins, norm="l1")
    want = float(metric(torch.from_numpy(probs), torch.from_numpy(targets)))
    got = expected_calibration_error(probs, targets, n_bins)
    assert got == pytest.approx(want, abs=1e-5)
    assert got > 0.01  # the data are miscalibrated enough that a broken binning would show


def test_ece_hand_and_bin_edges():
    # Two images in bin (0.6, 0.8]: confidences 0.7 and 0.8, one right -> |0.5 - 0.75| * 2/4;
    # two in (0.8, 1.0]: confidence 1.0 (wrong) and 0.9 (right) -> |0.5 - 0.95| * 2/4. ECE = 0.35.
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [1.0, 0.0], [0.1, 0.9]])
    targets = np.array([0, 0, 1, 1])
    assert expected_calibration_error(probs, targets, n_bins=5) == pytest.approx(0.125 + 0.225)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(probs, targets, n_bins=0)


def test_ece_edges_differ_from_torchmetrics_as_documented():
    # torchmetrics bins [lo, hi) plus a bin for exactly 1.0: 0.7 alone (|1 - 0.7| x 1/4), 0.8 with
    # 0.9 (|0.5 - 0.85| x 2/4), 1.0 alone (|0 - 1| x 1/4): 0.5, where Guo et al.'s bins give 0.35.
    tm = pytest.importorskip("torchmetrics.classification")
    torch = pytest.importorskip("torch")
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [1.0, 0.0], [0.1, 0.9]])
    targets = np.array([0, 0, 1, 1])
    metric = tm.MulticlassCalibrationError(num_classes=2, n_bins=5, norm="l1")
    assert float(metric(torch.tensor(probs), torch.tensor(targets))) == pytest.approx(0.5)


# --- scikit-learn-compatible classification metrics ------------------------------------------------

def test_classification_metrics_issue_example():
    # Issue 12, item 9: label 2 is only predicted; scikit-learn averages over {0, 1, 2}.
    m = classification_metrics(np.array([0, 0, 1, 2]), np.array([0, 0, 1, 1]), classes=3)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)  # 0.556, not 0.833
    assert m["accuracy"] == 0.75 and m["weighted_recall"] == 0.75
    assert m["macro_precision"] == pytest.approx((1 + 1 + 0) / 3)


def _sklearn_metrics(y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    skm = pytest.importorskip("sklearn.metrics")
    out = {"accuracy": skm.accuracy_score(y_true, y_pred)}
    for average in ("macro", "weighted"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns where it sets 0 (zero_division="warn")
            p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average)
        out.update({f"{average}_precision": p, f"{average}_recall": r, f"{average}_f1": f})
    return out


@pytest.mark.parametrize("classes, n, used", [(2, 50, 2), (10, 200, 10), (10, 60, 6), (135, 500, 135), (135, 300, 40)])
def test_classification_metrics_match_sklearn(classes, n, used):
    rng = np.random.default_rng(classes * 1000 + n)
    for _ in range(20):
        y_true = rng.choice(rng.choice(classes, used, replace=False), n)  # `used` < classes leaves labels absent
        y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, classes, n))  # some labels only predicted
        got, want = classification_metrics(y_pred, y_true, classes), _sklearn_metrics(y_pred, y_true)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_classification_metrics_reject_bad_labels():
    with pytest.raises(ValueError, match=r"y_pred must hold integer labels in \[0, 3\)"):
        classification_metrics(np.array([0, 3]), np.array([0, 1]), classes=3)
    with pytest.raises(ValueError, match="non-empty"):
        classification_metrics(np.array([], int), np.array([], int), classes=3)
