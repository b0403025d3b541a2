"""The report's sections, in order. Each is `(ReportData) -> str` (Markdown; "" to skip)."""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.kinds import TaskSpec
from bench.kinds.classification import confusion
from bench.record import Entry, Record
from bench.report import ReportData, now
from bench.report import diagnostics as D
from bench.report import figures
from bench.report.stats import delta_m, fmt_mean_std

DETAIL_COLUMNS = (("macro_precision", "macro P %"), ("macro_recall", "macro R %"), ("macro_f1", "macro F1 %"),
                  ("weighted_precision", "weighted P %"), ("weighted_f1", "weighted F1 %"), ("accuracy", "acc %"))
RESIDUAL_COLUMNS = (("mean", "mean"), ("std", "std"), ("skewness", "skewness"), ("kurtosis", "kurtosis"))
MANY_CLASSES = 10  # above this many classes, per-class accuracy gets its own figure
MASK_DIAGONAL_ABOVE = 20  # above this many classes, confusion matrices mask the diagonal and list top pairs
TOP_PAIRS = 10  # confused class pairs listed per strategy


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
        f"- Seeds: {', '.join(map(str, d.manifest.seeds))}; every number is mean ± std over seeds (n stated)",
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
    entries, baseline = strategy_entries(d), stl_baseline(d)
    for ds, rows in d.rows.groupby("dataset", sort=False):
        specs = dataset_specs(d, ds)
        parts.append(f"### {ds}\n\n" + _dataset_table(rows, specs, entries, baseline))
        notes = sorted({n for r in d.records if r.dataset == ds for n in r.notes})
        parts += [f"> Note: {n}" for n in notes]
    parts.append(_delta_m_text(baseline))
    return "\n\n".join(parts)


def strategy_entries(d: ReportData) -> dict[str, Entry]:
    """The suite's strategy entries by id, from the manifest (multi_task, and `of` for combining ones)."""
    return {e.id: e for e in d.manifest.strategies}


def stl_baseline(d: ReportData) -> str | None:
    """The id of the suite's first single-task entry that trains (delta_m's reference), if any."""
    return next((sid for sid, e in strategy_entries(d).items() if not e.multi_task and e.of is None), None)


def _delta_m_text(baseline: str | None) -> str:
    text = ("`delta_m %` (Maninis et al. 2019, eq. 4): the mean over a strategy's tasks of "
            "(-1)^l_i (M_i - M_stl,i) / M_stl,i x 100, where M is the task's primary test metric "
            "(accuracy, higher is better, l_i = 0; MAE, lower is better, l_i = 1). Each seed is paired "
            "with the STL cell of the same seed and task; mean ± std over seeds. An ensemble (one cell per "
            "dataset) is compared with the mean STL over seeds. Positive means better than single-task "
            "learning; blank for single-task strategies.")
    if baseline is None:
        text += "\n\n¹ This suite has no single-task strategy (e.g. `stl`), so `delta_m %` is blank."
    else:
        text += f" The STL reference is entry `{baseline}`."
    return text


def _select_text(d: ReportData) -> str:
    return "loss" if d.manifest.select == "loss" else "score (mean primary metric)"


def _dataset_table(rows: pd.DataFrame, specs: dict, entries: dict[str, Entry], baseline: str | None) -> str:
    table, base = [], rows[rows.strategy == baseline]
    for strategy, srows in rows.groupby("strategy", sort=False):
        line = {"strategy": strategy}
        for task, spec in specs.items():
            trows = srows[srows.task == task]
            scale, digits = spec.display
            for metric, label in spec.columns:
                line[f"{task} {label}"] = fmt_mean_std(trows.get(f"test_{metric}", pd.Series(dtype=float)), scale, digits)
        multi = strategy in entries and entries[strategy].multi_task
        if baseline is None:
            line["delta_m % ¹"] = ""
        else:
            line["delta_m %"] = _delta_m(srows, base, specs) if multi else ""
        per_seed = srows.drop_duplicates("cell").groupby("seed", dropna=False)  # NaN seed: an ensemble
        line["params"] = f"{int(per_seed.params.sum().mean()):,}"
        line["train s"] = fmt_mean_std(per_seed.train_seconds.sum(), 1, 1)
        line["img/s"] = fmt_mean_std(srows.drop_duplicates("cell").images_per_second, 1, 0)
        line["n"] = srows.seed.nunique(dropna=False)
        table.append(line)
    return tabulate(table, headers="keys", tablefmt="github", disable_numparse=True)


