"""The report's section on dense tasks (segmentation, detection): per-class scores and example images.

For every task whose kind lists the "dense_per_class" panel: a table of its stored per-class score
(`TaskSpec.per_class`: IoU for segmentation, AP@0.5 for detection) per strategy, mean ± std over
seeds. For "dense_examples": one figure of the same first test images, the truth and each strategy's
prediction (its lowest-seed cell) drawn over them (`TaskSpec.example_drawings`). Everything comes
from the cells' stored arrays; sequential strategies show their final model.
"""

from __future__ import annotations

import numpy as np

from bench.report import figures
from bench.report.data import ReportData
from bench.report.diagnostic_sections import strategy_cells
from bench.report.stats import fmt_mean_std

INTRO = ("Per-class scores of the dense tasks on the test set (segmentation: IoU per class, background "
         "included; detection: AP@0.5 per class, COCO's 101-point interpolation), mean ± std over seeds; "
         "'-' marks a class absent from the truth (and, for IoU, the predictions). A class far under the "
         "others points at a confusion the mean hides (e.g. similar digits). The figures show the first "
         "test images with the truth and each strategy's prediction of its lowest-seed cell; detections "
         "are drawn from score 0.3 with their score.")


def dense_tasks(d: ReportData) -> str:
    parts = []
    for ds, task, spec in d.tasks(lambda s: "dense_per_class" in s.panels or "dense_examples" in s.panels):
        cells = strategy_cells(d, ds, task)  # report order: single-task entries first, then suite order
        blocks = [f"### {ds} / {task}"]
        if "dense_per_class" in spec.panels:
            blocks.append(_per_class_table(d, f"dense_per_class_{ds}_{task}", task, spec, cells))
        if "dense_examples" in spec.panels:
            blocks.append(_examples(d, ds, task, spec, cells))
        parts.append("\n\n".join(blocks))
    if not parts:
        return ""
    return "## Dense tasks: per-class scores and examples\n\n" + INTRO + "\n\n" + "\n\n".join(parts)


def _per_class_table(d: ReportData, name: str, task: str, spec, cells: dict[str, list[str]]) -> str:
    array, label = spec.per_class
    scale, digits = spec.display
    scores = {s: np.array([d.predictions(c)[f"{array}__{task}"] for c in cs], dtype=float)  # (seeds, C)
              for s, cs in cells.items()}
    table = []
    for k in range(spec.classes):
        table.append({"class": spec.label(k), **{s: fmt_mean_std(v[:, k], scale, digits) for s, v in scores.items()}})
    n = ", ".join(f"{s} {len(v)}" for s, v in scores.items())
    return f"{label} per class (n seeds: {n}):\n\n" + d.table(name, table)


def _examples(d: ReportData, ds: str, task: str, spec, cells: dict[str, list[str]]) -> str:
    rows, images = {}, None
    for s, cs in cells.items():
        images, truths, preds = spec.example_drawings(d.predictions(cs[0]), task)
        rows.setdefault("truth", truths)
        rows[s] = preds
    path = figures.dense_examples(d.fig_dir / f"examples_{ds}_{task}.png",
                                  f"{ds} / {task}: test images, truth and predictions", images, rows, spec.label)
    return f"![examples {ds} {task}]({d.figure_link(path)})"
