"""One cell's run under its lock: skip it when finished, isolate its failure, record it in the store.

The training of one cell itself is bench/train_cell.py (part of every cell's key); this module is
the bookkeeping around it (lock, attempts, records, failures), which no stored number depends on.
Which cells run, and where (this process, a worker pool, SLURM), is bench/executors/.

`execute_cell` takes the cell's lock (bench/locks.py) without waiting: when another live run holds
it, the cell is `busy` and nothing is touched. Under the lock it checks the store again (a cell
finished by another run meanwhile is `cached`), then `run_cell` trains it (or combines it from its
members' stored predictions, bench/combine.py) into a fresh attempt folder and hands the attempt
and its `Record` to the store, which swaps it in only when it is done or nothing finished was
there; a failed or interrupted rerun leaves the earlier result in place and is recorded beside it
(bench/store.py). A cell that raises is recorded as failed (or diverged, for a non-finite loss)
with its reason and traceback in its log. A damaged stored cell is named and run again. An
ensemble fails, naming the member, when one of its members did. `record_lost` records a cell whose
process died without recording it (a killed pool worker, a cancelled SLURM job).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from bench.combine import combine_cell
from bench.data import TaskSet, load_taskset
from bench.grid import Cell
from bench.locks import CellLock
from bench.record import Record, RecordError, code_version
from bench.store import LOG, CellFiles, Store
from bench.strategies import STRATEGIES
from bench.train_cell import train_cell
from bench.trainer import Diverged

OUTCOMES = ("done", "failed", "diverged", "cached", "busy")


@dataclass(frozen=True)
class Outcome:
    """What became of one cell in one run (picklable: it comes back from worker processes and jobs)."""

    cell: str
    status: str  # done | failed | diverged (its new record's) | cached (finished before) | busy (a live run holds it)
    reason: str = ""  # failed / diverged: the record's reason; busy: who holds the cell


@dataclass(frozen=True)
class Event:
    """Progress of one cell, for the screen (bench/executors/progress.py); picklable, so workers send them."""

    cell: str
    kind: str  # start | epoch | note | waiting | end
    epochs: int = 0  # start: the epochs it will train (0 for a combined cell)
    row: dict | None = None  # epoch: the history row
    text: str = ""  # note, waiting: one line
    outcome: Outcome | None = None  # end


OnEvent = Callable[[Event], None]


def execute_cell(cell: Cell, store: Store, device: torch.device, datasets: DataCache | None = None, *,
                 force: bool = False, on_event: OnEvent | None = None) -> Outcome:
    """Run one cell if no live run holds it and (unless `force`) it is not finished with its key.

    Never raises for the cell's own failure; an interrupt (KeyboardInterrupt) is recorded, then raised.
    """
    emit = on_event or (lambda event: None)
    lock = store.lock(cell.name)
    if not lock.try_acquire():
        return Outcome(cell.name, "busy", f"held by {lock.holder() or 'a run that is starting'}")
    try:
        if not force and is_finished(store, cell, emit):
            return Outcome(cell.name, "cached")
        for line in store.recover_cell(cell.name):  # leftovers of dead runs of this cell
            emit(Event(cell.name, "note", text=line))
        emit(Event(cell.name, "start", epochs=0 if cell.members else cell.train.epochs))
        record = run_cell(cell, store, device, datasets, lambda row: emit(Event(cell.name, "epoch", row=row)), lock)
        return Outcome(cell.name, record.status, record.reason)
    except LockLost as err:
        return Outcome(cell.name, "busy", str(err))
    finally:
        lock.release()


def is_finished(store: Store, cell: Cell, emit: OnEvent) -> bool:
    """Does the store hold the cell finished with its current key? A damaged result is a note, and False."""
    try:
        return store.is_done(cell.name, cell.key)
    except RecordError as err:  # one unwrapped line that names the file
        emit(Event(cell.name, "note", text=f"damaged result {err}; running the cell again"))
        return False


def outcome_text(store: Store, outcome: Outcome) -> str:
    """One line for the screen: the outcome, and whether an earlier result stayed (see Store.finish)."""
    if outcome.status in ("done", "cached"):
        return f"{outcome.cell}: {outcome.status}"
    stored = store.record(outcome.cell) if outcome.status != "busy" else None
    kept = stored is not None and stored.status == "done"
    return f"{outcome.cell}: {outcome.status} ({outcome.reason})" + ("; its earlier result stays" if kept else "")


class DataCache:
    """Each dataset config is loaded once per process and kept on the device; load errors are kept too."""

    def __init__(self, device: torch.device):
        self.device = device
        self._items: dict[str, TaskSet | Exception] = {}

    def get(self, cfg) -> TaskSet:
        key = json.dumps(asdict(cfg), sort_keys=True, default=list)
        if key not in self._items:
            try:
                self._items[key] = load_taskset(cfg).to(self.device)
            except Exception as err:  # recorded for every cell of this dataset, then re-raised
                self._items[key] = err
        item = self._items[key]
        if isinstance(item, Exception):
            raise item
        return item


class LockLost(RuntimeError):
    """Another run took the cell's lock over while this one trained (it judged this run dead)."""


