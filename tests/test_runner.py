"""The runner: same seed -> same result on CPU, finished cells are reused (and only those), and a
failing cell is recorded without stopping the suite."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from rich.console import Console

from bench import cli
from bench.config import load_suite
from bench.grid import expand
from bench.executors import RunSummary, run_cells
from bench.store import Store
from bench.strategies import CrossStitch, HardShare, SingleTask
from conftest import TIMING_COLUMNS

CPU = torch.device("cpu")


def _run(cells, results, **kw) -> RunSummary:
    return run_cells(cells, Store(results, cells[0].suite), CPU, console=Console(file=io.StringIO()), **kw)


def _outcome(store: Store, cell: str) -> tuple[dict, dict, str]:
    """What must repeat exactly: metrics without timings, predictions, history without timings."""
    r = store.record(cell)
    kept = {"status": r.status, "test": r.test, "val": r.val, "best_epoch": r.best_epoch, "params": r.params}
    history = store.history(cell).drop(columns=TIMING_COLUMNS)  # KeyError if a timing column is renamed
    return kept, store.predictions(cell), history.to_csv()


def test_same_seed_gives_identical_results(smoke_run, tmp_path):
    cells = {c.name: c for c in expand(load_suite(smoke_run["suite"]))}
    name = "synthetic__hard_share__seed0"
    assert _run([cells[name]], tmp_path).done == [name]
    first = _outcome(Store(smoke_run["results"], "smoke"), name)
    again = _outcome(Store(tmp_path, "smoke"), name)
    assert first[0] == again[0]
    assert first[1].keys() == again[1].keys()
    for k in first[1]:
        np.testing.assert_array_equal(first[1][k], again[1][k], err_msg=k)
    assert first[2] == again[2]


def test_different_seed_gives_different_predictions(smoke_run):
    store = Store(smoke_run["results"], "smoke")
    seed0 = store.predictions("synthetic__hard_share__seed0")
    seed1 = store.predictions("synthetic__hard_share__seed1")
    np.testing.assert_array_equal(seed0["target__quadrant"], seed1["target__quadrant"])  # same test set
    assert not np.array_equal(seed0["pred__quadrant"], seed1["pred__quadrant"])


def _stamps(store: Store, names: list[str]) -> dict[str, tuple[int, int]]:
    # A rewrite replaces the file (atomic rename), so its inode changes even within one mtime tick.
    out = {}
    for n in names:
        st = (store.cell_dir(n) / "record.json").stat()
        out[n] = (st.st_ino, st.st_mtime_ns)
    return out


def test_resume_reruns_only_what_changed(tiny_suite, write_suite, tmp_path):
    raw = tiny_suite(strategies=["stl", "hard_share"])
    raw["datasets"]["synthetic"]["tasks"] = ["quadrant", "top"]
    cells = expand(load_suite(write_suite(raw)))
    names = [c.name for c in cells]
    store, results = Store(tmp_path / "results", "tiny"), tmp_path / "results"

    first = _run(cells, results)
    assert first.done == names and first.cached == [] and first.failed == []
    stamps = _stamps(store, names)

    again = _run(cells, results)
    assert again.done == [] and again.cached == names
    assert _stamps(store, names) == stamps  # nothing was rewritten

    failed = "synthetic__stl(task=top)__seed0"
    record = store.record(failed)
    (store.cell_dir(failed) / "record.json").write_text(json.dumps({**record.to_json(), "status": "failed"}))
    retry = _run(cells, results)
    assert retry.done == [failed] and retry.cached == [n for n in names if n != failed]
    assert store.record(failed).status == "done"

    raw["strategies"] = ["stl", {"name": "hard_share", "train": {"epochs": 2}}]
    changed = expand(load_suite(write_suite(raw)))
    assert [c.name for c in changed] == names  # same names, one new key
    rerun = _run(changed, results)
    assert rerun.done == ["synthetic__hard_share__seed0"]
    assert store.record("synthetic__hard_share__seed0").key == changed[-1].key
    assert len(store.history("synthetic__hard_share__seed0")) == 2

    stamps = _stamps(store, names)
    forced = _run(changed, results, force=True)
    assert forced.done == names and forced.cached == []
    after = _stamps(store, names)
    assert all(after[n] != stamps[n] for n in names)


def _nan_model(self, specs, make_backbone):
    model = HardShare.build(self, specs, make_backbone)
    model.register_forward_hook(lambda module, args, out: {t: o * float("nan") for t, o in out.items()})
    return model


def _explode(self, specs, make_backbone):
    raise RuntimeError("boom: cross-stitch build broke")


def test_failing_cells_do_not_stop_the_suite(tiny_suite, write_suite, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(CrossStitch, "build", _explode)
    monkeypatch.setattr(SingleTask, "build", _nan_model)  # both STL cells: NaN loss
    raw = tiny_suite(strategies=["stl", "hard_share", "cross_stitch"])
    raw["datasets"]["synthetic"]["tasks"] = ["quadrant", "top"]
    results, reports = tmp_path / "results", tmp_path / "reports"
    code = cli.main(["run", str(write_suite(raw)), "--results", str(results), "--reports", str(reports),
                     "--device", "cpu"])
    assert code == 1
    store = Store(results, "tiny")
    status = {n: store.record(n).status for n in store.cells()}
    assert status == {
        "synthetic__cross_stitch__seed0": "failed",
        "synthetic__hard_share__seed0": "done",
        "synthetic__stl(task=quadrant)__seed0": "diverged",
        "synthetic__stl(task=top)__seed0": "diverged",
    }
    broken = store.record("synthetic__cross_stitch__seed0")
    assert broken.reason == "RuntimeError: boom: cross-stitch build broke"
    log = (store.cell_dir("synthetic__cross_stitch__seed0") / "log.txt").read_text()
    assert "Traceback (most recent call last)" in log and "in _explode" in log and "boom" in log
    assert "not finite" in store.record("synthetic__stl(task=top)__seed0").reason
    report = (reports / "tiny.md").read_text()
    failed_section = report.split("## Failed cells")[1].split("##")[0]
    for name, s in status.items():
        assert (name in failed_section) == (s != "done"), name
    assert "failed: synthetic__cross_stitch__seed0" in " ".join(capsys.readouterr().err.split())


def test_throughput_counts_the_images_actually_trained(tiny_suite, write_suite, tmp_path):
    # A batch larger than the 32 training images trains on those 32, once per epoch: not on 100,000.
    raw = tiny_suite(train={**tiny_suite()["train"], "batch_size": 100_000, "epochs": 2})
    [cell] = expand(load_suite(write_suite(raw)))
    store = Store(tmp_path, cell.suite)
    _run([cell], tmp_path)
    m = store.record(cell.name)
    assert m.images_per_second * m.train_seconds == pytest.approx(2 * 32)
    h = store.history(cell.name)
    assert (h.images_per_second * h.train_seconds).round(6).tolist() == [32.0, 32.0]
