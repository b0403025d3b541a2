"""The report's sections, in order. Each is `(ReportData) -> str` (Markdown; "" to skip)."""

from __future__ import annotations

import platform
from collections import Counter

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench import tasks as T
from bench.report import ReportData, now
from bench.report import figures
from bench.report.stats import fmt_mean_std

CLASSIFICATION_COLUMNS = (("accuracy", "acc %"), ("macro_f1", "macro-F1 %"))
REGRESSION_COLUMNS = (("mae", "MAE"), ("rmse", "RMSE"))


def header(d: ReportData) -> str:
    status = Counter(r["status"] for r in d.records)
    prov = [d.store.config(r["cell"]).get("provenance", {}) for r in d.records if d.store.config(r["cell"])]
    devices = sorted({p.get("device", "?") for p in prov})
    torch_v = sorted({p.get("torch", "?") for p in prov})
    cell_wall = sum(r.get("wall_seconds", 0) for r in d.records)
    lines = [
        f"# Suite `{d.suite.name}`",
        "",
        d.suite.description.strip(),
        "",
        f"- Generated: {now()} from `{d.store.dir}`",
        f"- Hardware: {', '.join(devices) or 'n/a'}",
        f"- Libraries: torch {', '.join(torch_v) or 'n/a'}, python {platform.python_version()}",
        f"- Cells: {len(d.records)} recorded: " + ", ".join(f"{n} {s}" for s, n in sorted(status.items())),
        f"- Seeds: {', '.join(map(str, d.suite.seeds))}; every number is mean ± std over seeds (n stated)",
        f"- Time: training cells {cell_wall:.1f} s in all"
        + (f"; this run {d.run_seconds:.1f} s end to end" if d.run_seconds is not None else ""),
    ]
    return "\n".join(lines)


def summary_tables(d: ReportData) -> str:
    if d.rows.empty:
        return "## Results\n\nNo finished cells yet."
    parts = ["## Results", "Test metrics at the epoch with the best validation "
             f"{_select_text(d)}. `params` counts trainable parameters of all models a strategy needs; "
             "`train s` is time in training steps; `img/s` is training images per second."]
    for ds, rows in d.rows.groupby("dataset", sort=False):
        specs = dataset_specs(d, ds)
        parts.append(f"### {ds}\n\n" + _dataset_table(rows, specs))
        notes = sorted({n for r in d.records if r["dataset"] == ds for n in r.get("notes", [])})
        parts += [f"> Note: {n}" for n in notes]
    return "\n\n".join(parts)


def _select_text(d: ReportData) -> str:
    return "loss" if d.suite.train.select == "loss" else "score (mean primary metric)"


def _dataset_table(rows: pd.DataFrame, specs: dict) -> str:
    table = []
    for strategy, srows in rows.groupby("strategy", sort=False):
        line = {"strategy": strategy}
        for task, spec in specs.items():
            trows = srows[srows.task == task]
            for metric, label in CLASSIFICATION_COLUMNS if spec.is_classification else REGRESSION_COLUMNS:
                scale = 100 if spec.is_classification else 1
                digits = 2 if spec.is_classification else 4
                line[f"{task} {label}"] = fmt_mean_std(trows.get(f"test_{metric}", pd.Series(dtype=float)), scale, digits)
        per_seed = srows.drop_duplicates("cell").groupby("seed")
        line["params"] = f"{int(per_seed.params.sum().mean()):,}"
        line["train s"] = fmt_mean_std(per_seed.train_seconds.sum(), 1, 1)
        line["img/s"] = fmt_mean_std(srows.drop_duplicates("cell").images_per_second, 1, 0)
        line["n"] = srows.seed.nunique()
        table.append(line)
    return tabulate(table, headers="keys", tablefmt="github", disable_numparse=True)


