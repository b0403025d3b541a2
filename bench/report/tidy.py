"""`results/<suite>/results.csv`: every stored number in one tidy table, for pandas, R or a spreadsheet.

One row per cell x task x metric x split ("test", or "val" at the kept epoch), with the cell's
identity (dataset, strategy entry, registered strategy, seed; empty for a cell combined over seeds),
its status, whether its result is stale, its best epoch, epochs trained and the "still improving"
flag. A cell without results (failed, diverged) has one row with its status and reason and empty
task, metric and value, so that `pd.read_csv(path)` sees every cell of the store. The report
rewrites the file each time it runs; nothing reads it back.
"""

from __future__ import annotations

import pandas as pd

from bench.report.convergence import still_improving
from bench.report.data import ReportData
from bench.store import atomic_write_text

RESULTS_CSV = "results.csv"
COLUMNS = ("suite", "dataset", "cell", "strategy", "strategy_name", "seed", "status", "reason", "stale", "task",
           "split", "metric", "value", "best_epoch", "epochs", "still_improving")


def results_frame(d: ReportData) -> pd.DataFrame:
    rows = []
    for r in d.records:
        base = {"suite": d.manifest.name, "dataset": r.dataset, "cell": r.cell, "strategy": r.strategy,
                "strategy_name": r.strategy_name, "seed": r.seed, "status": r.status, "reason": r.reason,
                "stale": r.cell in d.stale, "best_epoch": r.best_epoch, "epochs": r.epochs}
        if r.status != "done":
            rows.append(base)
            continue
        flag = still_improving(r, d.history(r.cell))
        base["still_improving"] = None if flag is None else bool(flag)
        for split, results in (("test", r.test), ("val", r.val)):
            for task, metrics in results.items():
                rows += [{**base, "task": task, "split": split, "metric": m, "value": v} for m, v in metrics.items()]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in ("seed", "best_epoch", "epochs"):
        frame[column] = frame[column].astype("Int64")  # integers with gaps (an ensemble has no seed)
    frame["still_improving"] = frame["still_improving"].astype("boolean")
    return frame


def write_results_csv(d: ReportData) -> None:
    atomic_write_text(d.store.dir / RESULTS_CSV, results_frame(d).to_csv(index=False))