def run_cell(cell: Cell, store: Store, device: torch.device, datasets: DataCache | None = None,
             on_epoch: Callable[[dict], None] | None = None, lock: CellLock | None = None) -> Record:
    """Train (or combine from its members) one cell in a fresh attempt and store it; return its record.

    The caller holds the cell's `lock` (checked before the swap). An interrupt (KeyboardInterrupt) is
    recorded like a failure, then raised. Raises LockLost, storing nothing, when another run took
    the lock over meanwhile (it judged this one dead).
    """
    attempt, interrupt = store.attempt(cell.name), None
    code, prov = cell.code(), provenance(device)  # the code as this process runs it
    t0 = time.perf_counter()
    try:
        if cell.members:
            results = combine_cell(cell, store, attempt)
        else:
            results = _train(cell, attempt, device, datasets or DataCache(device), on_epoch)
        status, reason = "done", ""
    except BaseException as err:  # a cell's failure must never take the suite down; an interrupt does, after this
        status = "diverged" if isinstance(err, Diverged) else "failed"
        reason, results = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__, {}
        attempt.append_log(traceback.format_exc())
        interrupt = None if isinstance(err, Exception) else err
    record = Record(**identity(cell), status=status, reason=reason, key=cell.key, config=cell.resolved(),
                    code=code, provenance=prov, wall_seconds=time.perf_counter() - t0, **results)
    if lock is not None and lock.lost:
        raise LockLost(f"{cell.name}: another run took the cell's lock over; this run's attempt "
                       f"{attempt.path} is left for it to remove")
    store.finish(attempt, record)
    if interrupt is not None:
        raise interrupt
    return record


def record_lost(cell: Cell, store: Store, reason: str, *, wait_s: float = 0.0) -> bool:
    """Record `cell` as failed for a process that died mid-cell without recording it, keeping the
    log of its attempt. Waits up to `wait_s` for the dead process's lock (another host's lease
    expires after bench.locks.LEASE_S). False, recording nothing, when the lock stayed held or the
    cell was finished by another run meanwhile."""
    lock = store.lock(cell.name)
    if not lock.acquire(wait_s):
        return False
    try:
        if is_finished(store, cell, lambda event: None):
            return False
        logs = [(p.name, (p / LOG).read_text()) for p in store.leftovers(cell.name) if (p / LOG).exists()]
        store.recover_cell(cell.name)  # the lost attempts go, their logs into this one
        attempt = store.attempt(cell.name)
        for name, text in logs:
            attempt.append_log(f"--- the log of the lost attempt {name}:\n{text}")
        attempt.append_log(reason)
        store.finish(attempt, Record(**identity(cell), status="failed", reason=reason, key=cell.key,
                                     config=cell.resolved(), code=cell.code(),
                                     provenance=provenance(torch.device("cpu"))))
        return True
    finally:
        lock.release()


def _train(cell: Cell, attempt: CellFiles, device: torch.device, datasets: DataCache,
           on_epoch: Callable[[dict], None] | None) -> dict:
    def logged(row: dict) -> None:
        attempt.append_log(json.dumps(row))
        if on_epoch is not None:
            on_epoch(row)

    return train_cell(cell, attempt, device, datasets.get(cell.dataset), logged)


def identity(cell: Cell) -> dict:
    """The identity fields of a cell's record."""
    return {"suite": cell.suite, "cell": cell.name, "dataset": cell.dataset.name, "strategy": cell.strategy.id,
            "strategy_name": cell.strategy.name, "multi_task": STRATEGIES.get(cell.strategy.name).multi_task,
            "tasks": cell.tasks, "seed": cell.seed, "members": {m.name: m.key for m in cell.members}}


def provenance(device: torch.device) -> dict:
    import torchvision

    return {
        "code_version": code_version(), "git_commit": _git_commit(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "cuda": torch.version.cuda if device.type == "cuda" else None, "host": platform.node(),
        "torch_threads": torch.get_num_threads(),  # CPU numerics depend on it (reductions split over threads)
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@lru_cache(maxsize=1)  # two git calls took 6 s of a 14 s smoke run when made per cell; a run has one commit
def _git_commit() -> str | None:
    if os.environ.get("BENCH_GIT_COMMIT"):  # set where the checkout travels without .git (a GPU box)
        return os.environ["BENCH_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bench"], capture_output=True, text=True,
                               cwd=Path(__file__).parent, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