def _delta_m(srows: pd.DataFrame, base: pd.DataFrame, specs: dict[str, TaskSpec]) -> str:
    """delta_m per seed against the STL rows of that seed (a seed-less ensemble: their mean), mean ± std."""
    values = []
    for seed, seed_rows in srows.groupby("seed", dropna=False):
        ref = base if pd.isna(seed) else base[base.seed == seed]
        cols = {t: f"test_{specs[t].primary}" for t in seed_rows.task.unique() if t in specs}
        values.append(delta_m({t: seed_rows.loc[seed_rows.task == t, c].mean() for t, c in cols.items()},
                              {t: ref.loc[ref.task == t, c].mean() for t, c in cols.items()},
                              {t: specs[t].higher_is_better for t in cols}))
    return fmt_mean_std(values, 1, 2)


def dataset_specs(d: ReportData, dataset: str) -> dict[str, TaskSpec]:
    """TaskSpecs of a dataset's tasks, rebuilt from a stored cell config (the report never loads data)."""
    specs = {}
    for r in d.records:
        if r.dataset == dataset and r.status == "done":
            for t, s in r.specs.items():
                specs.setdefault(t, TaskSpec.from_dict(s))
    order = next((list(e.tasks) for e in d.manifest.datasets if e.name == dataset), list(specs))
    return {t: specs[t] for t in order if t in specs}


def _tasks(d: ReportData, want: Callable[[TaskSpec], bool]) -> Iterator[tuple[str, str, TaskSpec, pd.DataFrame]]:
    """(dataset, task, spec, that task's rows) for every task of finished cells whose spec `want`s."""
    for ds, rows in d.rows.groupby("dataset", sort=False):
        for task, spec in dataset_specs(d, ds).items():
            if want(spec):
                yield ds, task, spec, rows[rows.task == task]


def _strategy_cells(trows: pd.DataFrame) -> dict[str, list[str]]:
    """strategy -> its cells for one task, lowest seed first."""
    return {s: list(r.sort_values("seed", kind="stable").cell.unique()) for s, r in trows.groupby("strategy", sort=False)}


