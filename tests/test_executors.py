"""Executors: planning in waves, a local worker pool that stores what an inline run stores, a worker
killed mid-cell losing only its cell, `bench run-cell`, and executor options refused before training."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
import yaml

from bench import cli
from bench.arguments import parser
from bench.config import load_suite
from bench.executors import plan
from bench.grid import expand
from bench.locks import read_holder
from bench.store import Store
from conftest import assert_same_results


def _run(suite, results, *extra) -> int:
    return cli.main(["run", str(suite), "--results", str(results), "--device", "cpu", "--no-report", *extra])


def test_plan_puts_finished_cells_aside_and_ensembles_after_their_members(tmp_path, smoke_run):
    cells = expand(load_suite(smoke_run["suite"]))
    names = [c.name for c in cells]
    store = Store(smoke_run["results"], "smoke")
    assert store.cells() == sorted(names)  # every cell finished in the session's run

    p = plan(cells, store)
    assert p.cached == tuple(names) and p.waves == ()
    forced = plan(cells, store, force=True)
    ensemble = "synthetic__ensemble(of=hard_share,seeds=0+1)"
    assert [c.name for c in forced.waves[1]] == [ensemble]  # smoke's one combined cell, after the rest
    assert [c.name for c in forced.waves[0]] == [n for n in names if n != ensemble]

    empty = plan(cells, Store(tmp_path, "smoke"))
    assert empty.cached == () and [len(w) for w in empty.waves] == [len(cells) - 1, 1]
    only_ensemble = plan([c for c in cells if c.members], Store(tmp_path, "smoke"))
    assert [[c.name for c in w] for w in only_ensemble.waves] == [[ensemble]]  # its members are not in this run


def _kill_when_training(store: Store, cell: str, killed: list, deadline_s: float = 300) -> None:
    """Kill the worker process that holds `cell`'s lock once its attempt has logged an epoch."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        logs = [p / "log.txt" for p in store.leftovers(cell) if (p / "log.txt").exists()]
        holder = read_holder(store.locks_dir / f"{cell}.lock")
        if holder is not None and any('"epoch"' in log.read_text() for log in logs):
            os.kill(holder.pid, signal.SIGKILL)
            killed.append(holder.pid)
            return
        time.sleep(0.02)


POOLED = "hard_share,sequential_lwf,ensemble,slow"  # joint, staged and combined cells, and a slow one to kill
SLOW = "synthetic__slow__seed0"


@pytest.fixture(scope="module")
def pool_run(smoke_run, tmp_path_factory) -> dict:
    """The shrunk smoke suite plus a slow entry through `--executor local --workers 2 --threads 1`
    (one thread, as the inline session run), with the worker training SLOW killed mid-cell."""
    root = tmp_path_factory.mktemp("pool")
    raw = yaml.safe_load(smoke_run["suite"].read_text())
    raw["strategies"].append({"name": "hard_share", "id": "slow", "train": {"epochs": 12}})
    suite = root / "smoke.yaml"  # the same name and cells: the same keys as the inline run's
    suite.write_text(yaml.safe_dump(raw))
    results, killed = root / "results", []
    store = Store(results, "smoke")
    killer = threading.Thread(target=_kill_when_training, args=(store, SLOW, killed))
    killer.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("BENCH_CACHE_DIR", str(root / "cache"))
            code = _run(suite, results, "--strategies", POOLED, "--executor", "local", "--workers", "2",
                        "--threads", "1")
    finally:
        killer.join()
    return {"suite": suite, "results": results, "store": store, "code": code, "killed": killed}


def test_local_pool_stores_what_an_inline_run_stores(pool_run, smoke_run):
    """Two spawned workers give the inline session run's records, predictions and histories, at the
    same torch thread count."""
    pool, inline = pool_run["store"], Store(smoke_run["results"], "smoke")
    names = [n for n in inline.cells() if n in pool.cells()]
    assert len(names) == 5 and "synthetic__ensemble(of=hard_share,seeds=0+1)" in names
    assert_same_results(inline, pool, names)
    assert {pool.record(n).provenance["torch_threads"] for n in names} == {1}


def test_a_worker_killed_mid_cell_loses_only_that_cell(pool_run):
    store, killed = pool_run["store"], pool_run["killed"]
    assert len(killed) == 1 and pool_run["code"] == 1
    failed = store.record(SLOW)
    assert failed.status == "failed" and f"the worker process (pid {killed[0]} on" in failed.reason
    assert "died mid-cell" in failed.reason
    log = (store.cell_dir(SLOW) / "log.txt").read_text()
    assert "the log of the lost attempt" in log and '"epoch": 1' in log  # what the killed worker had logged
    others = [n for n in store.cells() if n != SLOW]
    assert len(others) == 6 and all(store.record(n).status == "done" for n in others)
    stamps = {n: (store.cell_dir(n) / "record.json").stat().st_ino for n in others}

    assert _run(pool_run["suite"], pool_run["results"], "--strategies", POOLED) == 0  # trains the lost cell only
    assert store.record(SLOW).status == "done" and len(store.history(SLOW)) == 12
    assert {n: (store.cell_dir(n) / "record.json").stat().st_ino for n in others} == stamps
    assert not list(store.attempts_dir.iterdir()) and not list(store.locks_dir.iterdir())


