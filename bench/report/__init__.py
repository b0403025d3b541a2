"""The reporter: reads only the results store and writes `reports/<suite>.md` plus figures.

`write_report` gathers the store once (`ReportData`): the suite manifest, every cell's record, the
failed reruns kept beside earlier results, and which records are stale and why. It then joins the
sections in `SECTIONS`, each a function `(ReportData) -> str` that may save figures under
`reports/<suite>/`. A new section is one function added to that list. Nothing here expands a
suite or builds a strategy, so a report rebuilds from any results folder, even after its suite file
changed or went away.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.record import Manifest, Record, RecordError, stale_reason
from bench.store import Store, atomic_write_text


@dataclass
class ReportData:
    manifest: Manifest  # the suite as run: entries, datasets, seeds
    store: Store
    records: list[Record]  # every readable record of the suite's cells, by cell name
    failed_reruns: list[Record]  # reruns that failed while an earlier finished result stayed
    stale: dict[str, str]  # cell -> why its finished result no longer matches the config or code
    skipped: list[str]  # damaged or incomplete files, each "path: problem", left out of the report
    rows: pd.DataFrame  # one row per (cell, task) of finished cells: identity + test_/val_ metrics
    fig_dir: Path  # reports/<suite>/
    run_seconds: float | None
    command: str
    damaged_histories: list[str] = field(default_factory=list)  # "path: problem" of unreadable history.csv files

    def figure_link(self, path: Path) -> str:
        return f"{self.fig_dir.name}/{path.name}"

    def history(self, cell: str) -> pd.DataFrame | None:
        """The cell's history, None when it has none or it is damaged (then noted in `damaged_histories`:
        the cell's metrics stand, only what its history feeds is left out)."""
        try:
            return self.store.history(cell)
        except RecordError as err:
            if str(err) not in self.damaged_histories:
                self.damaged_histories.append(str(err))
            return None


def write_report(results: Path, suite: str, reports: Path, *, current_keys: dict[str, str] | None = None,
                 manifest: Manifest | None = None, run_seconds: float | None = None, command: str = "") -> Path:
    """Write reports/<suite>.md from results/<suite>/.

    current_keys: cell -> key of the suite's grid now, when its file exists; without it staleness is
    judged from the code alone. manifest: used when the store has none (stores from before manifests);
    without either, one is rebuilt from the records.
    """
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
    data = ReportData(manifest=manifest, store=store, records=records, failed_reruns=failed_reruns, stale=stale,
                      skipped=skipped, rows=task_rows(records), fig_dir=fig_dir, run_seconds=run_seconds,
                      command=command or f"python -m bench run {suite}")
    from bench.report.sections import SECTIONS

    text = "\n\n".join(s for s in (section(data) for section in SECTIONS) if s) + "\n"
    path = reports / f"{suite}.md"
    atomic_write_text(path, text)
    return path


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
