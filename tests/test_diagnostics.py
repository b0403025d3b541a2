"""Report diagnostics: per-sample loss, per-class accuracy, confused pairs, residual statistics, the
stored highest-loss gallery, and the sections they feed (a hand-made 25-class store and a tiny smoke run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from scipy import stats

from bench.kinds import make_spec
from bench.cli import main as bench_main
from bench.config import load_suite
from bench.grid import expand, manifest
from bench.record import Record
from bench.report import write_report
from bench.report import diagnostics as D
from bench.kinds import GALLERY_SIZE, gallery
from bench.store import Store
from conftest import put_result

ROOT = Path(__file__).resolve().parents[1]
MULTI = make_spec("multiclass", name="m", classes=3)


# ---- per-sample loss ----------------------------------------------------------------------------
def test_per_sample_loss_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.25, 0.5, 0.25]])
    assert np.allclose(MULTI.item_losses(probs, np.array([0, 2])), [-np.log(0.7), -np.log(0.25)])
    reg = make_spec("regression", name="r", dim=2)
    pred, target = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 1.0]])
    assert np.allclose(reg.item_losses(pred, target), [2.5, 0.5])  # mean squared error per row


def test_per_sample_loss_matches_training_loss():
    gen = torch.Generator().manual_seed(0)
    logits, y = torch.randn(20, 3, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    got = MULTI.item_losses(MULTI.to_prediction(logits).numpy(), y.numpy())
    assert np.allclose(got, F.cross_entropy(logits, y, reduction="none").numpy(), atol=1e-5)
    binary = make_spec("binary", name="b", classes=2)
    logit, yb = torch.randn(20, 1, generator=gen), torch.randint(0, 2, (20,), generator=gen)
    got = binary.item_losses(binary.to_prediction(logit).numpy(), yb.numpy())
    want = F.binary_cross_entropy_with_logits(logit.squeeze(1), yb.float(), reduction="none").numpy()
    assert np.allclose(got, want, atol=1e-5)
    assert np.isclose(got.mean(), float(binary.loss(logit, yb)), atol=1e-5)


def test_gallery_keeps_highest_loss_items():
    losses = np.array([0.1, 3.0, 0.5, 3.0, 2.0] + [0.0] * 30)
    x = torch.arange(35, dtype=torch.uint8).view(35, 1, 1, 1).expand(35, 1, 2, 2)
    g = gallery(losses, lambda idx: x[idx].numpy())
    assert list(g["gallery_index"][:4]) == [1, 3, 4, 2]  # descending loss, ties by index
    assert len(g["gallery_index"]) == GALLERY_SIZE
    assert g["gallery_x"].dtype == np.uint8 and (g["gallery_x"][:, 0, 0, 0] == g["gallery_index"]).all()


# ---- classification diagnostics ----------------------------------------------------------------
def test_per_class_accuracy_by_hand():
    acc, support = D.per_class_accuracy(np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]]))
    assert list(support) == [4, 0, 8]
    assert acc[0] == 0.75 and np.isnan(acc[1]) and acc[2] == 0.5


def test_top_confusions_ranks_off_diagonal_cells():
    cm = np.array([[5, 2, 0], [4, 1, 4], [0, 1, 9]])
    top = D.top_confusions(cm, 3)
    assert [(p["true"], p["predicted"], p["count"]) for p in top] == [(1, 0, 4), (1, 2, 4), (0, 1, 2)]
    assert top[0]["share"] == pytest.approx(4 / 9) and top[2]["share"] == pytest.approx(2 / 7)
    assert len(D.top_confusions(cm, 10)) == 4  # empty cells are not pairs


# ---- regression diagnostics --------------------------------------------------------------------
def test_residual_stats_match_scipy_on_a_normal_sample():
    r = np.random.default_rng(0).normal(0.5, 2.0, 400)
    s = D.residual_stats(r)
    assert s["mean"] == pytest.approx(r.mean()) and s["std"] == pytest.approx(r.std(ddof=1))
    assert s["skewness"] == stats.skew(r) and s["kurtosis"] == stats.kurtosis(r)
    assert s["shapiro_p"] == stats.shapiro(r).pvalue and s["shapiro_n"] == 400
    assert s["shapiro_p"] > 0.05 and abs(s["kurtosis"]) < 0.5


def test_residual_stats_of_a_skewed_sample():
    s = D.residual_stats(np.random.default_rng(1).exponential(1.0, 400))
    assert s["skewness"] > 1 and s["kurtosis"] > 1 and s["shapiro_p"] < 1e-6


def test_shapiro_subsamples_large_samples_deterministically():
    r = np.random.default_rng(2).normal(size=12000)
    sample = D.shapiro_sample(r)
    assert len(sample) == D.SHAPIRO_MAX_N and np.array_equal(sample, D.shapiro_sample(r))
    assert np.isin(sample, r).all()
    s = D.residual_stats(r)
    assert s["n"] == 12000 and s["shapiro_n"] == D.SHAPIRO_MAX_N
    assert s["shapiro_p"] == stats.shapiro(sample).pvalue


def test_residuals_pool_output_dimensions():
    r = D.residuals(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float16), np.array([[0.0, 0.0], [1.0, 1.0]]))
    assert list(r) == [1.0, 2.0, 2.0, 3.0]


# ---- sections on a hand-made store with a 25-class task --------------------------------------
def _fake_cell(store: Store, seed: int, classes: int) -> None:
    """A finished hard_share cell of the smoke suite whose `quadrant` task has `classes` classes."""
    rng = np.random.default_rng(seed)
    target = np.repeat(np.arange(classes), 8)
    predicted = target.copy()
    predicted[np.flatnonzero(target == 3)[:5]] = 7  # the dominant confusion: 5 of class 3's 8 items
    predicted[np.flatnonzero(target == 10)[:2]] = 11
    probs = np.full((len(target), classes), 0.1 / classes) + 0.9 * np.eye(classes)[predicted]
    values = rng.normal(0.5, 0.1, (len(target), 1))
    level = values + rng.normal(0, 0.05, values.shape)
    x = torch.from_numpy(rng.integers(0, 256, (len(target), 3, 8, 8), dtype=np.uint8))
    arrays = {"pred__quadrant": probs.astype(np.float16), "target__quadrant": target,
              "pred__brightness": values.astype(np.float16), "target__brightness": level}
    spec = make_spec("multiclass", name="quadrant", classes=classes,
                      class_names=tuple(f"c{i:02d}" for i in range(classes)))
    reg = make_spec("regression", name="brightness")
    for task, g in (("quadrant", gallery(spec.item_losses(probs, target), lambda i: x[i].numpy())),
                    ("brightness", gallery(reg.item_losses(values, level), lambda i: x[i].numpy()))):
        arrays.update({f"{k}__{task}": v for k, v in g.items()})
    name = f"synthetic__hard_share__seed{seed}"
    put_result(store, Record(
        suite=store.dir.name, cell=name, dataset="synthetic", strategy="hard_share", strategy_name="hard_share",
        multi_task=True, tasks=("quadrant", "brightness"), seed=seed, status="done", key="k", params=1,
        train_seconds=1.0, images_per_second=1.0, best_epoch=1,
        test={"quadrant": spec.metrics(probs, target), "brightness": reg.metrics(values, level)},
        specs={"quadrant": spec.to_dict(), "brightness": reg.to_dict()}), arrays)


def test_many_class_sections_on_a_hand_made_store(tmp_path):
    suite = load_suite(ROOT / "suites" / "smoke.yaml")
    store = Store(tmp_path / "results", suite.name)
    for seed in suite.seeds:
        _fake_cell(store, seed, classes=25)
    text = write_report(tmp_path / "results", suite.name, tmp_path / "reports",
                        manifest=manifest(suite, expand(suite))).read_text()
    figs = tmp_path / "reports" / suite.name
    # seeds pooled: class 3 -> 7 happens 5 times per seed, 62.5% of class 3's items
    assert "| hard_share | c03    | c07         | 10      | 62.5" in text
    assert "| hard_share | c10    | c11         | 4       | 25.0" in text
    assert "## Per-class accuracy" in text and (figs / "per_class_synthetic_quadrant.png").exists()
    assert (figs / "confusion_synthetic_quadrant.png").exists()
    assert "weighted F1 %" in text and "### synthetic / brightness" in text
    assert (figs / "residuals_synthetic_brightness.png").exists()
    assert (figs / "hardest_synthetic_quadrant.png").exists()


def test_hardest_examples_label_the_stored_gallery(tmp_path):
    store = Store(tmp_path, "s")
    _fake_cell(store, 0, classes=25)
    spec = make_spec("multiclass", name="quadrant", classes=25,
                      class_names=tuple(f"c{i:02d}" for i in range(25)))
    examples = D.hardest_examples(spec, store.predictions("synthetic__hard_share__seed0"), "quadrant")
    assert len(examples) == GALLERY_SIZE
    wrong = [(e.true, e.predicted) for e in examples if e.true != e.predicted]
    assert sorted(wrong) == sorted([("c03", "c07")] * 5 + [("c10", "c11")] * 2)  # the errors rank first
    assert all(e.true != e.predicted for e in examples[:7])


# ---- the smoke suite end to end ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_smoke(tmp_path_factory):
    """suites/smoke.yaml shrunk to one seed, two strategies, one epoch, a narrow backbone: seconds on CPU."""
    tmp = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(tmp / "cache"))
        yield _run_tiny_smoke(tmp)


def _run_tiny_smoke(tmp: Path):
    raw = yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())
    raw["backbone"]["width"] = 16
    raw["seeds"] = [0]
    raw["strategies"] = ["stl", "hard_share"]  # cross_stitch adds time, not coverage of the report
    raw["train"].update(epochs=1, batch_size=32)
    raw["datasets"]["synthetic"].update(val_size=32, options={"n_train": 96, "n_test": 48, "image_size": 16})
    path = tmp / "smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    rc = bench_main(["run", str(path), "--results", str(tmp / "results"), "--reports", str(tmp / "reports")])
    return tmp, load_suite(path), rc


def test_smoke_report_shows_the_diagnostics(tiny_smoke):
    tmp, suite, rc = tiny_smoke
    assert rc == 0
    text = (tmp / "reports" / "smoke.md").read_text()
    for heading in ("## Classification metrics per task", "## Regression residuals",
                    "### synthetic / brightness", "## Highest-loss test images"):
        assert heading in text
    assert "## Per-class accuracy" not in text  # smoke tasks have at most 4 classes
    figs = tmp / "reports" / "smoke"
    for name in ("residuals_synthetic_brightness", "hardest_synthetic_quadrant", "hardest_synthetic_top",
                 "hardest_synthetic_brightness", "confusion_synthetic_quadrant"):
        assert (figs / f"{name}.png").stat().st_size > 0
        assert f"smoke/{name}.png" in text


def test_smoke_cells_store_the_highest_loss_test_images(tiny_smoke):
    from bench.data import load_taskset

    tmp, suite, _ = tiny_smoke
    test = load_taskset(suite.datasets[0]).test
    spec = make_spec("multiclass", name="quadrant", classes=4)
    p = Store(tmp / "results", "smoke").predictions("synthetic__hard_share__seed0")
    idx, losses = p["gallery_index__quadrant"], p["gallery_loss__quadrant"]
    assert len(idx) == GALLERY_SIZE and np.all(np.diff(losses) <= 0)
    assert np.array_equal(p["gallery_x__quadrant"], test.x[torch.from_numpy(idx)].numpy())
    recomputed = spec.item_losses(p["pred__quadrant"], p["target__quadrant"])  # from float16 storage
    assert np.allclose(recomputed[idx], losses, rtol=1e-2, atol=1e-3)
    assert np.delete(recomputed, idx).max() <= losses.min() + 1e-2
