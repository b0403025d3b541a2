"""What a report is built from: the store gathered once (`ReportData`), with cached reads.

`gather` reads the suite manifest, every cell's record, the failed reruns kept beside earlier
results, and which records are stale and why. Sections then ask `ReportData` for a cell's
predictions or history (each file read once per report), a dataset's task specs, and the
strategies of a dataset in report order: single-task entries (the references) first, then the
others, each group in suite order. Nothing here expands a suite or builds a strategy, so a report
rebuilds from any results folder, even after its suite file changed or went away.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.kinds import TaskSpec
from bench.record import Entry, Manifest, Record, RecordError, stale_reason
from bench.store import HISTORY, Store, atomic_write_text


HISTORY_LOSSES = ("train_loss", "val_loss")  # every trained cell's history has them (bench/trainer.py)


def unusable_history(history: pd.DataFrame) -> str | None:
    """Why a read history.csv cannot feed the report (curves, epochs, "still improving"), None when it can:
    no rows (a header alone), no loss columns, or a loss or validation column that is not numbers."""
    if not len(history):
        return "no epochs (a header alone)"
    missing = [c for c in HISTORY_LOSSES if c not in history]
    if missing:
        return f"no column {', '.join(missing)} (has {', '.join(map(str, history.columns))})"
    text = [c for c in history if (c in HISTORY_LOSSES or str(c).startswith("val_"))
            and not pd.api.types.is_numeric_dtype(history[c])]
    return f"column {', '.join(text)} is not numbers" if text else None


@dataclass
class ReportData:
    manifest: Manifest  # the suite as run: entries, datasets, seeds
    store: Store
    records: list[Record]  # every readable record of the suite's cells, by cell name
    failed_reruns: list[Record]  # reruns that failed while an earlier finished result stayed
    stale: dict[str, str]  # cell -> why its finished result no longer matches the config or code
    skipped: list[str]  # damaged or incomplete files, each "path: problem", left out of the report
    fig_dir: Path  # reports/<suite>/: figures and the tables as CSV
    run_seconds: float | None
    command: str
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)  # file reads and derived results
    damaged_histories: list[str] = field(default_factory=list)  # "path: problem" of unreadable history.csv files

    @property
    def rows(self) -> pd.DataFrame:
        """One row per (cell, task) of finished cells: identity + test_/val_ metrics (`task_rows`)."""
        return self.cached("rows", lambda: task_rows(self.records))

    def figure_link(self, path: Path) -> str:
        return f"{self.fig_dir.name}/{path.name}"

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """`make()` once per report for `key` (a file read, or a result several sections use)."""
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    # ---- stored files, each read once ----------------------------------------------------
    def predictions(self, cell: str) -> dict[str, np.ndarray] | None:
        return self.cached(("predictions", cell), lambda: self.store.predictions(cell))

    def arrays(self, cell: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        """A cell's stored test predictions (float32) and targets for one task."""
        p = self.predictions(cell)
        return self.cached(("arrays", cell, task), lambda: (p[f"pred__{task}"].astype(np.float32), p[f"target__{task}"]))

    def history(self, cell: str) -> pd.DataFrame | None:
        """The cell's history, None when it has none or it cannot be used: damaged, without epochs or
        the loss columns, or missing for a finished trained cell. Those are noted in `damaged_histories`
        (the cell's metrics stand, only what its history feeds is left out); a combined cell (an
        ensemble) has no history of its own, and that is no note."""
        def read() -> pd.DataFrame | None:
            try:
                history = self.store.history(cell)
            except RecordError as err:
                self.damaged_histories.append(str(err))
                return None
            problem = unusable_history(history) if history is not None else \
                "missing or empty" if self._trained(cell) else None
            if problem:
                self.damaged_histories.append(f"{self.store.cell_dir(cell) / HISTORY}: {problem}")
                return None
            return history

        return self.cached(("history", cell), read)

    def _trained(self, cell: str) -> bool:
        """Is `cell` a finished cell that trained (so wrote a history), not one combined from members?"""
        return any(r.cell == cell and r.status == "done" and not r.members for r in self.records)

    # ---- the suite's structure ---------------------------------------------------------------
    @property
    def entries(self) -> dict[str, Entry]:
        """The suite's strategy entries by id, in suite order."""
        return {e.id: e for e in self.manifest.strategies}

    def done(self, dataset: str | None = None) -> list[Record]:
        return [r for r in self.records if r.status == "done" and (dataset is None or r.dataset == dataset)]

    def specs(self, dataset: str) -> dict[str, TaskSpec]:
        """TaskSpecs of a dataset's tasks in the suite's task order, rebuilt from stored records."""
        def build() -> dict[str, TaskSpec]:
            specs: dict[str, TaskSpec] = {}
            for r in self.done(dataset):
                for t, s in r.specs.items():
                    specs.setdefault(t, TaskSpec.from_dict(s))
            order = next((list(e.tasks) for e in self.manifest.datasets if e.name == dataset), list(specs))
            return {t: specs[t] for t in order + sorted(set(specs) - set(order)) if t in specs}

        return self.cached(("specs", dataset), build)

    def datasets(self) -> list[str]:
        """Datasets with finished cells, in suite order."""
        found = dict.fromkeys(r.dataset for r in self.done())
        suite = [e.name for e in self.manifest.datasets if e.name in found]
        return suite + [ds for ds in found if ds not in suite]

    def single_task(self, strategy: str, dataset: str) -> bool:
        """Does entry `strategy` train one model per task on `dataset` (a reference for delta_m)? True for
        a single-task strategy (`stl`) and for an entry whose every cell trains one task (a `tasks:`
        subset of one); never for an entry combined from others (an ensemble)."""
        entry = self.entries.get(strategy)
        if entry is not None and entry.of is not None:
            return False
        records = [r for r in self.done(dataset) if r.strategy == strategy]
        if not records or any(r.members for r in records):
            return False
        return (entry is not None and not entry.multi_task) or all(len(r.tasks) == 1 for r in records)

    def strategies(self, dataset: str) -> list[str]:
        """Entry ids with finished cells on `dataset`: single-task ones first, then the others, each in
        suite order (entries the manifest does not know last, by name)."""
        found = {r.strategy for r in self.done(dataset)}
        order = [e.id for e in self.manifest.strategies if e.id in found] + sorted(found - set(self.entries))
        single = [s for s in order if self.single_task(s, dataset)]
        return single + [s for s in order if s not in single]

    def cells(self, dataset: str, strategy: str, task: str | None = None) -> list[Record]:
        """Finished records of one entry on one dataset (those predicting `task`), lowest seed first;
        a seed-less (combined) cell sorts last."""
        records = [r for r in self.done(dataset) if r.strategy == strategy and (task is None or task in r.tasks)]
        return sorted(records, key=lambda r: (r.seed is None, r.seed or 0, r.cell))

    def tasks(self, want: Callable[[TaskSpec], bool]) -> Iterator[tuple[str, str, TaskSpec]]:
        """(dataset, task, spec) for every task of finished cells whose spec `want`s."""
        for ds in self.datasets():
            for task, spec in self.specs(ds).items():
                if want(spec):
                    yield ds, task, spec

    # ---- tables ------------------------------------------------------------------------------
    def table(self, name: str, rows: list[dict[str, Any]]) -> str:
        """`rows` as a Markdown table, also saved as `<fig_dir>/<name>.csv` (linked under the table)."""
        if not rows:
            return ""
        path = self.fig_dir / f"{name}.csv"
        atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))
        return (tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True)
                + f"\n\n<sub>[CSV]({self.figure_link(path)})</sub>")


