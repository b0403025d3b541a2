"""The cell run every executor uses: a plain function of (suite, cell name, results folder, device).

    python -m bench run-cell cifar_mtl cifar10__hard_share__seed0     # the same, in a fresh process

`run_named_cell(CellJob(...))` reads the suite file, finds the cell by its name, and runs it under
its lock into the store (bench/runner.py: `execute_cell`), returning its `Outcome`. Inline runs call
`execute_cell` on their Cell objects directly; pool workers and SLURM jobs, which get only picklable
values, call this. A worker process keeps the expanded suite and its loaded datasets between cells.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from bench.runner import DataCache, OnEvent, Outcome, execute_cell
from bench.store import Store
from bench.train_cell import pick_device


@dataclass(frozen=True)
class CellJob:
    """What a fresh process needs to run one cell (plain values; paths absolute)."""

    suite: str  # the suite file
    cell: str  # the cell's name in the suite's grid
    results: str  # the results root (the store is <results>/<suite name>/)
    device: str = "auto"  # auto | cpu | cuda | cuda:N, picked in the process that runs the cell
    force: bool = False  # rerun even when the store holds it finished with its key
    threads: int | None = None  # torch intra-op threads of the process (None: leave them as they are)


@dataclass(frozen=True)
class RunContext:
    """What every executor needs besides the cells: where the results go and how cells run."""

    store: Store
    device: str  # as given (auto | cpu | cuda | cuda:N); each process picks its own
    force: bool = False
    suite_path: str | None = None  # absolute; worker processes re-read the suite from it (None: inline only)
    # torch intra-op threads per cell run; None: each executor's default (inline: torch's; local:
    # cpus // workers; slurm: cpus_per_task). CPU results are identical across executors only at
    # equal thread counts: a reduction splits differently over threads.
    threads: int | None = None

    def job(self, cell: str, device: str | None = None) -> CellJob:
        """The picklable job of one cell of this run, for a worker process or a SLURM job."""
        if self.suite_path is None:
            raise ValueError(f"{cell}: only an inline run can run cells that come from no suite file")
        return CellJob(suite=self.suite_path, cell=cell, results=str(self.store.dir.parent.resolve()),
                       device=device or self.device, force=self.force, threads=self.threads)


class ExecutorError(ValueError):
    """Executor options that cannot work (a bad worker count, a GPU that does not exist, no SLURM
    controller); raised before any training, and the CLI exits 2 with the message."""


class CellNotFound(ValueError):
    """The suite's grid has no cell of that name (a typo, or the suite file changed since planning)."""


def run_named_cell(job: CellJob, *, datasets: DataCache | None = None, on_event: OnEvent | None = None) -> Outcome:
    """Run `job.cell` of `job.suite` into the store under `job.results`; see bench/runner.py's execute_cell.

    Raises SuiteError for a malformed suite and CellNotFound for an unknown cell name, before any training.
    """
    cells = _grid(str(Path(job.suite).resolve()), os.stat(job.suite).st_mtime_ns)
    if job.cell not in cells:
        names = list(cells)
        raise CellNotFound(f"{job.cell}: not a cell of {job.suite}; its cells: {', '.join(names[:5])}"
                           + (f" ... ({len(names)} in all; `bench validate` lists them)" if len(names) > 5 else ""))
    cell = cells[job.cell]
    if job.threads:
        torch.set_num_threads(job.threads)
    device = pick_device(job.device)
    if datasets is None or datasets.device != device:
        datasets = DataCache(device)
    return execute_cell(cell, Store(job.results, cell.suite), device, datasets, force=job.force, on_event=on_event)


@lru_cache(maxsize=4)
def _grid(path: str, mtime_ns: int) -> dict:
    """The suite's cells by name, expanded once per process and suite file version."""
    from bench.config import load_suite
    from bench.grid import expand

    return {c.name: c for c in expand(load_suite(path))}
