"""A lock per cell: two runs of one suite never train a cell twice, a busy cell is waited for, a lock
left by a killed process (or a silent host) is taken over, recovery spares live runs, and
`bench status` reads it all from the store."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import torch
from rich.console import Console

from bench import cli
from bench.config import load_suite
from bench.executors import run_cells
from bench.grid import expand
from bench.locks import CellLock
from bench.record import Record
from bench.runner import execute_cell, identity, run_cell
from bench.status import status_rows
from bench.store import Store
from conftest import REPO

CPU = torch.device("cpu")


def test_a_busy_cell_is_waited_for_and_counted_once(tiny_suite, write_suite, tmp_path):
    cells = expand(load_suite(write_suite(tiny_suite(seeds=[0, 1]))))
    store, busy = Store(tmp_path, "tiny"), cells[1]
    held, trained_elsewhere = store.lock(busy.name), []
    assert held.try_acquire()  # "another run" holds seed 1

    def other_run_finishes(event) -> None:
        if event.kind == "waiting" and event.cell == busy.name and not trained_elsewhere:
            run_cell(busy, store, CPU, lock=held)
            trained_elsewhere.append((store.cell_dir(busy.name) / "record.json").stat().st_ino)
            held.release()

    summary = run_cells(cells, store, CPU, console=Console(file=io.StringIO()), poll_s=0.01,
                        on_event=other_run_finishes)
    assert summary.done == [cells[0].name] and summary.cached == [busy.name] and summary.failed == []
    assert (store.cell_dir(busy.name) / "record.json").stat().st_ino == trained_elsewhere[0]  # not trained again


def test_two_runs_of_one_suite_train_each_cell_once(tiny_suite, write_suite, tmp_path):
    """Two runs at once (threads here; the lock marker tells two holders in one process apart by its
    token, as it does two processes) into one results folder: each cell is trained by one of them
    and counted as cached by the other."""
    raw = tiny_suite(strategies=["stl", "hard_share"], seeds=[0, 1])
    raw["datasets"]["synthetic"]["tasks"] = ["quadrant", "top"]
    cells = expand(load_suite(write_suite(raw)))
    summaries = [None, None]

    def run(i: int) -> None:
        summaries[i] = run_cells(cells, Store(tmp_path, "tiny"), CPU, console=Console(file=io.StringIO()),
                                 poll_s=0.05)

    runs = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    a, b = summaries
    assert sorted(a.done + b.done) == sorted(c.name for c in cells)  # each trained exactly once
    assert sorted(a.done + a.cached) == sorted(b.done + b.cached) == sorted(c.name for c in cells)
    assert a.failed == b.failed == []
    store = Store(tmp_path, "tiny")
    assert all(store.record(c.name).status == "done" for c in cells)
    assert not list(store.attempts_dir.iterdir()) and not list(store.locks_dir.iterdir())


HOLD = """
import sys
from bench.store import Store
store = Store(sys.argv[1], "tiny")
lock = store.lock(sys.argv[2])  # kept: a lock object that is collected lets go
assert lock.try_acquire()
attempt = store.attempt(sys.argv[2])
attempt.append_log('{"epoch": 3, "stage": "", "train_loss": 0.5}')
print(attempt.path, flush=True)
sys.stdin.read()  # hold the lock until killed
"""


def test_a_live_holder_is_respected_and_a_killed_ones_lock_taken_over(tiny_suite, write_suite, tmp_path, capsys):
    path, results, cell = write_suite(tiny_suite()), tmp_path / "results", "synthetic__hard_share__seed0"
    store = Store(results, "tiny")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(results), cell], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        attempt = Path(holder.stdout.readline().strip())
        lines = store.recover()
        assert lines == [f"{cell}: left its attempt alone; a live run holds the cell (pid {holder.pid} on "
                         f"{os.uname().nodename})"]
        assert attempt.is_dir()
        outcome = execute_cell(expand(load_suite(path))[0], store, CPU)
        assert (outcome.status, outcome.reason) == ("busy", f"held by pid {holder.pid} on {os.uname().nodename}")
        assert store.cells() == []  # nothing trained
        assert cli.main(["status", str(path), "--results", str(results)]) == 0
        row = next(line for line in capsys.readouterr().out.splitlines() if cell in line)
        assert "| running " in row and f"pid {holder.pid} on" in row and "epoch 3 (train loss 0.500)" in row
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(["run", str(path), "--results", str(results), "--device", "cpu", "--no-report"]) == 0
    assert store.record(cell).status == "done"
    assert not attempt.exists() and not list(store.attempts_dir.iterdir())  # the dead attempt was removed
    assert not (store.locks_dir / f"{cell}.lock").exists()


def test_a_lock_of_another_host_is_taken_over_only_after_its_lease(tmp_path):
    path = tmp_path / "c.lock"
    path.write_text("filelock/2\npid=4242\nhost=elsewhere\nmode=lease\ntoken=abc\nduration=0.2\n")
    lock = CellLock(path, lease_s=0.2)
    assert not lock.try_acquire()  # one look never takes another host's lock
    assert (lock.holder().host, lock.holder().pid) == ("elsewhere", 4242)
    assert lock.acquire(timeout=30, poll_s=0.02)  # unchanged for the lease (0.2 s) while watched: dead
    try:
        assert (lock.holder().host, lock.holder().pid) == (os.uname().nodename, os.getpid())
    finally:
        lock.release()
    assert not path.exists()


def test_status_reads_done_running_failed_and_left(tiny_suite, write_suite, tmp_path):
    raw = tiny_suite(strategies=["stl", "hard_share"])
    raw["datasets"]["synthetic"]["tasks"] = ["quadrant", "top"]
    cells = expand(load_suite(write_suite(raw)))
    store = Store(tmp_path, "tiny")
    done, failed, running, stale = cells[0], cells[1], cells[2], cells[0]
    run_cells([done], store, CPU, console=Console(file=io.StringIO()))
    store.finish(store.attempt(failed.name), Record(**identity(failed), status="failed", reason="ValueError: no",
                                                    key=failed.key))
    lock = store.lock(running.name)
    assert lock.try_acquire()
    try:
        store.attempt(running.name).append_log(json.dumps({"stage": "", "epoch": 2, "train_loss": 1.25}))
        keys = {c.name: c.key for c in cells}
        rows = {r.cell: (r.state, r.detail) for r in status_rows(store, keys)}
        stale_rows = status_rows(store, {**keys, stale.name: "another key"})
    finally:
        lock.release()
    assert rows[done.name] == ("done", "")
    assert rows[failed.name] == ("failed", "failed: ValueError: no")
    assert rows[running.name][0] == "running" and rows[running.name][1].startswith(f"pid {os.getpid()} on ")
    assert rows[running.name][1].endswith(", epoch 2 (train loss 1.250)")
    assert [r.state for r in stale_rows] == ["left", "failed", "running"]
    assert stale_rows[0].detail == "stale: its config or training code changed"
    after = {r.cell: r.state for r in status_rows(store, keys)}
    assert after[running.name] == "left"  # its holder let go without a result
