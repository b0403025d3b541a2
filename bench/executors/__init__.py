"""Executors: where a suite's cells run, separate from which cells run and in what order.

    run_cells(cells, store, device, executor=make_executor("local", workers=2), suite_path=...)

Planning (bench/executors/plan.py: cells finished in the store, waves with ensembles after their
members, cells another live run holds) is the same everywhere. An executor only runs the cells of a
wave, each through the one cell run, `execute_cell` / `run_named_cell` (bench/executors/job.py;
`bench run-cell SUITE CELL` in a fresh process), which takes the cell's lock and writes its record
to the store; outcomes come back to the planner, progress to the screen as events.

| executor | where | module |
| --- | --- | --- |
| `inline` (default) | this process, one cell after another | inline.py |
| `local` | N spawned worker processes on this machine, optionally pinned to GPUs | local.py |
| `slurm` | one SLURM job array per wave, through submitit; results through a shared file system | slurm.py |
"""

from __future__ import annotations

from bench.settings import SlurmConfig
from bench.executors.job import CellJob, CellNotFound, ExecutorError, RunContext, run_named_cell
from bench.executors.plan import Executor, Plan, RunSummary, plan, run_cells

EXECUTORS = ("inline", "local", "slurm")

__all__ = ["EXECUTORS", "CellJob", "CellNotFound", "Executor", "ExecutorError", "Plan", "RunContext", "RunSummary",
           "make_executor", "plan", "run_cells", "run_named_cell"]


def make_executor(name: str, *, workers: int | None = None, gpus: str | None = None, device: str = "auto",
                  slurm: SlurmConfig | None = None) -> Executor:
    """The executor `name` with its options checked: ExecutorError (before any training) for options
    that cannot work here, such as workers < 1, a GPU that does not exist or no SLURM controller."""
    if name not in EXECUTORS:
        raise ExecutorError(f"--executor: unknown {name!r}; valid: {', '.join(EXECUTORS)}")
    if name != "local" and (workers is not None or gpus):
        raise ExecutorError(f"--workers and --gpus are options of --executor local, not {name}"
                            + (" (give GPUs per cell with --gpus-per-task)" if name == "slurm" else ""))
    if name == "inline":
        from bench.executors.inline import Inline

        return Inline()
    if name == "local":
        from bench.executors.local import LocalPool, parse_gpus

        return LocalPool(1 if workers is None else workers, parse_gpus(gpus), device)
    try:
        from bench.executors.slurm import Slurm
    except ImportError as err:  # submitit is an optional extra
        raise ExecutorError(f"--executor slurm needs submitit ({err}): pip install 'mtl-bench[slurm]'") from None
    return Slurm(slurm or SlurmConfig())
