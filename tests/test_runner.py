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


def test_a_suite_whose_every_cell_failed_is_reported(tiny_suite, write_suite, tmp_path, monkeypatch, capsys):
    """Issue 12, item 1 (and the missing dataset of a new user): no cell finished, yet the report is written
    with the failed cells and their reasons, the failures are printed, the exit status is 1; the dataset's
    error is printed once, not once per cell."""
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "no-data"))
    raw = tiny_suite(datasets={"cifar10": {"subset": 64, "test_subset": 32, "val_size": 16}},
                     strategies=["stl", "hard_share"])
    code = cli.main(["run", str(write_suite(raw)), "--results", str(tmp_path / "results"),
                     "--reports", str(tmp_path / "reports"), "--device", "cpu"])
    assert code == 1
    cells = ["cifar10__stl(task=class10)__seed0", "cifar10__stl(task=animal)__seed0", "cifar10__hard_share__seed0"]
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("CIFAR-10 not found") == 1  # the dataset's message, once
    assert "dataset cifar10: cannot be loaded, so its 3 cells will fail" in err
    assert all(f"failed: {c} (see" in err for c in cells)
    report = (tmp_path / "reports" / "tiny.md").read_text()
    assert "No finished cells yet." in report and "Cells: 3 recorded: 3 failed" in report
    failed = report.split("## Failed cells")[1].split("\n## ")[0]
    rows = [line for line in failed.splitlines() if line.startswith("| cifar10__")]
    assert sorted(r.split("|")[1].strip() for r in rows) == sorted(cells)
    assert all("FileNotFoundError: CIFAR-10 not found" in r for r in rows)


@pytest.mark.parametrize("entry, message", [
    ({"val_size": 5000}, "datasets.synthetic.val_size: 5000 gives 5000 validation images of 48 train images, "
                         "leaving no training images; valid: a count from 1 to 47"),
    ({"val_size": 0.001}, "datasets.synthetic.val_size: 0.001 gives 0 validation images of 48 train images"),
    ({"subset": 100}, "datasets.synthetic.subset: 100 is more than the 48 images of the dataset's train pool; "
                      "valid: 1 to 48"),
    ({"subset": 20, "val_size": 20}, "datasets.synthetic.val_size: 20 gives 20 validation images of 20 train images"),
    ({"test_subset": 33}, "datasets.synthetic.test_subset: 33 is more than the 32 images of the dataset's test set"),
])
def test_sizes_that_do_not_fit_the_pool_exit_2_before_any_training(tiny_suite, write_suite, tmp_path, capsys,
                                                                   entry, message):
    """Item 2, the settings that depend on the data: checked against the pool before any cell trains."""
    raw = tiny_suite(strategies=["stl"])  # tiny synthetic data: 48 train, 32 test images
    raw["datasets"]["synthetic"].update(entry)
    path = write_suite(raw)
    assert cli.main(["validate", str(path)]) == 0  # a size is checked against the data, which validate does not load
    code = cli.main(["run", str(path), "--results", str(tmp_path / "results"), "--device", "cpu"])
    assert code == 2
    assert f"invalid suite: {path}: {message}" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "results" / "tiny").exists()  # no cell trained, not even a manifest


def test_a_union_part_size_error_names_the_part(tiny_suite, write_suite, tmp_path, capsys):
    part = {"name": "synthetic", "tasks": ["top"], "options": {"n_train": 48, "n_test": 32, "image_size": 8}}
    raw = tiny_suite(datasets={"both": {"union": [{**part, "val_size": 16}, {**part, "tasks": ["quadrant"],
                                                                           "val_size": 48}]}})
    assert cli.main(["run", str(write_suite(raw)), "--results", str(tmp_path / "results"), "--device", "cpu"]) == 2
    assert "datasets.both.union[1].val_size: 48 gives 48 validation images" in " ".join(capsys.readouterr().err.split())


def test_threads_are_set_and_recorded(tiny_suite, write_suite, tmp_path, monkeypatch):
    """`--threads` sets torch's CPU threads; every record keeps the count (CPU results may differ between
    counts). A cell whose data is missing fails at once, with the provenance recorded all the same."""
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "no-data"))
    raw = tiny_suite(datasets={"cifar10": {"subset": 64}})
    before = torch.get_num_threads()
    try:
        code = cli.main(["run", str(write_suite(raw)), "--results", str(tmp_path), "--no-report", "--device", "cpu",
                         "--threads", "2"])
        assert code == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert Store(tmp_path, "tiny").record("cifar10__hard_share__seed0").provenance["torch_threads"] == 2


def test_ctrl_c_says_what_finished_and_a_rerun_continues(tiny_suite, write_suite, tmp_path, monkeypatch, capsys):
    """Defect 6: Ctrl-C gave a 40-line KeyboardInterrupt traceback (exit 1 inline, -2 in the pool). Now one
    line, exit 130 (128 + SIGINT); the finished cell stays, the cut one is recorded failed, a rerun
    trains the rest."""
    from bench import runner

    path = write_suite(tiny_suite(seeds=[0, 1, 2]))
    real, calls = runner._train, []

    def train(cell, *args):
        calls.append(cell.name)
        if cell.seed == 1:
            raise KeyboardInterrupt
        return real(cell, *args)

    monkeypatch.setattr(runner, "_train", train)
    roots = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert cli.main(["run", str(path), "--device", "cpu", *roots]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert ("interrupted: 1 cell(s) finished in this run (synthetic__hard_share__seed0), 0 were finished before, "
            "and a cell cut short is recorded as failed; run the same command again to train the 2 left") in err
    store = Store(tmp_path / "results", "tiny")
    assert store.record("synthetic__hard_share__seed1").status == "failed"
    assert store.record("synthetic__hard_share__seed2") is None and calls[-1].endswith("seed1")
    monkeypatch.setattr(runner, "_train", real)
    assert cli.main(["run", str(path), "--device", "cpu", "--no-report", *roots]) == 0
    assert "done 2, cached 1, failed 0" in capsys.readouterr().err


def test_ctrl_c_in_a_worker_pool_is_the_same_one_line(tiny_suite, write_suite, tmp_path, monkeypatch, capsys):
    from bench.executors.local import LocalPool

    def interrupted(self, cells, ctx, on_event):
        raise KeyboardInterrupt
        yield  # a generator, as the pool's run is

    monkeypatch.setattr(LocalPool, "run", interrupted)
    path = write_suite(tiny_suite())
    assert cli.main(["run", str(path), "--device", "cpu", "--executor", "local", "--results",
                     str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err and "interrupted: 0 cell(s) finished in this run (none)" in err
