"""Run a suite's cells: skip finished ones, isolate failures, record everything in the store.

The training of one cell itself is bench/train_cell.py (part of every cell's key); this module is
the bookkeeping around it (attempts, records, failures, progress), which no stored number depends on.

`run_cell` trains one cell (or combines it from its members' stored predictions, bench/combine.py)
into a fresh attempt folder and hands the attempt and its `Record` to the store, which swaps it in
only when it is done or nothing finished was there; a failed or interrupted rerun leaves the earlier
result in place and is recorded beside it (bench/store.py). A cell that raises is recorded as failed
(or diverged, for a non-finite loss) with its reason and traceback in its log, and the suite goes
on. A damaged stored cell is named in one line and run again. The grid puts an ensemble's members
first; it fails, naming the member, when one of them did.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from bench.combine import combine_cell
from bench.data import TaskSet, load_taskset
from bench.grid import Cell
from bench.progress import RunProgress
from bench.record import Record, RecordError, code_version
from bench.store import FAILED_ATTEMPT, FAILED_LOG, HISTORY, LOG, RECORD, CellFiles, Store
from bench.strategies import STRATEGIES
from bench.tracking import Tracker, cell_tags
from bench.train_cell import train_cell
from bench.trainer import Diverged


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def text(self, total: int) -> str:
        left = total - len(self.done) - len(self.cached) - len(self.failed)
        return f"suite: {len(self.done)} done, {len(self.cached)} cached, {len(self.failed)} failed, {left} left"


def run_cells(cells: list[Cell], store: Store, device: torch.device, *, force: bool = False,
              console: Console | None = None, datasets: DataCache | None = None,
              estimates: dict[str, float] | None = None, tracker: Tracker | None = None) -> RunSummary:
    """Run every cell not already finished with the same key; never raise for a cell's failure.

    datasets: the data the preflight loaded (bench/preflight.py); estimates: cell -> seconds, for the
    progress bars; tracker: where each trained cell is also logged (bench/tracking)."""
    console = console or Console(stderr=True)
    for line in store.recover():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    summary, t0 = RunSummary(), time.perf_counter()
    datasets = datasets or DataCache(device)
    shown = dict(datasets.reported)  # failure reason -> where it was printed in full
    with RunProgress(console, len(cells), estimates) as progress:
        for cell in cells:
            seconds = None
            if not force and _is_done(store, cell, console):
                summary.cached.append(cell.name)
            else:
                record = run_cell(cell, store, device, datasets, progress, tracker)
                (summary.done if record.status == "done" else summary.failed).append(cell.name)
                console.log(_outcome_text(store, record, shown), markup=False)  # markup off: rich drops [bracketed] words
                seconds = record.wall_seconds
            progress.finish(cell.name, summary.text(len(cells)), seconds)
    summary.wall_seconds = time.perf_counter() - t0
    return summary


def _is_done(store: Store, cell: Cell, console: Console) -> bool:
    try:
        return store.is_done(cell.name, cell.key)
    except RecordError as err:  # one unwrapped line that names the file
        console.print(f"damaged result {err}; running the cell again", markup=False, highlight=False, soft_wrap=True)
        return False


def _outcome_text(store: Store, record: Record, shown: dict[str, str]) -> str:
    """One line per cell; a failure's reason in full the first time only (a missing dataset fails all
    its cells alike), later `shown` names where it was printed."""
    if record.status == "done":
        return f"{record.cell}: done"
    stored = store.record(record.cell)  # the earlier result, when the store kept it (see Store.finish)
    kept = "; its earlier result stays" if stored is not None and stored.status == "done" else ""
    if record.reason in shown:
        return f"{record.cell}: {record.status} (the same reason as {shown[record.reason]}){kept}"
    shown[record.reason] = record.cell
    return f"{record.cell}: {record.status} ({record.reason}){kept}"


def failure_reason(err: BaseException) -> str:
    """How a cell's failure reads in its record: "ExceptionType: message"."""
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class DataCache:
    """Each dataset config is loaded once per run and kept on the device; load errors are kept too.

    `reported`: failure reasons already printed in full (by the preflight), with where."""

    def __init__(self, device: torch.device):
        self.device = device
        self._items: dict[str, TaskSet | Exception] = {}
        self.reported: dict[str, str] = {}

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


