"""The report's training curves: per dataset, the selection criterion (validation loss), the training
loss and each task's validation score, per epoch, mean over seeds with a ±1 std band.

A single-task entry trains one model per task, so its curves are drawn per task (one line each),
never averaged across two models. A sequential cell's epochs run on through its stages (x is the
epoch counted from its start), stage boundaries are dotted lines, and an earlier task's validation
score keeps being drawn during the later stages (the trainer records it), which is where
forgetting shows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import figures
from bench.report.convergence import stage_labels
from bench.report.data import ReportData

CRITERION = "validation loss (selection criterion)"
LINESTYLES = ("-", "--", ":", "-.")  # a single-task entry's tasks, in the dataset's task order
TRAIN = "training loss"


def training_curves(d: ReportData) -> str:
    parts = []
    for ds in d.datasets():
        path = _figure(d, ds)
        if path is not None:
            parts.append(f"![curves {ds}]({d.figure_link(path)})")
    notes = [f"> Note: curve left out, `{e}`" for e in d.damaged_histories]
    if not parts:  # no curve to draw, but say why cells have none
        return "## Training curves\n\n" + "\n\n".join(notes) if notes else ""
    return ("## Training curves\n\nPer epoch, mean over seeds (band: ±1 std over seeds): the validation loss "
            "that picks the best epoch (the loss-weighted sum over the tasks a stage trains), the training "
            "loss, and each task's validation score. Single-task entries are drawn per task (one model "
            "each); sequential entries run on through their stages (dotted lines: stage boundaries), and an "
            "earlier task's score during a later stage shows what that stage makes it forget. A validation "
            "curve that turns up while the training loss keeps falling marks overfitting; one still falling "
            "at the end marks a cell that was still improving.\n\n"
            + "\n\n".join(parts + notes))


def _figure(d: ReportData, ds: str):
    specs = d.specs(ds)
    panels: dict[str, dict[str, list[pd.DataFrame]]] = {CRITERION: {}, TRAIN: {}}
    panels.update({f"{t}: validation {s.primary}" + ("" if s.higher_is_better else " (lower is better)"): {}
                   for t, s in specs.items()})
    styles, boundaries = {}, {}
    for i, sid in enumerate(d.strategies(ds)):
        single = d.single_task(sid, ds)
        for r in d.cells(ds, sid):
            h = d.history(r.cell)
            if h is None or r.members:
                continue
            step = np.arange(1, len(h) + 1)
            label = f"{sid}: {r.tasks[0]}" if single else sid
            styles[label] = (i, LINESTYLES[list(specs).index(r.tasks[0]) % len(LINESTYLES)] if single else "-")
            for panel, column in ((CRITERION, "val_loss"), (TRAIN, "train_loss")):
                if column in h:
                    panels[panel].setdefault(label, []).append(pd.DataFrame({"step": step, "value": h[column]}))
            for (t, s), panel in zip(specs.items(), list(panels)[2:]):
                column = f"val_{t}_{s.primary}"
                if column in h and h[column].notna().any():
                    scale = s.display[0]
                    panels[panel].setdefault(sid, []).append(pd.DataFrame({"step": step, "value": h[column] * scale}))
                    styles.setdefault(sid, (i, "-"))
            stages = stage_labels(h)
            if stages.nunique() > 1:
                boundaries[sid] = [k + 0.5 for k in range(1, len(h)) if stages.iloc[k] != stages.iloc[k - 1]]
    panels = {p: {label: pd.concat(frames) for label, frames in lines.items()} for p, lines in panels.items() if lines}
    if not panels:
        return None
    return figures.training_curves(d.fig_dir / f"curves_{ds}.png", f"{ds}: training curves (mean over seeds, "
                                   "band ±1 std)", panels, styles, boundaries)
