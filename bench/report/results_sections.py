"""The report's frame and its main tables: header, results per dataset, classification metrics,
failed and stale cells, the per-cell appendix and the command that reproduces it."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from bench.record import Record
from bench.report.comparison import DELTA_M, Comparison, row_comparisons
from bench.report.convergence import stage_lengths, still_improving
from bench.report.data import ReportData, now
from bench.report.prediction_stats import expected_calibration_error, nll
from bench.report.references import matches
from bench.report.stats import binomial_se, fmt_interval, fmt_mean_std, mean_std

DETAIL_COLUMNS = (("macro_precision", "macro P %"), ("macro_recall", "macro R %"), ("macro_f1", "macro F1 %"),
                  ("weighted_precision", "weighted P %"), ("weighted_f1", "weighted F1 %"), ("accuracy", "acc %"))
ECE_BINS = 15  # equal-width confidence bins (Guo et al. 2017 use 15)


def header(d: ReportData) -> str:
    status = Counter(r.status for r in d.records)
    prov = [r.provenance for r in d.records]
    devices = sorted({p.get("device", "?") for p in prov})
    torch_v = sorted({p.get("torch", "?") for p in prov})
    python_v = sorted({p.get("python", "?") for p in prov})  # of the machines that trained, not this one
    cell_wall = sum(r.wall_seconds for r in d.records)
    lines = [
        f"# Suite `{d.manifest.name}`",
        "",
        d.manifest.description.strip(),
        "",
        f"- Generated: {now()} from `{d.store.dir}`",
        f"- Hardware: {', '.join(devices) or 'n/a'}",
        f"- Libraries: torch {', '.join(torch_v) or 'n/a'}, python {', '.join(python_v) or 'n/a'}",
        f"- Cells: {len(d.records)} recorded: " + ", ".join(f"{n} {s}" for s, n in sorted(status.items())),
        *([f"- **Stale:** {len(d.stale)} finished cells no longer match the config or code they would get "
           "now; they are shown, and `bench run` retrains them (see Stale cells)"] if d.stale else []),
        *([f"- **Failed reruns:** {len(d.failed_reruns)}; the earlier results stay (see Failed cells)"]
          if d.failed_reruns else []),
        *[f"- **Skipped, damaged:** `{s}`" for s in d.skipped],
        f"- Seeds: {', '.join(map(str, d.manifest.seeds))}; every number is mean ± std over seeds (n stated); "
        "std is the sample standard deviation (ddof = 1)",
        *_sampling_error(d),
        f"- Time: training cells {cell_wall:.1f} s in all"
        + (f"; this run {d.run_seconds:.1f} s end to end" if d.run_seconds is not None else ""),
    ]
    return "\n".join(lines)


def _sampling_error(d: ReportData) -> list[str]:
    """Per classification task: the binomial standard error of each row's mean test accuracy."""
    lines = []
    for ds, task, spec in d.tasks(lambda s: "confusion" in s.panels):
        cells = [r for sid in d.strategies(ds) for r in d.cells(ds, sid, task)]
        n = len(d.arrays(cells[0].cell, task)[1])  # every cell of a dataset predicts the same test items
        parts = []
        for sid in d.strategies(ds):
            acc = mean_std(r.test[task][spec.primary] for r in d.cells(ds, sid, task))[0]
            if not math.isnan(acc):
                parts.append(f"{sid} {100 * binomial_se(acc, n):.2f}")
        if parts:
            lines.append(f"  - {ds} / {task} (N = {n:,}): " + ", ".join(parts))
    if not lines:
        return []
    return ["- Test-set sampling error of each accuracy, as points: the binomial standard error "
            "sqrt(p (1 - p) / N) of the row's mean accuracy p on N test images (one model's error from "
            "the finite test set, not the spread over seeds):", *lines]


def summary_tables(d: ReportData) -> str:
    if not d.done():
        return "## Results\n\nNo finished cells yet."
    parts = ["## Results", "Test metrics at the epoch with the best validation "
             f"{_select_text(d)}, mean ± std over seeds; `n` is the number of seeds of the row (an ensemble is "
             "one seed-less cell). Single-task entries come first: they are the references. `params` counts "
             "trainable parameters of all models a strategy needs; `train s` is time in training steps; `img/s` "
             "is training images per second. `vs STL` gives each task's verdict against the matched single-task "
             "reference (see Against single-task learning); `notes` flags what limits a comparison."]
    for ds in d.datasets():
        parts.append(f"### {ds}\n\n" + d.table(f"results_{ds}", [_result_row(d, ds, s) for s in d.strategies(ds)]))
        parts += [f"> Note: {n}" for n in sorted({n for r in d.done(ds) for n in r.notes})]
    parts.append(DELTA_M_TEXT)
    if not any(d.single_task(s, ds) for ds in d.datasets() for s in d.strategies(ds)):
        parts.append("¹ This suite has no single-task entry (e.g. `stl`), so `delta_m %` is blank.")
    return "\n\n".join(parts)