def epochs(cell: Cell) -> int:
    """The epochs `cell` trains in all, its history rows (a sequential strategy: one stage per task)."""
    return STRATEGIES.get(cell.strategy.name)(**cell.strategy.params).epochs(cell.train.epochs, cell.tasks)


def run_cell(cell: Cell, store: Store, device: torch.device, datasets: DataCache | None = None,
             progress: RunProgress | None = None, tracker: Tracker | None = None) -> Record:
    """Train (or combine from its members) one cell in a fresh attempt and store it; return its record.

    An interrupt (KeyboardInterrupt) is recorded like a failure, then raised again. `tracker` logs the
    cell (bench/tracking); a worker process makes it with `resume_tracker(state)` from the state the
    parent's `tracker.state()` gave it, so its runs land under the suite's run.
    """
    attempt, interrupt = store.attempt(cell.name), None
    code, prov = cell.code(), provenance(device)  # the code as this process runs it
    tracker = tracker or Tracker()
    tracker.start_cell(cell.name, {"key": cell.key, **cell.resolved()}, cell_tags(cell))
    if progress is not None:
        progress.start(cell.name, 1 if cell.members else epochs(cell))
    t0 = time.perf_counter()
    try:
        if cell.members:
            results = combine_cell(cell, store, attempt)
        else:
            results = _train(cell, attempt, device, datasets or DataCache(device), progress, tracker)
        status, reason = "done", ""
    except BaseException as err:  # a cell's failure must never take the suite down; an interrupt does, after this
        status = "diverged" if isinstance(err, Diverged) else "failed"
        reason, results = failure_reason(err), {}
        attempt.append_log(traceback.format_exc())
        interrupt = None if isinstance(err, Exception) else err
    record = Record(**identity(cell), status=status, reason=reason, key=cell.key, config=cell.resolved(),
                    code=code, provenance=prov, wall_seconds=time.perf_counter() - t0, **results)
    stored = store.finish(attempt, record)
    tracker.end_cell(cell.name, record.to_json(), cell_files(store, cell.name, stored))
    if interrupt is not None:
        raise interrupt
    return record


def cell_files(store: Store, cell: str, stored: bool) -> list[Path]:
    """The files a tracker keeps of a finished attempt: its record, history and log, or, for a rerun that
    failed beside an earlier result (Store.finish returned False), its record and log there."""
    names = (RECORD, HISTORY, LOG) if stored else (FAILED_ATTEMPT, FAILED_LOG)
    return [store.cell_dir(cell) / n for n in names]


def _train(cell: Cell, attempt: CellFiles, device: torch.device, datasets: DataCache, progress: RunProgress | None,
           tracker: Tracker) -> dict:
    def on_epoch(row: dict) -> None:
        attempt.append_log(json.dumps(row))
        tracker.log_epoch(cell.name, row)
        if progress is not None:
            progress.epoch(_epoch_text(row))

    return train_cell(cell, attempt, device, datasets.get(cell.dataset), on_epoch)


def _epoch_text(row: dict) -> str:
    vals = [f"{k[4:]}={v:.3f}" for k, v in row.items() if k.startswith("val_") and k.endswith(("accuracy", "mae"))]
    stage = f"stage {row['stage']} " if row.get("stage") else ""
    return f"{stage}epoch {row['epoch']} loss={row['train_loss']:.3f} " + " ".join(vals)


def identity(cell: Cell) -> dict:
    """The identity fields of a cell's record."""
    return {"suite": cell.suite, "cell": cell.name, "dataset": cell.dataset.name, "strategy": cell.strategy.id,
            "strategy_name": cell.strategy.name, "multi_task": STRATEGIES.get(cell.strategy.name).multi_task,
            "tasks": cell.tasks, "seed": cell.seed, "members": {m.name: m.key for m in cell.members}}


def provenance(device: torch.device) -> dict:
    return {
        "code_version": code_version(), "git_commit": _git_commit(), "torch": torch.__version__,
        # the installed version, not an import: importing torchvision costs ~2 s and a cell may not use it
        "torchvision": _version("torchvision"), "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "threads": torch.get_num_threads(),  # intra-op CPU threads (--threads): CPU results may differ between counts
        "cuda": torch.version.cuda if device.type == "cuda" else None, "host": platform.node(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


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
