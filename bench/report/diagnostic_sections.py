"""The report's diagnostics from stored test predictions: confusion matrices, per-class accuracy,
regression residuals and the highest-loss test images. Which apply to a task is its kind's
business (`TaskSpec.panels`); strategies appear in report order (single-task entries first)."""

from __future__ import annotations

import numpy as np

from bench.kinds import TaskSpec
from bench.kinds.classification import confusion
from bench.report import diagnostics as D
from bench.report import figures
from bench.report.data import ReportData
from bench.report.stats import fmt_mean_std

RESIDUAL_COLUMNS = (("mean", "mean"), ("std", "std"), ("skewness", "skewness"), ("kurtosis", "kurtosis"))
MANY_CLASSES = 10  # above this many classes, per-class accuracy gets its own figure
MASK_DIAGONAL_ABOVE = 20  # above this many classes, confusion matrices mask the diagonal and list top pairs
TOP_PAIRS = 10  # confused class pairs listed per strategy


def strategy_cells(d: ReportData, ds: str, task: str) -> dict[str, list[str]]:
    """strategy -> its cells predicting `task`, lowest seed first, in report order."""
    return {s: [r.cell for r in cells] for s in d.strategies(ds) if (cells := d.cells(ds, s, task))}


def _confusions(d: ReportData, cells: list[str], task: str, spec: TaskSpec) -> list[np.ndarray]:
    """One (classes, classes) test confusion matrix per cell."""
    return [confusion(pred.argmax(1), target.astype(int), spec.classes)
            for pred, target in (d.arrays(c, task) for c in cells)]


def _class_names(spec: TaskSpec) -> list[str]:
    return [spec.label(i) for i in range(spec.classes)]


def confusion_matrices(d: ReportData) -> str:
    parts = []
    for ds, task, spec in d.tasks(lambda s: "confusion" in s.panels):
        mats = {s: sum(_confusions(d, cells, task, spec)) for s, cells in strategy_cells(d, ds, task).items()}
        masked = spec.classes > MASK_DIAGONAL_ABOVE
        path = figures.confusion_panels(d.fig_dir / f"confusion_{ds}_{task}.png",
                                        f"{ds} / {task}: test confusion, % of each true class, seeds pooled"
                                        + (", diagonal masked" if masked else ""), mats, _class_names(spec),
                                        mask_diagonal=masked)
        parts.append(f"![confusion {ds} {task}]({d.figure_link(path)})")
        if masked:
            parts.append(_confusion_pairs(d, f"confusions_{ds}_{task}", mats, spec))
    if not parts:
        return ""
    return "## Confusion matrices\n\nEach row is a true class and sums to 100%; off-diagonal mass shows " \
           "which classes a strategy confuses. Seeds are pooled. With at most " \
           f"{figures.ANNOTATE_CLASSES} classes each cell of at least 1% prints its percentage; with more " \
           f"than {MASK_DIAGONAL_ABOVE} the diagonal is masked (grey) and the colours span the errors " \
           f"only; the table under such a matrix lists its {TOP_PAIRS} most frequent confusions per " \
           "strategy.\n\n" + "\n\n".join(parts)


def _confusion_pairs(d: ReportData, name: str, mats: dict[str, np.ndarray], spec: TaskSpec) -> str:
    table = [{"strategy": s, "true": spec.label(p["true"]), "predicted": spec.label(p["predicted"]),
              "count": p["count"], "% of true class": f"{100 * p['share']:.1f}"}
             for s, cm in mats.items() for p in D.top_confusions(cm, TOP_PAIRS)]
    return d.table(name, table)


def per_class_accuracy(d: ReportData) -> str:
    parts = []
    for ds, task, spec in d.tasks(lambda s: "per_class" in s.panels and s.classes > MANY_CLASSES):
        cms = {s: _confusions(d, cells, task, spec) for s, cells in strategy_cells(d, ds, task).items()}
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
    for ds, task, spec in d.tasks(lambda s: "residuals" in s.panels):
        res = {s: [D.residuals(*d.arrays(c, task)) for c in cells] for s, cells in strategy_cells(d, ds, task).items()}
        path = figures.residuals(d.fig_dir / f"residuals_{ds}_{task}.png",
                                 f"{ds} / {task}: test residuals, seeds pooled",
                                 {s: np.concatenate(r) for s, r in res.items()})
        parts += [f"### {ds} / {task}", _residual_table(d, f"residuals_{ds}_{task}", res),
                  f"![residuals {ds} {task}]({d.figure_link(path)})"]
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


def _residual_table(d: ReportData, name: str, res: dict[str, list[np.ndarray]]) -> str:
    table = []
    for strategy, rs in res.items():
        cell_stats = [D.residual_stats(r) for r in rs]
        line = {"strategy": strategy}
        for key, label in RESIDUAL_COLUMNS:
            line[label] = fmt_mean_std([s[key] for s in cell_stats], 1, 4)
        line["Shapiro-Wilk p per seed"] = ", ".join(f"{s['shapiro_p']:.2g}" for s in cell_stats)  # a mean of p-values means little
        table.append({**line, "residuals per cell": f"{cell_stats[0]['n']:,}", "n": len(rs)})
    return d.table(name, table)


def hardest_examples(d: ReportData) -> str:
    parts = []
    for ds, task, spec in d.tasks(lambda s: "hardest" in s.panels):
        rows = {s: _first_gallery(d, cells, task, spec) for s, cells in strategy_cells(d, ds, task).items()}
        rows = {s: r for s, r in rows.items() if r}
        if rows:
            path = figures.gallery(d.fig_dir / f"hardest_{ds}_{task}.png",
                                   f"{ds} / {task}: highest-loss test images", rows)
            parts.append(f"![hardest {ds} {task}]({d.figure_link(path)})")
    if not parts:
        return ""
    return "## Highest-loss test images\n\nPer task and strategy, the test images with the highest loss " \
           f"in its lowest-seed cell (the first {figures.GALLERY_SHOWN} of those it stores), " \
           "captioned with the true label over the predicted one and the loss; look for wrong or ambiguous " \
           "labels and for a kind of image every strategy gets wrong.\n\n" + "\n\n".join(parts)


def _first_gallery(d: ReportData, cells: list[str], task: str, spec: TaskSpec) -> list[D.Example]:
    """The stored gallery of the lowest-seed cell that has one (stores from before it have none)."""
    return next((ex for c in cells if (ex := D.hardest_examples(spec, d.predictions(c), task))), [])
