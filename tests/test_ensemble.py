"""Ensembles (combined cells) and delta_m: averaging, grid order, failures, suite errors, the report.

Most tests fill the store with hand-made member results (status done, matching keys), so the runner
finds the members cached and only combines: no training. One test trains two tiny cells for real.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.kinds import make_spec
from bench.combine import combine_cell
from bench.config import SuiteError, load_suite
from bench.grid import expand, manifest
from bench.record import Record
from bench.report import sections, write_report
from bench.report.stats import delta_m
from bench.executors import run_cells
from bench.runner import DataCache, identity, run_cell
from bench.store import Store
from bench.strategies import Ensemble
from conftest import markdown_tables, put_result, section

CPU = torch.device("cpu")
SPECS = {
    "quadrant": make_spec("multiclass", name="quadrant", classes=4),
    "top": make_spec("binary", name="top", classes=2),
    "brightness": make_spec("regression", name="brightness", dim=1),
}
SMOKE = Path(__file__).resolve().parents[1] / "suites" / "smoke.yaml"

SUITE = """
name: ens
datasets:
  synthetic: {{tasks: [quadrant, top, brightness], val_size: 16, options: {{n_train: 64, n_test: 32}}}}
backbone: {{name: alexnet_cifar, width: 16}}
strategies: {strategies}
seeds: {seeds}
train: {{epochs: 1, batch_size: 32, optimizer: adam, lr: 0.001, warmup_epochs: 0}}
"""


def suite_file(tmp_path: Path, strategies: str, seeds: str = "[0]") -> Path:
    path = tmp_path / "ens.yaml"
    path.write_text(SUITE.format(strategies=strategies, seeds=seeds))
    return path


def random_preds(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"quadrant": rng.dirichlet(np.ones(4), n), "top": rng.dirichlet(np.ones(2), n),
            "brightness": rng.random((n, 1))}


TARGETS = {"quadrant": np.arange(8) % 4, "top": np.arange(8) % 2, "brightness": np.linspace(0, 1, 8)[:, None]}


def fake_result(store: Store, cell, preds: dict[str, np.ndarray], *, status: str = "done",
                targets: dict[str, np.ndarray] = TARGETS) -> None:
    """Record a cell as the runner would, without training; metrics from the stored float16 predictions."""
    arrays = {}
    for t in cell.tasks:
        arrays[f"pred__{t}"] = preds[t].astype(np.float16)
        arrays[f"target__{t}"] = targets[t]
    test = {t: SPECS[t].metrics(arrays[f"pred__{t}"].astype(np.float32), targets[t]) for t in cell.tasks}
    put_result(store, Record(
        **identity(cell), status=status, reason="" if status == "done" else "RuntimeError: boom", key=cell.key,
        test=test, best_epoch=1, params=100 + (cell.seed or 0), train_seconds=2.0, images_per_second=50.0,
        specs={t: SPECS[t].to_dict() for t in cell.tasks}), arrays)


def test_average_of_two_disagreeing_members_beats_both(tmp_path):
    # Each member gets one of the two images wrong (targets: class 0 twice); their average gets both right.
    a = np.array([[0.9, 0.1], [0.4, 0.6]])
    b = np.array([[0.4, 0.6], [0.9, 0.1]])
    avg = Ensemble(of="x").combine(SPECS["top"], [a, b])
    np.testing.assert_allclose(avg, [[0.65, 0.35], [0.65, 0.35]], rtol=1e-6)
    np.testing.assert_allclose(Ensemble(of="x").combine(SPECS["brightness"], [np.array([[1.0], [3.0]]),
                                                                            np.array([[3.0], [6.0]])]),
                               [[2.0], [4.5]])
    # The same through the store and runner: gains over the mean and the best member are +0.5 accuracy.
    suite = load_suite(suite_file(tmp_path, "[hard_share, {name: ensemble, of: hard_share, seeds: [0, 1]}]"))
    cells = expand(suite)
    store, targets = Store(tmp_path / "r", suite.name), {"top": np.array([0, 0])}
    members = [dataclasses.replace(cell, tasks=("top",)) for cell in cells[:2]]
    for cell, p in zip(members, (a, b)):
        fake_result(store, cell, {"top": p}, targets=targets)
    ens = dataclasses.replace(cells[2], tasks=("top",), members=tuple(members))
    record = combine_cell(ens, store, store.attempt(ens.name))
    assert record["test"]["top"]["accuracy"] == 1.0
    assert record["extra"]["gain_vs_mean"]["top"]["accuracy"] == pytest.approx(0.5)
    assert record["extra"]["gain_vs_best"]["top"]["accuracy"] == pytest.approx(0.5)
    assert record["params"] == 100 + 101 and record["train_seconds"] == 4.0


@pytest.mark.parametrize("of", ["hard_share", "stl"])
def test_ensemble_of_identical_members_equals_a_member(tmp_path, of):
    suite = load_suite(suite_file(tmp_path, f"[stl, hard_share, {{name: ensemble, of: {of}, seeds: [0, 1]}}]",
                                  "[0, 1]"))
    cells = expand(suite)
    store, preds = Store(tmp_path / "r", suite.name), random_preds(8, seed=0)
    for cell in cells[:-1]:
        fake_result(store, cell, preds)
    summary = run_cells(cells, store, CPU)
    ens = cells[-1]
    assert summary.done == [ens.name] and not summary.failed  # members cached: nothing trained
    record, member = store.record(ens.name), store.record(ens.members[0].name)
    for t in ens.members[0].tasks:
        assert record.test[t] == member.test[t]
        assert all(v == 0 for v in record.extra["gain_vs_mean"][t].values())
        np.testing.assert_array_equal(store.predictions(ens.name)[f"pred__{t}"],
                                      store.predictions(ens.members[0].name)[f"pred__{t}"])
    assert set(record.test) == {"quadrant", "top", "brightness"}  # STL members cover one task each
    assert record.params == sum(store.record(m.name).params for m in ens.members)
    assert record.members == {m.name: m.key for m in ens.members} and "combine.py" in record.code


def test_member_gains_against_the_mean_and_the_best_member_by_direction():
    from bench.combine import member_gains

    # the best member is the higher accuracy (0.8) but the lower MAE (0.2): each metric's own direction
    members = {"m0": {"top": {"accuracy": 0.6}, "brightness": {"mae": 0.2}},
               "m1": {"top": {"accuracy": 0.8}, "brightness": {"mae": 0.4}}}
    test = {"top": {"accuracy": 0.75}, "brightness": {"mae": 0.25}}
    gains = member_gains(test, members, SPECS)
    flat = {(g, t, m): v for g, tasks in gains.items() for t, ms in tasks.items() for m, v in ms.items()}
    assert flat == pytest.approx({("gain_vs_mean", "top", "accuracy"): 0.75 - 0.7,
                                  ("gain_vs_mean", "brightness", "mae"): 0.25 - 0.3,
                                  ("gain_vs_best", "top", "accuracy"): 0.75 - 0.8,
                                  ("gain_vs_best", "brightness", "mae"): 0.25 - 0.2})


def test_delta_m_on_hand_made_numbers():
    # accuracy 0.75 -> 0.80 is +6.67 %; MAE 0.10 -> 0.09 (lower is better) is +10 %: mean 8.33 %.
    hib = {"acc": True, "mae": False}
    assert delta_m({"acc": 0.80, "mae": 0.09}, {"acc": 0.75, "mae": 0.10}, hib) == pytest.approx(25 / 3)
    # worse on both: accuracy -10 %, MAE 0.10 -> 0.12 is -20 %.
    assert delta_m({"acc": 0.675, "mae": 0.12}, {"acc": 0.75, "mae": 0.10}, hib) == pytest.approx(-15)
    assert math.isnan(delta_m({"acc": 0.8}, {}, hib))


def test_grid_puts_members_first_and_adds_missing_seeds(tmp_path):
    strategies = ("[{name: ensemble, of: hard_share, seeds: [0, 1, 2]}, hard_share, stl, "
                  "{name: ensemble, id: stl_ens, of: stl, seeds: [1]}]")
    cells = expand(load_suite(suite_file(tmp_path, strategies)))
    names = [c.name for c in cells]
    assert names.count("synthetic__hard_share__seed2") == 1 and "synthetic__hard_share__seed1" in names
    assert "synthetic__stl(task=top)__seed1" in names and "synthetic__cross_stitch__seed1" not in names
    for cell in cells:
        assert all(names.index(m.name) < names.index(cell.name) for m in cell.members)
    ens = cells[names.index("synthetic__ensemble(of=hard_share,seeds=0+1+2)")]
    assert [m.seed for m in ens.members] == [0, 1, 2] and ens.seed is None
    stl_ens = cells[names.index("synthetic__stl_ens(seeds=1)")]
    assert [m.tasks for m in stl_ens.members] == [("quadrant",), ("top",), ("brightness",)]
    assert stl_ens.tasks == ("quadrant", "top", "brightness")
    # A member's config change changes the ensemble's key.
    changed = expand(load_suite(suite_file(tmp_path, strategies.replace(
        "hard_share, stl", "{name: hard_share, train: {lr: 0.01}}, stl"))))
    assert changed[[c.name for c in changed].index(ens.name)].key != ens.key
    assert changed[[c.name for c in changed].index(stl_ens.name)].key == stl_ens.key


def test_failed_member_fails_the_ensemble_naming_it(tmp_path):
    suite = load_suite(suite_file(tmp_path, "[hard_share, {name: ensemble, of: hard_share, seeds: [0, 1]}]"))
    cells = expand(suite)
    store = Store(tmp_path / "r", suite.name)
    fake_result(store, cells[0], random_preds(8, 0))
    fake_result(store, cells[1], random_preds(8, 1), status="failed")
    assert run_cell(cells[2], store, CPU, DataCache(CPU)).status == "failed"
    reason = store.record(cells[2].name).reason
    assert "synthetic__hard_share__seed1 failed" in reason and "boom" in reason


@pytest.mark.parametrize("entry, message", [
    ("{name: ensemble, of: nope}", "strategies[1].of: 'nope' is not a training strategy id"),
    ("{name: ensemble}", "strategies[1].of: '' is not"),
    ("{name: ensemble, of: ensemble}", "strategies[1].of: 'ensemble'"),
    ("{name: ensemble, of: stl, seeds: [1, 1]}", "strategies[1].seeds"),
    ("{name: ensemble, of: stl, train: {lr: 0.1}}", "strategies[1].train"),
])
def test_bad_ensemble_entry_is_a_suite_error(tmp_path, entry, message):
    with pytest.raises(SuiteError) as err:
        load_suite(suite_file(tmp_path, f"[stl, {entry}]"))
    assert message in str(err.value)
    if ".of:" in message:
        assert "valid: stl" in str(err.value)


def test_smoke_report_has_delta_m_and_ensemble_section(tmp_path, monkeypatch):
    # delta_m's values are checked against hand-made numbers in tests/test_comparison.py; here, where
    # the columns and sections go for the smoke suite's entries.
    suite = load_suite(SMOKE)
    cells = expand(suite)
    assert any(c.members for c in cells), "suites/smoke.yaml should hold an ensemble entry"
    store = Store(tmp_path / "r", suite.name)
    for cell in cells:
        if not cell.members:
            fake_result(store, cell, random_preds(8, seed=10 * (cell.seed or 0) + len(cell.strategy.id)))
    summary = run_cells(cells, store, CPU)
    assert len(summary.done) == 1 and not summary.failed
    text = write_report(tmp_path / "r", suite.name, tmp_path / "rep", manifest=manifest(suite, cells)).read_text()
    (table,) = markdown_tables(section(text, "Results"))
    rows = {r["strategy"]: r for r in table}
    assert rows["stl"]["delta_m %"] == "" and rows["stl"]["vs STL"] == "(reference)"
    assert rows["ensemble"]["delta_m %"].endswith("(vs mean STL)") and rows["ensemble"]["n"] == "1"
    for sid in ("hard_share", "cross_stitch"):  # two seeds pair: a mean and its interval
        assert re.fullmatch(r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", rows[sid]["delta_m %"]), rows[sid]
    details = markdown_tables(section(text, "Classification metrics per task"))[0]
    ens_rows = [r for r in details if r["strategy"] == "ensemble"]
    assert len(ens_rows) == 2 and all(r["n"] == "1" for r in ens_rows)  # seed-less: n=1
    assert "Maninis et al. 2019" in text and "## Ensembles" in text
    assert "| synthetic | ensemble(of=hard_share,seeds=0+1) | brightness | mae" in text
    figure = tmp_path / "rep" / "smoke" / "ensemble_synthetic.png"
    assert figure.stat().st_size > 0 and "(smoke/ensemble_synthetic.png)" in text
    # Without an STL entry the column is blank and a footnote says why (the summary is all this needs).
    monkeypatch.setattr(sections, "SECTIONS", [sections.summary_tables])
    no_stl = dataclasses.replace(suite, strategies=tuple(s for s in suite.strategies if s.id != "stl"))
    for cell in cells:
        if cell.strategy.id == "stl":
            shutil.rmtree(store.cell_dir(cell.name))
    text = write_report(tmp_path / "r", suite.name, tmp_path / "rep2", manifest=manifest(no_stl, cells)).read_text()
    assert "delta_m % ¹" in text and "no single-task entry" in text


def test_tiny_trained_members_and_their_ensemble(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    # seeds [0] but the ensemble wants [0, 1]: the grid adds hard_share seed 1, trained here for real.
    suite = load_suite(suite_file(tmp_path, "[hard_share, {name: ensemble, of: hard_share, seeds: [0, 1]}]"))
    cells = expand(suite)
    store = Store(tmp_path / "r", suite.name)
    summary = run_cells(cells, store, CPU)
    assert summary.done == [c.name for c in cells]
    a, b, ens = (store.predictions(c.name) for c in cells)
    for t in ("quadrant", "top", "brightness"):
        mean = (a[f"pred__{t}"].astype(np.float32) + b[f"pred__{t}"].astype(np.float32)) / 2
        np.testing.assert_allclose(ens[f"pred__{t}"].astype(np.float32), mean, rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(ens[f"target__{t}"], a[f"target__{t}"])
    record = store.record(cells[2].name)
    assert record.train_seconds == pytest.approx(sum(store.record(c.name).train_seconds for c in cells[:2]))