def test_run_cell_runs_one_named_cell_once(tiny_suite, write_suite, tmp_path, capsys):
    path, results = write_suite(tiny_suite(seeds=[0, 1])), tmp_path / "results"
    cell = "synthetic__hard_share__seed1"
    args = ["run-cell", str(path), cell, "--results", str(results), "--device", "cpu"]
    assert cli.main(args) == 0
    store = Store(results, "tiny")
    assert store.cells() == [cell] and store.record(cell).status == "done"
    assert f"{cell}: done" in capsys.readouterr().err
    assert cli.main(args) == 0 and f"{cell}: cached" in capsys.readouterr().err

    held = store.lock(cell)
    assert held.try_acquire()
    try:
        assert cli.main(args + ["--force"]) == cli.BUSY_EXIT
    finally:
        held.release()
    assert f"{cell}: busy (held by pid {os.getpid()} on" in capsys.readouterr().err

    assert cli.main(["run-cell", str(path), "synthetic__hard_share__seed7", "--results", str(results)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "synthetic__hard_share__seed7: not a cell of" in err and "synthetic__hard_share__seed0" in err


@pytest.mark.parametrize("extra, message", [
    (["--executor", "dask"], "--executor: unknown 'dask'; valid: inline, local, slurm"),
    (["--executor", "local", "--workers", "0"], "--workers: 0 is not a number of processes; give 1 or more"),
    (["--workers", "2"], "--workers and --gpus are options of --executor local, not inline"),
    (["--executor", "local", "--gpus", "0,x"], "--gpus: '0,x' is not a comma-separated list of GPU indices"),
    (["--executor", "local", "--gpus", "0,7", "--device", "auto"],
     "--gpus: GPU 7 does not exist; this machine shows 2 GPU(s), indices 0-1"),
    (["--executor", "local", "--gpus", "0"], "--gpus pins each worker to a GPU; it cannot go with --device cpu"),
    (["--executor", "slurm", "--cpus-per-task", "0"], "--cpus-per-task: 0 is too small; expected >= 1"),
    (["--threads", "0"], "--threads: 0 is not a number of threads; give 1 or more"),
], ids=["unknown", "workers0", "workers-inline", "gpus-malformed", "gpu-missing", "gpus-on-cpu", "slurm-cpus0",
        "threads0"])
def test_executor_options_that_cannot_work_exit_2_before_training(tiny_suite, write_suite, tmp_path, capsys,
                                                                  monkeypatch, extra, message):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # a machine with GPUs 0 and 1
    results = tmp_path / "results"
    assert _run(write_suite(tiny_suite()), results, *extra) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not results.exists()  # nothing trained, nothing written


def test_gpus_on_a_machine_without_one_exit_2(tiny_suite, write_suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert _run(write_suite(tiny_suite()), tmp_path / "results", "--executor", "local", "--gpus", "0",
                "--device", "auto") == 2
    assert "--gpus: GPU 0 does not exist; this machine shows no GPU" in " ".join(capsys.readouterr().err.split())


def test_a_pool_worker_pinned_to_a_gpu_sees_only_it(monkeypatch):
    """--gpus counts the GPUs this process sees (CUDA_VISIBLE_DEVICES), and a worker gets the real id."""
    from bench.executors.local import LocalPool

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    pool = LocalPool(3, (1, 0))
    assert [pool._ids[pool.gpus[slot % len(pool.gpus)]] for slot in range(3)] == ["5", "3", "5"]


def test_the_suite_slurm_block_is_checked_and_flags_win(tiny_suite, write_suite):
    from bench.config import SlurmConfig, SuiteError

    raw = tiny_suite(slurm={"partition": "gpu", "cpus_per_task": 4, "additional": {"account": "proj"}})
    suite = load_suite(write_suite(raw))
    assert suite.slurm == SlurmConfig(partition="gpu", cpus_per_task=4, additional={"account": "proj"})
    args = parser().parse_args(["run", "x", "--cpus-per-task", "8", "--time-min", "30"])
    assert cli._slurm_config(suite, args) == SlurmConfig(partition="gpu", cpus_per_task=8, time_min=30,
                                                         additional={"account": "proj"})
    raw["slurm"] = {"gpus": 1}
    with pytest.raises(SuiteError, match=r"slurm\.gpus: unknown parameter; valid: additional, array_parallelism"):
        load_suite(write_suite(raw))
    assert cli.main(["validate", str(write_suite(raw))]) == 2