def dataset_specs(d: ReportData, dataset: str) -> dict[str, T.TaskSpec]:
    """TaskSpecs of a dataset's tasks, rebuilt from a stored cell config (the report never loads data)."""
    specs = {}
    for r in d.records:
        if r["dataset"] == dataset and r.get("status") == "done":
            for t, s in r.get("specs", {}).items():
                specs.setdefault(t, T.TaskSpec(**{**s, "class_names": tuple(s.get("class_names", ()))}))
    order = next((list(c.tasks) for c in d.suite.datasets if c.name == dataset), list(specs))
    return {t: specs[t] for t in order if t in specs}


def confusion_matrices(d: ReportData) -> str:
    parts = []
    for ds, rows in d.rows.groupby("dataset", sort=False):
        for task, spec in dataset_specs(d, ds).items():
            if not spec.is_classification:
                continue
            mats = {}
            for strategy, srows in rows[rows.task == task].groupby("strategy", sort=False):
                mats[strategy] = sum(_confusion(d, cell, task, spec) for cell in srows.cell.unique())
            names = [spec.label(i) for i in range(spec.classes)]
            path = figures.confusion_panels(d.fig_dir / f"confusion_{ds}_{task}.png",
                                            f"{ds} / {task}: test confusion, rows normalised, seeds pooled",
                                            mats, names)
            parts.append(f"![confusion {ds} {task}]({d.figure_link(path)})")
    if not parts:
        return ""
    return "## Confusion matrices\n\nEach row is a true class and sums to 1; off-diagonal mass shows " \
           "which classes a strategy confuses. Seeds are pooled.\n\n" + "\n\n".join(parts)


def _confusion(d: ReportData, cell: str, task: str, spec: T.TaskSpec) -> np.ndarray:
    p = d.store.predictions(cell)
    return T.confusion(p[f"pred__{task}"].astype(np.float32).argmax(1), p[f"target__{task}"].astype(int), spec.classes)


def training_curves(d: ReportData) -> str:
    parts = []
    for ds, rows in d.rows.groupby("dataset", sort=False):
        specs = dataset_specs(d, ds)
        histories = {}
        for strategy, srows in rows.groupby("strategy", sort=False):
            frames = []
            for cell in srows.cell.unique():
                h = d.store.history(cell)
                if h is not None:
                    frames.append(h.assign(step=np.arange(1, len(h) + 1)))
            if frames:
                histories[strategy] = pd.concat(frames)
        cols = ["train_loss"] + [f"val_{t}_{s.primary}" for t, s in specs.items()]
        path = figures.training_curves(d.fig_dir / f"curves_{ds}.png", f"{ds}: training curves (mean over seeds)",
                                       histories, cols)
        parts.append(f"![curves {ds}]({d.figure_link(path)})")
    if not parts:
        return ""
    return "## Training curves\n\nTraining loss and the validation metric per epoch; a validation curve " \
           "that falls while the training loss keeps dropping marks overfitting.\n\n" + "\n\n".join(parts)


def failures(d: ReportData) -> str:
    bad = [r for r in d.records if r["status"] != "done"]
    if not bad:
        return ""
    table = [{"cell": r["cell"], "status": r["status"], "reason": r.get("reason", "")} for r in bad]
    return "## Failed cells\n\nSee each cell's `log.txt` for the traceback.\n\n" + tabulate(
        table, headers="keys", tablefmt="github")


def appendix(d: ReportData) -> str:
    if d.rows.empty:
        return ""
    table = []
    for _, r in d.rows.iterrows():
        metric = "test_accuracy" if "test_accuracy" in r and not pd.isna(r.get("test_accuracy")) else "test_mae"
        table.append({"cell": r.cell, "task": r.task, metric.replace("test_", ""): f"{r[metric]:.4f}",
                      "best epoch": r.best_epoch, "train s": f"{r.train_seconds:.1f}",
                      "img/s": f"{r.images_per_second:,.0f}"})
    return "## Appendix: every cell\n\n" + tabulate(table, headers="keys", tablefmt="github", disable_numparse=True)


def reproduce(d: ReportData) -> str:
    return f"## Reproduce\n\n```\n{d.command}\n```\n\nSuite file: `{d.suite.path}`."


SECTIONS = [header, summary_tables, confusion_matrices, training_curves, failures, appendix, reproduce]