DELTA_M_TEXT = (
    "`delta_m %` (Maninis et al. 2019, eq. 4): the mean over a strategy's tasks of "
    "(-1)^l_i (M_i - M_stl,i) / M_stl,i x 100, where M is the task's primary test metric (accuracy, "
    "higher is better, l_i = 0; MAE, lower is better, l_i = 1) and M_stl its matched single-task "
    "reference's. Each seed is paired with the reference cells of the same seed; the column shows the "
    "mean over the seeds that pair with its 95% t-interval, and their number when it differs from the "
    "row's n. An ensemble (one seed-less cell) is compared with the reference's mean over its seeds, "
    "without an interval. Positive means better than single-task learning; blank for single-task "
    "entries; \"no matched STL\" when no single-task entry of the same backbone trains every task.")


def _select_text(d: ReportData) -> str:
    return "loss" if d.manifest.select == "loss" else "score (mean primary metric)"


def _result_row(d: ReportData, ds: str, sid: str) -> dict[str, str]:
    records, specs = d.cells(ds, sid), d.specs(ds)
    line = {"strategy": sid}
    for task, spec in specs.items():
        scale, digits = spec.display
        for metric, label in spec.columns:
            line[f"{task} {label}"] = fmt_mean_std([r.test[task][metric] for r in records if task in r.test
                                                    and metric in r.test[task]], scale, digits)
    single = d.single_task(sid, ds)
    no_reference = not any(d.single_task(s, ds) for s in d.strategies(ds))
    row_n = len(records)
    m = matches(d, ds).get(sid)
    found = row_comparisons(d, ds, sid)
    label = "delta_m % ¹" if no_reference else "delta_m %"
    line[label] = "" if single or no_reference else _delta_m_cell(found.get(DELTA_M), row_n, m)
    line["vs STL"] = "(reference)" if single else _verdicts(found, m)
    per_seed = {}
    for r in records:
        per_seed.setdefault(r.seed, []).append(r)
    line["params"] = _int_mean([sum(r.params or 0 for r in rs) for rs in per_seed.values()])
    line["train s"] = fmt_mean_std([sum(r.train_seconds for r in rs) for rs in per_seed.values()], 1, 1)
    line["img/s"] = fmt_mean_std([r.images_per_second for r in records], 1, 0)
    line["n"] = str(len(per_seed))
    line["notes"] = "; ".join(_notes(d, records) + list(m.flags if m else ()) + (m.unmatched_notes if m else []))
    return line


def _int_mean(values: list[int]) -> str:
    return f"{int(np.mean(values)):,}" if values else "-"


def _delta_m_cell(c: Comparison | None, row_n: int, m) -> str:
    if c is None:
        return "no matched STL" if m is not None and not m.complete else "-"
    text = fmt_interval(c.mean, c.low, c.high, 1, 2)
    if not c.paired:
        return text + " (vs mean STL)"
    return text + (f" (n={c.n})" if c.n != row_n else "")


def _verdicts(found: dict[str, Comparison], m) -> str:
    """Each task's verdict against its reference, "no matched STL" for a task without one (the whole
    cell says so when no task has one; the reason is in the row's notes)."""
    parts = [f"{c.task} {c.verdict}" for t, c in found.items() if t != DELTA_M]
    if not parts:
        return "no matched STL"
    return ", ".join(parts + [f"{t}: no matched STL" for t in (m.unmatched if m else ())])


def _notes(d: ReportData, records: list[Record]) -> list[str]:
    """"still improving" when cells kept their last epoch (of a stage), with how many of the row's cells."""
    flags = [still_improving(r, d.history(r.cell)) for r in records if not r.members]
    known = [f for f in flags if f is not None]
    improving = [f for f in known if f]
    if not improving:
        return []
    stages = sorted({s for f in improving for s in f})
    where = f" (stage {', '.join(map(str, stages))})" if any(len(r.extra.get("stage_best_epochs", ())) > 1
                                                             for r in records) else ""
    return [f"still improving{where}: {len(improving)} of {len(known)} cells"]