def _arrays(d: ReportData, cell: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    """A cell's stored test predictions (float32) and targets for one task."""
    p = d.store.predictions(cell)
    return p[f"pred__{task}"].astype(np.float32), p[f"target__{task}"]


def _confusions(d: ReportData, cells: list[str], task: str, spec: TaskSpec) -> list[np.ndarray]:
    """One (classes, classes) test confusion matrix per cell."""
    return [confusion(pred.argmax(1), target.astype(int), spec.classes)
            for pred, target in (_arrays(d, c, task) for c in cells)]


def _class_names(spec: TaskSpec) -> list[str]:
    return [spec.label(i) for i in range(spec.classes)]


def classification_details(d: ReportData) -> str:
    table = []
    for ds, task, spec, trows in _tasks(d, lambda s: "class_metrics" in s.panels):
        for strategy, srows in trows.groupby("strategy", sort=False):
            line = {"dataset": ds, "task": task, "strategy": strategy}
            for metric, label in DETAIL_COLUMNS:
                line[label] = fmt_mean_std(srows.get(f"test_{metric}", pd.Series(dtype=float)), 100, 2)
            table.append({**line, "n": srows.seed.nunique(dropna=False)})  # NaN seed: an ensemble, n = 1
    if not table:
        return ""
    return "## Classification metrics per task\n\nTest precision, recall and F1 in %, macro (every class " \
           "counts the same) and weighted by class support; weighted recall equals accuracy. A macro score " \
           "well below its weighted one means rare classes fare worse.\n\n" + \
           tabulate(table, headers="keys", tablefmt="github", disable_numparse=True)


def confusion_matrices(d: ReportData) -> str:
    parts = []
    for ds, task, spec, trows in _tasks(d, lambda s: "confusion" in s.panels):
        mats = {s: sum(_confusions(d, cells, task, spec)) for s, cells in _strategy_cells(trows).items()}
        masked = spec.classes > MASK_DIAGONAL_ABOVE
        path = figures.confusion_panels(d.fig_dir / f"confusion_{ds}_{task}.png",
                                        f"{ds} / {task}: test confusion, rows normalised, seeds pooled"
                                        + (", diagonal masked" if masked else ""), mats, _class_names(spec),
                                        mask_diagonal=masked)
        parts.append(f"![confusion {ds} {task}]({d.figure_link(path)})")
        if masked:
            parts.append(_confusion_pairs(mats, spec))
    if not parts:
        return ""
    return "## Confusion matrices\n\nEach row is a true class and sums to 1; off-diagonal mass shows " \
           "which classes a strategy confuses. Seeds are pooled. With more than " \
           f"{MASK_DIAGONAL_ABOVE} classes the diagonal is masked (grey) and the colours span the errors " \
           f"only; the table under such a matrix lists its {TOP_PAIRS} most frequent confusions per " \
           "strategy.\n\n" + "\n\n".join(parts)


def _confusion_pairs(mats: dict[str, np.ndarray], spec: TaskSpec) -> str:
    table = [{"strategy": s, "true": spec.label(p["true"]), "predicted": spec.label(p["predicted"]),
              "count": p["count"], "% of true class": f"{100 * p['share']:.1f}"}
             for s, cm in mats.items() for p in D.top_confusions(cm, TOP_PAIRS)]
    return tabulate(table, headers="keys", tablefmt="github", disable_numparse=True) if table else ""


def per_class_accuracy(d: ReportData) -> str:
    parts = []
    for ds, task, spec, trows in _tasks(d, lambda s: "per_class" in s.panels and s.classes > MANY_CLASSES):
        cms = {s: _confusions(d, cells, task, spec) for s, cells in _strategy_cells(trows).items()}
        accs = {s: D.per_class_accuracy(sum(m))[0] for s, m in cms.items()}
        support = next(iter(cms.values()))[0].sum(1)  # every cell predicts the same test set
        path = figures.per_class_accuracy(d.fig_dir / f"per_class_{ds}_{task}.png",
                                          f"{ds} / {task}: test accuracy per class, seeds pooled",
                                          accs, support, _class_names(spec))
        parts.append(f"![per-class accuracy {ds} {task}]({d.figure_link(path)})")
    if not parts:
        return ""
    return f"## Per-class accuracy\n\nTasks with more than {MANY_CLASSES} classes: bars are each true " \
           "class's test accuracy (seeds pooled), classes ordered by test support (orange line); look for " \
           "bars that drop where the support does, a sign the model sacrifices rare classes.\n\n" + \
           "\n\n".join(parts)


def residual_diagnostics(d: ReportData) -> str:
    parts = []
    for ds, task, spec, trows in _tasks(d, lambda s: "residuals" in s.panels):
        res = {s: [D.residuals(*_arrays(d, c, task)) for c in cells] for s, cells in _strategy_cells(trows).items()}
        path = figures.residuals(d.fig_dir / f"residuals_{ds}_{task}.png",
                                 f"{ds} / {task}: test residuals, seeds pooled",
                                 {s: np.concatenate(r) for s, r in res.items()})
        parts += [f"### {ds} / {task}", _residual_table(res), f"![residuals {ds} {task}]({d.figure_link(path)})"]
    if not parts:
        return ""
    return "## Regression residuals\n\nResiduals are pred - target on the test set, pooled over a " \
           "task's output dimensions. The table gives each statistic per cell as mean ± std over seeds " \
           "(kurtosis is excess kurtosis, 0 for a normal) and the Shapiro-Wilk p of each seed's cell (below " \
           "0.05 rejects normality; " \
           f"above {D.SHAPIRO_MAX_N} residuals the test uses a fixed random subsample of {D.SHAPIRO_MAX_N}, " \
           "as scipy's p-value is accurate only up to there). In the figure (seeds pooled), look for a " \
           "histogram off centre (bias) or Q-Q points that leave the line at the ends (heavy tails)." \
           "\n\n" + "\n\n".join(parts)


def _residual_table(res: dict[str, list[np.ndarray]]) -> str:
    table = []
    for strategy, rs in res.items():
        cell_stats = [D.residual_stats(r) for r in rs]
        line = {"strategy": strategy}
        for key, label in RESIDUAL_COLUMNS:
            line[label] = fmt_mean_std([s[key] for s in cell_stats], 1, 4)
        line["Shapiro-Wilk p per seed"] = ", ".join(f"{s['shapiro_p']:.2g}" for s in cell_stats)  # a mean of p-values means little
        table.append({**line, "residuals per cell": f"{cell_stats[0]['n']:,}", "n": len(rs)})
    return tabulate(table, headers="keys", tablefmt="github", disable_numparse=True)


def hardest_examples(d: ReportData) -> str:
    parts = []
    for ds, task, spec, trows in _tasks(d, lambda s: "hardest" in s.panels):
        rows = {s: _first_gallery(d, cells, task, spec) for s, cells in _strategy_cells(trows).items()}
        rows = {s: r for s, r in rows.items() if r}
        if rows:
            path = figures.gallery(d.fig_dir / f"hardest_{ds}_{task}.png",
                                   f"{ds} / {task}: highest-loss test images", rows)
            parts.append(f"![hardest {ds} {task}]({d.figure_link(path)})")
    if not parts:
        return ""
    return "## Highest-loss test images\n\nPer task and strategy, the test images with the highest loss " \
           "in its lowest-seed cell, captioned true (t) and predicted (p) label; look for wrong or " \
           "ambiguous labels and for a kind of image every strategy gets wrong.\n\n" + "\n\n".join(parts)


def _first_gallery(d: ReportData, cells: list[str], task: str, spec: TaskSpec) -> list[D.Example]:
    """The stored gallery of the lowest-seed cell that has one (stores from before it have none)."""
    return next((ex for c in cells if (ex := D.hardest_examples(spec, d.store.predictions(c), task))), [])


def training_curves(d: ReportData) -> str:
    parts = []
    for ds, rows in d.rows.groupby("dataset", sort=False):
        specs = dataset_specs(d, ds)
        histories = {}
        for strategy, srows in rows.groupby("strategy", sort=False):
            frames = []
            for cell in srows.cell.unique():
                h = d.history(cell)  # None for a damaged one: its metrics stand, its curve is left out
                if h is not None:
                    frames.append(h.assign(step=np.arange(1, len(h) + 1)))
            if frames:
                histories[strategy] = pd.concat(frames)
        cols = ["train_loss"] + [f"val_{t}_{s.primary}" for t, s in specs.items()] + ["lr"]
        path = figures.training_curves(d.fig_dir / f"curves_{ds}.png", f"{ds}: training curves (mean over seeds)",
                                       histories, cols)
        parts.append(f"![curves {ds}]({d.figure_link(path)})")
    if not parts:
        return ""
    return "## Training curves\n\nTraining loss, the validation metric and the learning rate (`lr`, at each " \
           "epoch's end) per epoch; a validation curve that falls while the training loss keeps dropping " \
           "marks overfitting.\n\n" + "\n\n".join(parts + [f"> Note: curve left out, `{e}`"
                                                               for e in d.damaged_histories])


def ensembles(d: ReportData) -> str:
    """Each ensemble against its members, per task, on the primary metric (from the ensemble cell's record)."""
    ids = {sid for sid, e in strategy_entries(d).items() if e.of is not None}
    records = [r for r in d.records if r.status == "done" and r.strategy in ids]
    if not records:
        return ""
    table, figs = [], []
    for ds in dict.fromkeys(r.dataset for r in records):
        specs, panels = dataset_specs(d, ds), {}
        for r in (r for r in records if r.dataset == ds):
            label = r.cell.split("__")[1]  # e.g. ensemble(of=hard_share,seeds=0+1)
            for t, spec in specs.items():
                if t in r.test:
                    table.append(_gain_row(ds, label, t, spec, r))
                    scale = spec.display[0]
                    members = [v * scale for v in _member_values(r, t, spec.primary)]
                    panels.setdefault(t, {})[label] = (members, r.test[t][spec.primary] * scale)
        ylabels = {t: s.unit for t, s in specs.items()}
        path = figures.ensemble_members(d.fig_dir / f"ensemble_{ds}.png", f"{ds}: ensemble vs its members (test)",
                                        panels, ylabels)
        figs.append(f"![ensemble {ds}]({d.figure_link(path)})")
    return ("## Ensembles\n\nEach ensemble averages its members' stored test predictions (class "
            "probabilities or regression outputs), with no retraining. Gain = ensemble - member on the "
            "primary metric (accuracy in points; for MAE a negative gain is an improvement); mean member "
            "is mean ± std over the members (n), best member is the best single member.\n\n"
            + tabulate(table, headers="keys", tablefmt="github", disable_numparse=True)
            + "\n\nIn the figure, look for the ensemble marker beyond every member dot (above them for "
            "accuracy, below for MAE): that is a gain over the best single seed, not only over the average "
            "one.\n\n" + "\n\n".join(figs))


def _gain_row(ds: str, label: str, task: str, spec: TaskSpec, r: Record) -> dict:
    metric, (scale, digits) = spec.primary, spec.display
    members = _member_values(r, task, metric)
    best = max(members) if spec.higher_is_better else min(members)
    return {"dataset": ds, "ensemble": label, "task": task, "metric": metric,
            "ensemble value": f"{r.test[task][metric] * scale:.{digits}f}",
            "mean member": fmt_mean_std(members, scale, digits) + f" (n={len(members)})",
            "best member": f"{best * scale:.{digits}f}",
            "gain vs mean": f"{r.extra['gain_vs_mean'][task][metric] * scale:+.{digits}f}",
            "gain vs best": f"{r.extra['gain_vs_best'][task][metric] * scale:+.{digits}f}"}


def _member_values(r: Record, task: str, metric: str) -> list[float]:
    """An ensemble record's member metrics for one task (STL members each predict one task)."""
    return [m[task][metric] for m in r.extra["members"].values() if task in m]


def failures(d: ReportData) -> str:
    bad = [(r, "none") for r in d.records if r.status != "done"]
    bad += [(r, "the earlier finished one, shown as stale") for r in d.failed_reruns]
    if not bad:
        return ""
    table = [{"cell": r.cell, "status": r.status, "reason": r.reason, "result shown": shown} for r, shown in bad]
    return ("## Failed cells\n\nSee each cell's `log.txt` for the traceback (`failed_attempt.log` for a rerun "
            "that failed while the earlier result stayed).\n\n" + tabulate(table, headers="keys", tablefmt="github"))


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
    if d.rows.empty:
        return ""
    table, specs = [], {ds: dataset_specs(d, ds) for ds in d.rows.dataset.unique()}
    for _, r in d.rows.iterrows():
        metric = f"test_{specs[r.dataset][r.task].primary}"  # each task's primary metric, in its own column
        table.append({"cell": r.cell + (" (stale)" if r.cell in d.stale else ""), "task": r.task, metric.replace("test_", ""): f"{r[metric]:.4f}",
                      "best epoch": _or_dash(r.best_epoch, "{:.0f}"), "train s": f"{r.train_seconds:.1f}",
                      "img/s": _or_dash(r.images_per_second, "{:,.0f}")})
    return "## Appendix: every cell\n\n" + tabulate(table, headers="keys", tablefmt="github", disable_numparse=True)


def _or_dash(value, fmt: str) -> str:
    """A number, or "-" where a cell has none (an ensemble has no best epoch and no throughput)."""
    return "-" if pd.isna(value) else fmt.format(value)


def reproduce(d: ReportData) -> str:
    where = f"Suite file: `{d.manifest.path}`." if d.manifest.path else "The store does not name its suite file."
    return f"## Reproduce\n\n```\n{d.command}\n```\n\n{where}"


from bench.report.dense_section import dense_tasks  # noqa: E402  (late: these use the helpers above)
from bench.report.forgetting_section import forgetting  # noqa: E402
from bench.report.protocol import numerics, reference_comparison  # noqa: E402
from bench.report.weighting_section import weighting  # noqa: E402

SECTIONS = [header, summary_tables, reference_comparison, numerics, ensembles, classification_details, confusion_matrices, per_class_accuracy,
            residual_diagnostics, hardest_examples, dense_tasks, training_curves, forgetting, weighting, failures,
            stale_cells, appendix, reproduce]
