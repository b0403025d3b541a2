"""Optional experiment tracking: MLflow runs and TensorBoard event files, fed by a few runner hooks.

Off by default; switched on per suite (`tracking: {mlflow: URI-or-folder, tensorboard: folder}`) or
per command (`--mlflow`, `--tensorboard`, which win). The runner calls one `Tracker` at fixed points:

    tracker = make_tracker(suite.tracking, mlflow=args.mlflow, tensorboard=args.tensorboard)
    tracker.check()                                        # before any training: TrackingError if unusable
    tracker.start_suite(name, description, manifest)       # MLflow: the suite's parent run
    state = tracker.state()                                # JSON: how another process finds that run
    tracker.start_cell(cell, resolved_config, tags)        # MLflow: a child run; TensorBoard: a writer
    tracker.log_epoch(cell, row)                           # per history row (numbers only)
    tracker.end_cell(cell, record, files)                  # test metrics, status, record files
    tracker.end_suite(report_path, figure_paths)           # report and figures on the parent run

MLflow is driven through `MlflowClient` with explicit run ids, never the fluent API's active run,
so a cell may be tracked from another process (a worker pool, a SLURM job): that process calls
`resume_tracker(state)` and then the cell hooks, and its runs land under the same parent. A
tracker that fails mid-run (server gone) warns once and is dropped; a cell never fails for it.
mlflow and tensorboard are optional extras, imported only when a tracker is enabled.
"""

from __future__ import annotations

from bench.settings import TrackingConfig
from bench.tracking.base import CompositeTracker, NullTracker, Tracker, TrackingError, TrackingWarning, flatten
from bench.tracking.mlflow_runs import MlflowTracker, mlflow_uri
from bench.tracking.tensorboard_events import TensorBoardTracker

__all__ = ["BACKENDS", "CompositeTracker", "MlflowTracker", "NullTracker", "TensorBoardTracker", "Tracker",
           "TrackingError", "TrackingWarning", "cell_tags", "flatten", "make_tracker", "mlflow_uri", "resume_tracker"]

BACKENDS: dict[str, type[Tracker]] = {"mlflow": MlflowTracker, "tensorboard": TensorBoardTracker}


def make_tracker(cfg: TrackingConfig, mlflow: str | None = None, tensorboard: str | None = None) -> Tracker:
    """The suite's trackers (`cfg`: a TrackingConfig), each overridden by a command-line value if given."""
    chosen = {"mlflow": (mlflow, "--mlflow") if mlflow else (cfg.mlflow, "tracking.mlflow"),
              "tensorboard": (tensorboard, "--tensorboard") if tensorboard else (cfg.tensorboard, "tracking.tensorboard")}
    trackers = [BACKENDS[name](target, where=where) for name, (target, where) in chosen.items() if target]
    return CompositeTracker(trackers) if trackers else NullTracker()


def resume_tracker(state: dict) -> Tracker:
    """In another process: the trackers of `state` (from `Tracker.state()`), logging under the same suite run."""
    trackers = [BACKENDS[name].resume(s) for name, s in state.items()]
    return CompositeTracker(trackers) if trackers else NullTracker()


def cell_tags(cell) -> dict[str, str]:
    """The tags the issue asks for, from a grid Cell: suite, strategy (its id), dataset and seed."""
    seed = cell.seed if cell.seed is not None else "+".join(str(m.seed) for m in cell.members)
    return {"suite": cell.suite, "strategy": cell.strategy.id, "dataset": cell.dataset.name, "seed": str(seed)}