def gather(results: Path, suite: str, reports: Path, *, current_keys: dict[str, str] | None,
           manifest: Manifest | None, run_seconds: float | None, command: str) -> ReportData:
    """Read results/<suite>/ once; see `write_report` for the arguments."""
    store, skipped = Store(results, suite), []
    stored = _stored_manifest(store, skipped)
    manifest = stored or manifest
    names = [n for n in manifest.cells if store.cell_dir(n).is_dir()] if manifest and manifest.cells else store.cells()
    records, failed_reruns = _read(store, sorted(names), skipped)
    if manifest is None:
        manifest = Manifest.from_records(suite, records)
    stale = {r.cell: why for r in records if r.status == "done" and (why := _stale(r, current_keys, failed_reruns))}
    fig_dir = reports / suite
    fig_dir.mkdir(parents=True, exist_ok=True)
    return ReportData(manifest=manifest, store=store, records=records, failed_reruns=failed_reruns, stale=stale,
                      skipped=skipped, fig_dir=fig_dir, run_seconds=run_seconds,
                      command=command or f"python -m bench run {suite}")


def _stored_manifest(store: Store, skipped: list[str]) -> Manifest | None:
    try:
        return store.manifest()
    except RecordError as err:
        skipped.append(str(err))
        return None


def _read(store: Store, names: list[str], skipped: list[str]) -> tuple[list[Record], list[Record]]:
    """The cells' records and failed reruns; damaged ones go to `skipped` by path."""
    records, failed_reruns = [], []
    for name in names:
        try:
            record = store.finished(name) or store.record(name)
            failed = store.failed_attempt(name)
        except RecordError as err:
            skipped.append(str(err))
            continue
        records += [record] if record else []
        failed_reruns += [failed] if failed and record and record.status == "done" else []
    return records, failed_reruns


def _stale(r: Record, current_keys: dict[str, str] | None, failed_reruns: list[Record]) -> str | None:
    reasons = [stale_reason(r, current_keys)]
    if any(f.cell == r.cell for f in failed_reruns):
        reasons.append("its latest rerun failed, so this is the earlier result")
    return "; ".join(x for x in reasons if x) or None


IDENTITY_COLUMNS = ("cell", "dataset", "strategy", "strategy_name", "seed", "task", "params", "train_seconds",
                    "images_per_second", "best_epoch")


def task_rows(records: list[Record]) -> pd.DataFrame:
    """Flatten finished cells to one row per (cell, task); with none, an empty frame that still has
    the identity columns, so sections can group it (a suite whose every cell failed)."""
    rows = []
    for r in records:
        if r.status != "done":
            continue
        for task, metrics in r.test.items():
            row = dict(zip(IDENTITY_COLUMNS, (r.cell, r.dataset, r.strategy, r.strategy_name, r.seed, task, r.params,
                                              r.train_seconds, r.images_per_second, r.best_epoch)))
            row.update({f"test_{m}": v for m, v in metrics.items()})
            row.update({f"val_{m}": v for m, v in r.val.get(task, {}).items()})
            rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(IDENTITY_COLUMNS))


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z")
