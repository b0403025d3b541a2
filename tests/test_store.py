"""The store keeps what finished: reruns that fail or are interrupted leave the earlier result, a swap
cut in half is repaired, writes are atomic and respect the umask, damaged cells are named and rerun."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch
from rich.console import Console

from bench import cli
from bench import data as D
from bench.config import load_suite
from bench.grid import expand
from bench.record import RecordError
from bench.executors import run_cells
from bench.store import Store, atomic_torch_save, atomic_write_json
from bench.trainer import Trainer
from conftest import LEGACY, REPO, markdown_tables, section, skip_rendering

CPU = torch.device("cpu")
CELL = "synthetic__hard_share__seed0"  # the tiny suite's one cell


def _cli(command: str, suite, tmp_path, *extra) -> int:
    roots = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    device = ["--device", "cpu"] if command == "run" else []
    return cli.main([command, str(suite), *device, *roots, *extra])


def _finished_cell(tiny_suite, write_suite, tmp_path):
    """The tiny suite run once through `bench run` (no report): (suite path, store, its record, its predictions)."""
    path = write_suite(tiny_suite())
    assert _cli("run", path, tmp_path, "--no-report") == 0
    store = Store(tmp_path / "results", "tiny")
    return path, store, store.record(CELL), store.predictions(CELL)


def _assert_unchanged(store: Store, record, preds) -> None:
    assert store.record(CELL) == record
    again = store.predictions(CELL)
    assert again.keys() == preds.keys() and all(np.array_equal(again[k], preds[k]) for k in preds)
    assert not list(store.attempts_dir.iterdir())  # the attempt went beside the result, not left behind


def _broken_trainer(*args, **kwargs):
    raise RuntimeError("the trainer broke")


def _missing_dataset(cfg, *args, **kwargs):
    raise FileNotFoundError(f"no data for {cfg.name}")


@pytest.mark.parametrize("breaks", ["trainer, --force", "dataset, new config"])
def test_a_failed_rerun_keeps_the_finished_result(tiny_suite, write_suite, tmp_path, monkeypatch, capsys, breaks):
    path, store, record, preds = _finished_cell(tiny_suite, write_suite, tmp_path)
    if breaks.startswith("trainer"):
        monkeypatch.setattr(Trainer, "fit", _broken_trainer)
        extra, reason, why = ["--force"], "RuntimeError: the trainer broke", ""
    else:
        monkeypatch.setattr("bench.runner.load_taskset", _missing_dataset)
        changed = tiny_suite()
        changed["train"]["lr"] = 0.01  # the stored cell is stale now; its rerun cannot load the data
        write_suite(changed)
        extra, reason, why = [], "FileNotFoundError: no data for synthetic", "config changed; "
    assert _cli("run", path, tmp_path, *extra) == 1
    _assert_unchanged(store, record, preds)
    failed = store.failed_attempt(CELL)
    assert (failed.status, failed.reason) == ("failed", reason) and failed.test == {}
    assert "Traceback" in (store.cell_dir(CELL) / "failed_attempt.log").read_text()
    err = " ".join(capsys.readouterr().err.split())
    assert "its earlier result stays" in err and "failed_attempt.log" in err
    text = (tmp_path / "reports" / "tiny.md").read_text()
    failures = text.split("## Failed cells")[1].split("\n## ")[0]
    assert CELL in failures and reason in failures and "the earlier finished one" in failures
    stale = text.split("## Stale cells")[1].split("\n## ")[0]
    assert f"- {why}its latest rerun failed, so this is the earlier result (1): `{CELL}`" in stale
    accuracy = f"{100 * record.test['quadrant']['accuracy']:.2f}"
    assert accuracy in text.split("## Results")[1].split("\n## ")[0]  # the earlier result is still shown

    monkeypatch.undo()  # fixed: the next run replaces the result, and the failed attempt with it
    assert _cli("run", path, tmp_path, *extra, "--no-report") == 0
    assert store.failed_attempt(CELL) is None and store.record(CELL).provenance["time"] >= record.provenance["time"]


def test_an_interrupted_rerun_keeps_the_finished_result(tiny_suite, write_suite, tmp_path, monkeypatch):
    path, store, record, preds = _finished_cell(tiny_suite, write_suite, tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_cells(expand(load_suite(path)), store, CPU, force=True, console=Console(file=io.StringIO()))
    _assert_unchanged(store, record, preds)
    assert store.failed_attempt(CELL).reason == "KeyboardInterrupt"


def test_a_swap_cut_between_its_renames_is_completed(tiny_suite, write_suite, tmp_path, monkeypatch):
    path, store, record, _ = _finished_cell(tiny_suite, write_suite, tmp_path)
    rename, calls = os.rename, []

    def killed_on_second_rename(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("killed")  # the old result is aside, the new one not yet in place
        rename(src, dst)

    monkeypatch.setattr("bench.store.os.rename", killed_on_second_rename)
    with pytest.raises(OSError, match="killed"):
        run_cells(expand(load_suite(path)), store, CPU, force=True, console=Console(file=io.StringIO()))
    monkeypatch.undo()
    assert store.record(CELL) is None and store.cells() == []
    lines = store.recover()
    assert lines == [f"{store.cell_dir(CELL)}: completed its interrupted replacement"]
    new = store.record(CELL)
    assert new.status == "done" and new.provenance["time"] >= record.provenance["time"] and new != record
    assert not list(store.attempts_dir.iterdir())


def test_recover_restores_a_result_and_removes_dead_attempts(tiny_suite, write_suite, tmp_path):
    _, store, record, _ = _finished_cell(tiny_suite, write_suite, tmp_path)
    cut = store.attempt(CELL)  # a replacement that never wrote its record, with the result moved aside
    os.rename(store.cell_dir(CELL), cut.path.with_name(cut.path.name + ".replaced"))
    dead = store.attempts_dir / f"{CELL}.999999999-0000"  # a pid no process has
    dead.mkdir()
    (dead / "history.csv").write_text("epoch\n1\n")
    other = "synthetic__stl(task=top)__seed0"  # a cell whose lock a live run holds: its attempt stays
    held = store.lock(other)
    assert held.try_acquire()
    try:
        alive = store.attempt(other)
        lines = store.recover()
    finally:
        held.release()
    assert f"{store.cell_dir(CELL)}: restored after an interrupted replacement" in lines
    assert store.record(CELL) == record and store.cells() == [CELL]
    assert sorted(p.name for p in store.attempts_dir.iterdir()) == [alive.path.name]
    assert any(str(dead) in line for line in lines)
    assert f"{other}: left its attempt alone; a live run holds the cell (pid {os.getpid()} on" in "\n".join(lines)


def test_a_failed_atomic_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    atomic_write_json(path, {"version": 1})

    def replace_fails(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("bench.store.os.replace", replace_fails)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary file left


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)],
                         ids=["umask022", "umask002"])
def test_written_files_respect_the_umask(tiny_suite, write_suite, tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        _finished_cell(tiny_suite, write_suite, tmp_path)
        atomic_torch_save({"x": torch.zeros(2)}, D.cache_dir(tmp_path / "data") / "decoded.pt")
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".yaml"]
    names = {p.name for p in files}
    assert {"record.json", "history.csv", "predictions.npz", "log.txt", "suite.json", "decoded.pt"} <= names
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: oct(file_mode) for p in files}
    folders = [p for p in (tmp_path / "results").rglob("*") if p.is_dir()]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {oct(dir_mode)}


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_damaged_cell_is_named_rerun_and_left_out_of_the_report(tiny_suite, write_suite, tmp_path, capsys):
    path = write_suite(tiny_suite(seeds=[0, 1]))
    assert _cli("run", path, tmp_path, "--no-report") == 0
    store = Store(tmp_path / "results", "tiny")
    damaged = store.cell_dir("synthetic__hard_share__seed1") / "record.json"
    _truncate(damaged)
    _truncate(store.dir / "suite.json")
    capsys.readouterr()
    assert _cli("report", path, tmp_path) == 0
    text = (tmp_path / "reports" / "tiny.md").read_text()
    assert f"- **Skipped, damaged:** `{damaged}: not valid JSON" in text
    assert f"- **Skipped, damaged:** `{store.dir / 'suite.json'}: not valid JSON" in text
    (rows,) = markdown_tables(section(text, "Results"))
    assert [r["n"] for r in rows if r["strategy"] == "hard_share"] == ["1"]  # only seed 0 counted
    assert "synthetic__hard_share__seed1" not in text.split("## Appendix")[1]

    assert _cli("run", path, tmp_path, "--no-report") == 0
    err = capsys.readouterr().err
    (named,) = [line for line in err.splitlines() if "damaged result" in line]
    assert named.startswith(f"damaged result {damaged}: not valid JSON") and "running the cell again" in named
    assert "done 1, cached 1, failed 0" in err
    assert store.record("synthetic__hard_share__seed1").status == "done"


def test_damaged_files_of_either_schema_name_themselves(tmp_path):
    legacy = Store(tmp_path, "cifar_mtl")
    shutil.copytree(LEGACY / "cifar_mtl" / "cifar10__hard_share__seed0", legacy.cell_dir("a"))
    shutil.copytree(LEGACY / "cifar_mtl" / "cifar10__hard_share__seed0", legacy.cell_dir("b"))
    _truncate(legacy.cell_dir("a") / "metrics.json")
    with pytest.raises(RecordError, match=r"/a/metrics\.json: not valid JSON .*truncated\?"):
        legacy.record("a")
    _truncate(legacy.cell_dir("b") / "predictions.npz")
    assert legacy.record("b").status == "done"  # the record itself is fine ...
    with pytest.raises(RecordError, match=r"/b/predictions\.npz: damaged"):
        legacy.finished("b")  # ... but the result is not complete
    (legacy.cell_dir("b") / "predictions.npz").unlink()
    with pytest.raises(RecordError, match=r"/b/predictions\.npz: incomplete: no pred__class10"):
        legacy.is_done("b", "any key")


def test_a_damaged_history_leaves_out_its_curve_with_a_note(tiny_suite, write_suite, tmp_path):
    """Item 5's kind, for history.csv: the report names the file and keeps the cell's metrics."""
    path = write_suite(tiny_suite(seeds=[0, 1]))
    assert _cli("run", path, tmp_path, "--no-report") == 0
    history = Store(tmp_path / "results", "tiny").cell_dir("synthetic__hard_share__seed1") / "history.csv"
    history.write_bytes(b'epoch,train_loss\n1,0.5\n2,"unterminated\n')
    assert _cli("report", path, tmp_path) == 0
    text = (tmp_path / "reports" / "tiny.md").read_text()
    assert f"> Note: curve left out, `{history}: damaged (Error tokenizing data" in text
    (table,) = markdown_tables(section(text, "Results"))
    assert next(r for r in table if r["strategy"] == "hard_share")["n"] == "2"  # both seeds' metrics still count


UNUSABLE_HISTORIES = {  # what is written over seed 1's history.csv -> the problem its note names
    "header alone": ("stage,epoch,lr,train_loss,val_loss\n", "no epochs (a header alone)"),
    "wrong columns": ("epoch,loss\n1,0.5\n", "no column train_loss, val_loss (has epoch, loss)"),
    "text for a number": ("epoch,train_loss,val_loss\n1,0.5,high\n", "column val_loss is not numbers"),
    "deleted": (None, "missing or empty"),
}


def test_an_unusable_history_leaves_out_its_curve_with_a_note(tiny_suite, write_suite, tmp_path, monkeypatch):
    """Defect 2: a history.csv holding its header alone crashed every report (fill_between on no rows);
    wrong columns and a deleted file were dropped without a word. Each is a note, the metrics stand, and
    with no usable history left the Training curves section still shows the notes."""
    skip_rendering(monkeypatch)
    path = write_suite(tiny_suite(seeds=[0, 1]))
    assert _cli("run", path, tmp_path, "--no-report") == 0
    store = Store(tmp_path / "results", "tiny")
    histories = [store.cell_dir(f"synthetic__hard_share__seed{s}") / "history.csv" for s in (0, 1)]
    good = histories[1].read_text()
    for name, (content, problem) in UNUSABLE_HISTORIES.items():
        histories[1].unlink() if content is None else histories[1].write_text(content)
        assert _cli("report", path, tmp_path) == 0, name
        text = (tmp_path / "reports" / "tiny.md").read_text()
        curves = section(text, "Training curves")
        assert f"> Note: curve left out, `{histories[1]}: {problem}`" in curves, name
        assert "![curves synthetic]" in curves, name  # seed 0's curve is still drawn
        (table,) = markdown_tables(section(text, "Results"))
        assert next(r for r in table if r["strategy"] == "hard_share")["n"] == "2", name
        histories[1].write_text(good)
    histories[0].write_text(UNUSABLE_HISTORIES["header alone"][0])
    histories[1].unlink()
    assert _cli("report", path, tmp_path) == 0
    curves = section((tmp_path / "reports" / "tiny.md").read_text(), "Training curves")
    assert "![curves" not in curves
    assert f"`{histories[0]}: no epochs (a header alone)`" in curves and f"`{histories[1]}: missing or empty`" in curves


@pytest.mark.parametrize("manifest", ["garbage{{", "[]", '{"schema": 1}'], ids=["not JSON", "a list", "incomplete"])
def test_status_names_a_damaged_manifest_and_lists_the_cells_from_their_records(tiny_suite, write_suite, tmp_path,
                                                                                capsys, manifest):
    """Defect 3: `bench status` without the suite file read suite.json unguarded (a RecordError traceback)."""
    path, store, record, _ = _finished_cell(tiny_suite, write_suite, tmp_path)
    (store.dir / "suite.json").write_text(manifest + "\n")
    path.unlink()
    capsys.readouterr()
    assert cli.main(["status", "tiny", "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr()
    assert " ".join(out.err.split()).startswith(f"damaged {store.dir / 'suite.json'}: ")
    assert "Traceback" not in out.err
    (row,) = [line for line in out.out.splitlines() if CELL in line]
    assert "| done " in row and "1 done, 0 running, 0 failed, 0 left (of 1 cells)" in out.out
    shutil.rmtree(store.cell_dir(CELL))  # nothing left to list: exit 2, naming the folder
    assert cli.main(["status", "tiny", "--results", str(tmp_path / "results")]) == 2
    assert "nothing to show: no suite file and no results in" in " ".join(capsys.readouterr().err.split())


def test_finish_says_whether_the_attempt_became_the_result(tmp_path):
    # The runner hands the tracker the cell's record, or the failed attempt's files, by this answer.
    from bench.kinds import make_spec
    from bench.record import Record

    store = Store(tmp_path, "hand")
    spec = make_spec("multiclass", name="t", classes=2).to_dict()
    arrays = {"pred__t": np.array([[0.9, 0.1], [0.2, 0.8]], np.float16), "target__t": np.array([0, 0])}

    def finish(cell: str, status: str, key: str) -> bool:
        record = Record(suite="hand", cell=cell, dataset="d", strategy="s", strategy_name="hard_share",
                        multi_task=True, tasks=("t",), seed=0, status=status, key=key, specs={"t": spec},
                        test={"t": {"accuracy": 0.5}} if status == "done" else {})
        files = store.attempt(cell)
        if status == "done":
            files.write_predictions(arrays)
        return store.finish(files, record)

    assert finish("c", "done", "k1") is True and store.record("c").key == "k1"
    assert finish("c", "failed", "k2") is False  # beside the finished result, which stays
    assert store.record("c").key == "k1" and store.failed_attempt("c").key == "k2"
    assert finish("c", "done", "k3") is True and store.record("c").key == "k3"
    assert store.failed_attempt("c") is None  # gone with the folder it replaced
    assert finish("new", "failed", "k4") is True and store.record("new").status == "failed"  # nothing to keep
