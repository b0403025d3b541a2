"""Report sections of a protocol suite: the study's published numbers and the tuned recipe beside the
measured rows, and the numerics every cell trained with.

Both read only stores: the suite manifest's `reference` (`source`, `published` {strategy id: {task:
value}}, `tuned`: another suite's name) and the records, here and in `results/<tuned>/` beside this
suite's store. Published values are shown as the study printed them (accuracy in %, MAE as is),
never used in a computation.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from bench.kinds import TaskSpec
from bench.record import RecordError, stale_reason
from bench.report import ReportData, task_rows
from bench.report.stats import fmt_mean_std
from bench.store import Store


def reference_comparison(d: ReportData) -> str:
    ref = d.manifest.reference
    if not ref.get("published") and not ref.get("tuned"):
        return ""
    tuned_rows, tuned_note = _tuned_rows(d, ref.get("tuned"))
    published = ref.get("published", {})
    table = []
    for ds, rows in d.rows.groupby("dataset", sort=False):
        for task, spec in _specs(d, ds).items():
            scale, digits = spec.display
            col = f"test_{spec.primary}"
            for strategy, srows in rows[rows.task == task].groupby("strategy", sort=False):
                tuned = tuned_rows[(tuned_rows.strategy == strategy) & (tuned_rows.task == task)] \
                    if not tuned_rows.empty else tuned_rows
                table.append({
                    "dataset": ds, "task": task, "strategy": strategy, "metric": spec.unit,
                    "this protocol": _with_n(srows.get(col, pd.Series(dtype=float)), scale, digits),
                    "published": _published(published.get(strategy, {}).get(task), digits),
                    f"tuned ({ref.get('tuned') or '-'})": _with_n(tuned.get(col, pd.Series(dtype=float)), scale, digits)
                    + (" (stale)" if not tuned.empty and tuned.stale.any() else ""),
                })
    if not table:
        return ""
    text = ("## This protocol vs the study and the tuned recipe\n\nTest primary metric per strategy and task: "
            "this suite's cells (mean ± std over seeds, n), the study's published number, and the tuned "
            "suite's stored cells of the same strategy id and task.")
    if ref.get("source"):
        text += f" Published numbers: {ref['source'].strip()}."
    return text + (f" {tuned_note}" if tuned_note else "") + "\n\n" + d.table("protocol", table)


def _specs(d: ReportData, dataset: str) -> dict[str, TaskSpec]:
    """The dataset's tasks in the manifest's order, each with its spec as a finished record stored it."""
    stored = {t: s for r in d.records if r.dataset == dataset and r.status == "done" for t, s in r.specs.items()}
    order = next((e.tasks for e in d.manifest.datasets if e.name == dataset), tuple(stored))
    return {t: TaskSpec.from_dict(stored[t]) for t in order if t in stored}


def _with_n(values: pd.Series, scale: float, digits: int) -> str:
    n = int(values.notna().sum())
    return "-" if n == 0 else f"{fmt_mean_std(values, scale, digits)} (n={n})"


def _published(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _tuned_rows(d: ReportData, suite: str | None) -> tuple[pd.DataFrame, str]:
    """The tuned suite's finished cells as task rows (with a `stale` column), and a note on what is missing."""
    if not suite:
        return pd.DataFrame(), ""
    store = Store(d.store.dir.parent, suite)
    records, stale = [], []
    for cell in store.cells():
        try:
            r = store.finished(cell)
        except RecordError:
            continue  # the tuned suite's own report names its damaged files
        if r is not None:
            records.append(r)
            stale += [r.cell] if stale_reason(r) else []
    if not records:
        return pd.DataFrame(), f"No finished cells of `{suite}` in `{store.dir}` yet (`bench run {suite}`)."
    rows = task_rows(records)
    rows["stale"] = rows.cell.isin(stale)
    note = f"{len(stale)} of the tuned suite's cells are stale (their training code changed)." if stale else ""
    return rows, note


def numerics(d: ReportData) -> str:
    """What the cells computed with: precision asked and run, determinism, TF32, autotuning, CUDA graph."""
    trained = [r for r in d.records if r.status == "done" and not r.members]
    if not trained:
        return ""
    counts = Counter(_numerics_row(r.numerics) for r in trained)
    table = [{**dict(row), "cells": n} for row, n in counts.items()]
    return ("## Precision and determinism\n\nWhat the trained cells computed with (`train.precision`, "
            "`train.deterministic`; a CPU computes in fp32 whatever is asked). Deterministic cells run "
            "cuDNN's deterministic kernels without autotuning and torch's deterministic algorithms where "
            "it has them.\n\n" + d.table("numerics", table))


def _numerics_row(n: dict) -> tuple[tuple[str, str], ...]:
    if not n:
        return (("precision", "(not recorded: stored before numerics were)"),)
    ran, asked = n.get("precision", "?"), n.get("requested", "?")
    yes = {True: "yes", False: "no"}
    return (("device", n.get("device_type", "?")), ("precision", ran if ran == asked else f"{ran} ({asked} asked)"),
            ("deterministic", yes.get(n.get("deterministic"), "?")), ("TF32", yes.get(n.get("tf32"), "?")),
            ("cuDNN autotuning", yes.get(n.get("cudnn_benchmark"), "?")),
            ("CUDA graph", yes.get(n.get("cuda_graph"), "?")))
