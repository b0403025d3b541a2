"""The reporter: reads only the results store and writes `reports/<suite>.md` plus figures.

`write_report` gathers the store's records once (`ReportData`) and joins the sections in
`SECTIONS`, each a function `(ReportData) -> str` that may save figures under `reports/<suite>/`.
A new section is one function added to that list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.config import Suite
from bench.store import Store, atomic_write_text


@dataclass
class ReportData:
    suite: Suite
    store: Store
    records: list[dict]  # metrics.json of every cell of the suite found in the store
    rows: pd.DataFrame  # one row per (cell, task) of finished cells: identity + test_/val_ metrics
    fig_dir: Path  # reports/<suite>/
    run_seconds: float | None
    command: str
    stale: list[str]  # cells whose stored key differs from the current grid's (older config or code)

    def figure_link(self, path: Path) -> str:
        return f"{self.fig_dir.name}/{path.name}"


def write_report(suite: Suite, results: Path, reports: Path, *, run_seconds: float | None = None,
                 command: str = "") -> Path:
    from bench.grid import expand

    store = Store(results, suite.name)
    keys = {c.name: c.key for c in expand(suite)}
    records = [m for m in (store.metrics(n) for n in sorted(keys)) if m is not None]
    stale = [r["cell"] for r in records if r.get("key") != keys[r["cell"]]]
    fig_dir = reports / suite.name
    fig_dir.mkdir(parents=True, exist_ok=True)
    data = ReportData(suite=suite, store=store, records=records, rows=task_rows(records), fig_dir=fig_dir,
                      run_seconds=run_seconds, command=command or f"python -m bench run {suite.name}", stale=stale)
    from bench.report.sections import SECTIONS

    text = "\n\n".join(s for s in (section(data) for section in SECTIONS) if s) + "\n"
    path = reports / f"{suite.name}.md"
    atomic_write_text(path, text)
    return path


def task_rows(records: list[dict]) -> pd.DataFrame:
    """Flatten finished cells to one row per (cell, task)."""
    rows = []
    for r in records:
        if r.get("status") != "done":
            continue
        for task, metrics in r["test"].items():
            row = {k: r[k] for k in ("cell", "dataset", "strategy", "strategy_name", "seed")}
            row.update(task=task, params=r["params"], train_seconds=r["train_seconds"],
                       images_per_second=r["images_per_second"], best_epoch=r["best_epoch"])
            row.update({f"test_{m}": v for m, v in metrics.items()})
            row.update({f"val_{m}": v for m, v in r["val"].get(task, {}).items()})
            rows.append(row)
    return pd.DataFrame(rows)


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z")