def classification_details(d: ReportData) -> str:
    table = []
    for ds, task, spec in d.tasks(lambda s: "class_metrics" in s.panels):
        for sid in d.strategies(ds):
            records = d.cells(ds, sid, task)
            if not records:
                continue
            line = {"dataset": ds, "task": task, "strategy": sid}
            for metric, label in DETAIL_COLUMNS:
                line[label] = fmt_mean_std([r.test[task].get(metric, math.nan) for r in records], 100, 2)
            arrays = [d.arrays(r.cell, task) for r in records]
            line["NLL"] = fmt_mean_std([nll(p, t.astype(np.int64)) for p, t in arrays], 1, 3)
            line["ECE %"] = fmt_mean_std([expected_calibration_error(p, t.astype(np.int64), ECE_BINS)
                                          for p, t in arrays], 100, 2)
            table.append({**line, "n": str(len(records))})  # an ensemble: one seed-less cell, n = 1
    if not table:
        return ""
    return ("## Classification metrics per task\n\nTest precision, recall and F1 in %, macro (every class counts "
            "the same, over the classes present in the targets or the predictions, as scikit-learn) and "
            "weighted by class support; weighted recall equals accuracy. A macro score well below its weighted "
            "one means rare classes fare worse. Calibration from the stored (float16) test probabilities: `NLL` "
            "is the mean negative log-likelihood of the true class in nats (probabilities floored at 2^-24), "
            f"`ECE %` the top-label expected calibration error over {ECE_BINS} equal-width confidence bins "
            "(Guo et al. 2017); lower is better for both.\n\n" + d.table("classification", table))


def failures(d: ReportData) -> str:
    bad = [(r, "none") for r in d.records if r.status != "done"]
    bad += [(r, "the earlier finished one, shown as stale") for r in d.failed_reruns]
    if not bad:
        return ""
    table = [{"cell": r.cell, "status": r.status, "reason": r.reason, "result shown": shown} for r, shown in bad]
    return ("## Failed cells\n\nSee each cell's `log.txt` for the traceback (`failed_attempt.log` for a rerun "
            "that failed while the earlier result stayed).\n\n" + d.table("failed", table))


def stale_cells(d: ReportData) -> str:
    if not d.stale:
        return ""
    by_reason: dict[str, list[str]] = {}
    for cell, why in d.stale.items():
        by_reason.setdefault(why, []).append(cell)
    lines = [f"- {why} ({len(cells)}): " + ", ".join(f"`{c}`" for c in cells) for why, cells in by_reason.items()]
    return ("## Stale cells\n\nThese finished results are in the tables above (marked in the appendix), but the "
            "config or the training code they would get now differs from what they were trained with, or their "
            "rerun failed; `bench run` retrains them.\n\n" + "\n".join(lines))


def appendix(d: ReportData) -> str:
    table = []
    for ds in d.datasets():
        specs = d.specs(ds)
        for sid in d.strategies(ds):
            for r in d.cells(ds, sid):
                for task in (t for t in specs if t in r.test):
                    metric = specs[task].primary
                    table.append({"cell": r.cell + (" (stale)" if r.cell in d.stale else ""), "task": task,
                                  "metric": metric, "test": f"{r.test[task][metric]:.4f}",
                                  "best epoch": _best_epoch(d, r), "train s": f"{r.train_seconds:.1f}",
                                  "img/s": "-" if r.images_per_second is None else f"{r.images_per_second:,.0f}"})
    if not table:
        return ""
    return ("## Appendix: every cell\n\n`best epoch` is the epoch kept (of those trained; per stage for sequential "
            "cells); \"still improving\" marks a stage whose best epoch was its last.\n\n" + d.table("cells", table))


def _best_epoch(d: ReportData, r: Record) -> str:
    if r.best_epoch is None:
        return "-"  # a combined cell trains nothing
    history = d.history(r.cell)
    best = r.extra.get("stage_best_epochs") or [r.best_epoch]
    if history is None:
        return " + ".join(map(str, best))
    lengths = stage_lengths(history)
    text = ", ".join(f"{b} of {n}" for b, n in zip(best, lengths)) if len(lengths) == len(best) else str(r.best_epoch)
    return text + (" (still improving)" if still_improving(r, history) else "")


def reproduce(d: ReportData) -> str:
    where = f"Suite file: `{d.manifest.path}`." if d.manifest.path else "The store does not name its suite file."
    return f"## Reproduce\n\n```\n{d.command}\n```\n\n{where}"
