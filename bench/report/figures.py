"""Matplotlib figures for the report. Each function saves one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


PANELS_PER_ROW = 4  # panels per row of a figure; more wrap to the next row
PAGE_WIDTH = 10.0  # inches: a figure this wide shows its 6-point labels at page width (dpi 100)
MAX_LABELLED_CLASSES = 40  # beyond this, one tick label per class makes a panel metres wide (shapes: 135)
ANNOTATE_CLASSES = 12  # up to this many classes, confusion cells carry their percentage ...
GALLERY_SHOWN = 8  # highest-loss images drawn per strategy (the store keeps 16)
ANNOTATE_FROM = 0.05  # ... when at least this share of the true class (text is what a figure's time goes on)
DPI = 100
# Titles pass y=1.0: matplotlib then places them without measuring the axes' top tick labels, which
# created and measured ticks even on panels that draw no axis.


def confusion_panels(path: Path, title: str, mats: dict[str, np.ndarray], class_names: list[str], *,
                     mask_diagonal: bool = False) -> Path:
    """One row-normalised confusion matrix per strategy, at most PANELS_PER_ROW to a row (rows: true,
    columns: predicted), sized to stay readable at page width (PAGE_WIDTH inches).

    Up to ANNOTATE_CLASSES classes, each cell of at least ANNOTATE_FROM prints its percentage (the
    colour shows the rest); class names label the outer panels only. mask_diagonal blanks the
    correct predictions and scales each panel's colours to its largest error rate (said in its
    title), so that the errors of a many-class task stay visible. The panels draw no axis: labels are
    plain text, as matplotlib's tick machinery took most of a figure's time.
    """
    k, labelled = len(class_names), len(class_names) <= MAX_LABELLED_CLASSES
    size = max(PAGE_WIDTH / PANELS_PER_ROW, 0.11 * k + 0.4) if labelled else PAGE_WIDTH / 2  # inches per panel
    cols = max(1, min(len(mats), PANELS_PER_ROW, int(PAGE_WIDTH // size)))
    rows = -(-len(mats) // cols)
    font = 6 if k <= 10 else 5
    label = max(map(len, class_names)) * font / 130 + 0.3 if labelled else 0.1  # inches for names and "true"
    fig_w, fig_h = max(size * cols + label, 6.0), size * rows + label + 0.65
    fig, axes = plt.subplots(rows, cols, figsize=(fig_w, fig_h), squeeze=False)
    fig.subplots_adjust(left=label / fig_w, right=1 - max(0.05, fig_w - size * cols - label) / fig_w,
                        bottom=label / fig_h, top=1 - 0.65 / fig_h, wspace=0.08, hspace=0.12)
    cmap = plt.get_cmap("Blues").with_extremes(bad="lightgrey")
    per_inch = k / (size * 0.9)  # data units (cells) per inch of a panel, about
    for ax in axes.flat:
        ax.set_axis_off()
    for n, (ax, (name, cm)) in enumerate(zip(axes.flat, mats.items())):
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        top = 1.0
        if mask_diagonal:
            norm = norm.astype(float)
            np.fill_diagonal(norm, np.nan)
            top = max(float(np.nanmax(norm)), 1e-9)
            name = f"{name} (colours 0-{100 * top:.0f}%)"
        ax.imshow(norm, vmin=0, vmax=top, cmap=cmap)
        ax.set_title(name, fontsize=8, pad=2, y=1.0)
        if labelled and n % cols == 0:  # the first panel of its row: true classes
            for i, name_i in enumerate(class_names):
                ax.text(-0.7, i, name_i, ha="right", va="center", fontsize=font)
            ax.text(-0.5 - (label - 0.1) * per_inch, (k - 1) / 2, "true", rotation=90, ha="left", va="center",
                    fontsize=7)
        if labelled and n + cols >= len(mats):  # the lowest panel of its column: predicted classes
            for j, name_j in enumerate(class_names):
                ax.text(j, k - 0.3, name_j, rotation=90, ha="center", va="top", fontsize=font)
            ax.text((k - 1) / 2, k - 0.5 + (label - 0.1) * per_inch, "predicted", ha="center", va="bottom",
                    fontsize=7)
        if k <= ANNOTATE_CLASSES:
            for i, j in zip(*np.nonzero(np.nan_to_num(norm) >= ANNOTATE_FROM)):
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=font,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def per_class_accuracy(path: Path, title: str, accs: dict[str, np.ndarray], support: np.ndarray,
                       class_names: list[str]) -> Path:
    """One bar panel per strategy: accuracy of each true class, classes ordered by test support
    (most frequent first), with the support drawn as a line on the right axis."""
    order = np.argsort(-support, kind="stable")
    x = np.arange(len(order))
    width, height = max(6.0, 0.18 * len(x) + 2), 2.0 * len(accs) + 1.6  # inches: 1.6 for title and class names
    fig, axes = plt.subplots(len(accs), 1, figsize=(width, height), squeeze=False, sharex=True)
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.7 / width, bottom=1.1 / height, top=1 - 0.5 / height,
                        hspace=0.35)
    for ax, (name, acc) in zip(axes[:, 0], accs.items()):
        ax.bar(x, acc[order], color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(name, fontsize=9, y=1.0)
        twin = ax.twinx()
        twin.plot(x, support[order], color="tab:orange", marker=".", lw=1)
        twin.set_ylabel("test support", color="tab:orange")
        twin.set_ylim(0, None)
    axes[-1, 0].set_xticks(x, [class_names[i] for i in order], rotation=90, fontsize=6)
    fig.suptitle(title)
    return _save(fig, path)


def residuals(path: Path, title: str, res: dict[str, np.ndarray]) -> Path:
    """Per strategy (columns): a histogram of residuals and their Q-Q plot against the normal."""
    from scipy import stats  # here, not at the top: only regression tasks pay for importing scipy.stats (~1 s)

    fig, axes = plt.subplots(2, len(res), figsize=(3.6 * len(res), 6.4), squeeze=False)
    fig.subplots_adjust(left=0.5 / (3.6 * len(res)), right=0.98, bottom=0.08, top=0.9, wspace=0.3, hspace=0.35)
    for (hist, qq), (name, r) in zip(axes.T, res.items()):
        hist.hist(r, bins=min(50, max(10, len(r) // 20)), color="tab:blue")
        hist.axvline(0, color="black", lw=0.8)
        hist.set_title(name, fontsize=9, y=1.0)
        hist.set_xlabel("pred - target")
        stats.probplot(r, dist="norm", plot=qq)
        qq.get_lines()[0].set_markersize(3)
        qq.set_title("Q-Q vs normal", fontsize=8, y=1.0)
    fig.suptitle(title)
    return _save(fig, path)


def gallery(path: Path, title: str, rows: dict[str, list]) -> Path:
    """One strip per strategy of its first GALLERY_SHOWN `diagnostics.Example`s, each captioned
    with its true label over its predicted one and its loss.

    All strips are one image in one axes without an axis (labels and captions are plain text): an
    axes per strip, or per example, made most of the figure's time.
    """
    rows = {name: examples[:GALLERY_SHOWN] for name, examples in rows.items()}
    strips = [_strip([e.image for e in examples]) for examples in rows.values()]
    height, step = strips[0][0].shape[0], strips[0][1]
    band = height // 2  # white rows above each strip for its captions
    width = max(strip.shape[1] for strip, _ in strips)
    canvas = np.concatenate([np.pad(strip, ((band, 0), (0, width - strip.shape[1]))
                                    + ((0, 0),) * (strip.ndim - 2), constant_values=255) for strip, _ in strips])
    inch = step / 0.9  # pixels per inch: an image and its gap are 0.9 inches wide
    fig_w, fig_h = canvas.shape[1] / inch + 1.3, canvas.shape[0] / inch + 0.45
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((1.2 / fig_w, 0.05 / fig_h, canvas.shape[1] / inch / fig_w, canvas.shape[0] / inch / fig_h))
    ax.set_axis_off()
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=255, interpolation="nearest", aspect="equal")
    for r, (name, examples) in enumerate(rows.items()):
        top = r * (height + band) + band  # the strip's first pixel row
        ax.text(-step * 0.1, top + height / 2, name, ha="right", va="center", fontsize=8)
        for n, ex in enumerate(examples):
            ax.text((n + 0.5) * step, top - 1, f"{ex.true}\n→ {ex.predicted} ({ex.loss:.2f})",
                    ha="center", va="bottom", fontsize=6)
    fig.suptitle(title + " (caption: true, → predicted (loss))", fontsize=9)
    return _save(fig, path)


def _strip(images: list[np.ndarray], pad: int = 2) -> tuple[np.ndarray, int]:
    """(C, H, W) uint8 images side by side with white gaps -> (H, k * (W + pad)[, C]) and the step."""
    padded = [np.pad(im, ((0, 0), (0, 0), (0, pad)), constant_values=255) for im in images]
    strip = np.concatenate(padded, axis=2).transpose(1, 2, 0)  # (H, k * (W + pad), C)
    return (strip[..., 0] if strip.shape[2] == 1 else strip), images[0].shape[2] + pad


def training_curves(path: Path, title: str, panels: dict[str, dict[str, pd.DataFrame]],
                    styles: dict[str, tuple[int, str]], boundaries: dict[str, list[float]]) -> Path:
    """One panel per curve kind (at most PANELS_PER_ROW to a row), one line per label: the mean of
    `value` over the label's seeds at each `step`, with a band of ±1 std over seeds where it has more
    than one. styles: label -> (colour index, line style); boundaries: label -> x of its stage
    boundaries (dotted, in its colour). One legend for all panels, under them."""
    labels = list(dict.fromkeys(label for lines in panels.values() for label in lines))
    legend_rows = -(-len(labels) // 4)
    fig, axes = _grid(len(panels), 2.2, bottom=0.55 + 0.17 * legend_rows, left=0.45, wspace=0.3)
    colours = plt.get_cmap("tab10")
    for ax, (name, lines) in zip(axes.flat, panels.items()):
        for label, frame in lines.items():
            colour, style = styles.get(label, (0, "-"))
            stats = frame.groupby("step")["value"].agg(["mean", "std", "count"])
            ax.plot(stats.index, stats["mean"], style, color=colours(colour % 10), lw=1.2, label=label)
            spread = stats["std"].where(stats["count"] > 1)
            ax.fill_between(stats.index, stats["mean"] - spread, stats["mean"] + spread, color=colours(colour % 10),
                            alpha=0.15, lw=0)
            for x in boundaries.get(label, []):
                ax.axvline(x, color=colours(colour % 10), ls=":", lw=0.8)
        ax.set_title(name, fontsize=8, pad=3, y=1.0)
        ax.set_xlabel("epoch", fontsize=7, labelpad=1)
        ax.tick_params(labelsize=7, pad=1)
        ax.grid(alpha=0.3)
    handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncols=min(len(handles), 4), fontsize=7,
                   frameon=False)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


class Difference(NamedTuple):
    """One strategy's difference from its reference: mean and interval (display units)."""

    label: str
    mean: float
    low: float  # NaN: no interval
    high: float
    paired: bool  # False: an unpaired comparison (an ensemble against the mean reference), drawn as a diamond


def differences(path: Path, title: str, panels: dict[str, list[Difference]]) -> Path:
    """A forest plot per panel (a task's metric, or delta_m): one row per strategy (the same rows in
    every panel, labelled on the left), its mean difference as a dot with its interval as an error
    bar, an unpaired difference as a diamond, and a line at 0 (no difference)."""
    labels = list(dict.fromkeys(item.label for items in panels.values() for item in items))
    y = {label: len(labels) - 1 - i for i, label in enumerate(labels)}
    left = 0.1 + 0.055 * max(map(len, labels))  # inches for the strategy names
    fig, axes = _grid(len(panels), 0.28 * len(labels) + 0.5, left=left, bottom=0.35, top=0.95, wspace=0.12,
                      sharey=True)
    for ax, (name, items) in zip(axes.flat, panels.items()):
        for item in items:
            if item.paired:
                err = np.array([[item.mean - item.low], [item.high - item.mean]])
                ax.errorbar(item.mean, y[item.label], xerr=None if np.isnan(err).any() else err, fmt="o",
                            color="tab:blue", capsize=3, ms=4)
            else:
                ax.plot(item.mean, y[item.label], "D", color="tab:red", ms=5)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(name, fontsize=8, pad=3, y=1.0)
        ax.tick_params(labelsize=7, pad=1)
        ax.grid(axis="x", alpha=0.3)
    axes.flat[0].set_yticks(list(y.values()), list(y))
    axes.flat[0].set_ylim(-0.7, len(labels) - 0.3)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def forgetting_bars(path: Path, title: str, values: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
                    ylabels: dict[str, str]) -> Path:
    """One panel per task; per strategy a baseline bar (right after the task's own stage) beside a
    final bar (after the last stage), mean over seeds; error bars are ±1 sample std over seeds, as
    the legend says.

    values: task -> strategy -> (baselines, finals), each (n_seeds,).
    """
    fig, axes = _grid(len(values), 2.4, bottom=0.9, left=0.55, wspace=0.35)
    width = 0.38
    for ax, (task, by_strategy) in zip(axes.flat, values.items()):
        x = np.arange(len(by_strategy))
        bars = ((-width / 2, 0, "baseline (own stage)", 0.45), (width / 2, 1, "final", 1.0))
        for offset, which, label, alpha in bars:
            means = [np.mean(v[which]) for v in by_strategy.values()]
            stds = [np.std(v[which], ddof=1) if len(v[which]) > 1 else 0.0 for v in by_strategy.values()]
            ax.bar(x + offset, means, width, yerr=stds, capsize=3, alpha=alpha, color="tab:blue",
                   label=f"{label}, ±1 std over seeds")
        ax.set_xticks(x, list(by_strategy), rotation=20, ha="right")
        ax.tick_params(labelsize=7, pad=1)
        ax.set_title(task, fontsize=8, pad=3, y=1.0)
        ax.set_ylabel(ylabels.get(task, ""), fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize=6, loc="lower left")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _grid(panels: int, height: float, *, left: float = 0.5, bottom: float = 0.45, top: float = 0.55,
          wspace: float = 0.25, hspace: float = 0.5, sharey: bool = False):
    """A figure PAGE_WIDTH wide of `panels` axes, at most PANELS_PER_ROW to a row, each row `height`
    inches; margins in inches (left: y labels; bottom: x labels and legends; top: the title). The
    layout is set here, not by a layout engine, whose extra pass over the text would double the time
    savefig takes."""
    cols = min(panels, PANELS_PER_ROW)
    rows = -(-panels // cols)
    fig_height = rows * height * (1 + hspace) - hspace * height + top + bottom
    fig, axes = plt.subplots(rows, cols, figsize=(PAGE_WIDTH, fig_height), squeeze=False, sharey=sharey)
    fig.subplots_adjust(left=left / PAGE_WIDTH, right=0.99, bottom=bottom / fig_height, top=1 - top / fig_height,
                        wspace=wspace, hspace=hspace)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    return fig, axes


def _save(fig, path: Path) -> Path:
    """Save and close. No tight_layout: the figures set their margins (see `_grid`), or ask for the
    constrained layout when they are drawn rarely (panel_lines, dense_examples); a layout pass over
    the text took about half of a report's time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def ensemble_members(path: Path, title: str, panels: dict[str, dict[str, tuple[list[float], float]]],
                     ylabels: dict[str, str]) -> Path:
    """One panel per task: per ensemble (x), its members as grey dots and the ensemble as a red bar marker."""
    fig, axes = _grid(len(panels), 2.4, bottom=0.8, left=0.55, wspace=0.35)
    for ax, (task, ensembles) in zip(axes.flat, panels.items()):
        for x, (members, value) in enumerate(ensembles.values()):
            jitter = np.linspace(-0.12, 0.12, len(members)) if len(members) > 1 else np.zeros(1)
            ax.scatter(x + jitter, members, color="0.45", s=22, zorder=2, label="member" if x == 0 else None)
            ax.scatter([x], [value], color="tab:red", marker="_", s=900, linewidths=2.5, zorder=3,
                       label="ensemble" if x == 0 else None)
        ax.set_xticks(range(len(ensembles)), list(ensembles), rotation=15, ha="right")
        ax.tick_params(labelsize=7, pad=1)
        ax.set_xlim(-0.6, len(ensembles) - 0.4)
        ax.set_title(task, fontsize=8, pad=3, y=1.0)
        ax.set_ylabel(ylabels.get(task, ""), fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def panel_lines(path: Path, title: str, panels: dict[str, dict[str, pd.Series]], *, ylabel: str,
                log: bool = False, hline: float | None = None, ylim: tuple[float, float] | None = None,
                empty: str = "no values") -> Path:
    """Small multiples: one panel per entry, one line per series through its measured values.

    panels: entry -> label -> series indexed by epoch from 0 (drawn from 1; NaN where an epoch has
    no value, e.g. no cosine measured in it). `log` puts the y axis on a log scale when every value
    is positive; a panel whose series are all missing says `empty` instead of drawing.
    """
    cols = min(len(panels), PANELS_PER_ROW)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False, sharey=ylim is not None,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (name, lines) in zip(axes.flat, panels.items()):
        drawn = {k: s.dropna() for k, s in lines.items() if s.notna().any()}
        for label, series in drawn.items():
            ax.plot(series.index + 1, series.values, label=label, marker=".", ms=3)
        if not drawn:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.4")
        elif log and all((s > 0).all() for s in drawn.values()):
            ax.set_yscale("log")
        if hline is not None:
            ax.axhline(hline, color="black", lw=0.7)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    handles = next((ax.get_legend_handles_labels() for ax in axes.flat if ax.get_legend_handles_labels()[0]), None)
    if handles:
        fig.legend(*handles, loc="upper right", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


CLASS_COLOURS = plt.get_cmap("tab10")  # class c of boxes, mask value c (c - 1: 0 is background)


def dense_examples(path: Path, title: str, images: np.ndarray, rows: dict[str, list], label) -> Path:
    """One strip per entry of `rows` (the truth first, then one per strategy: `kinds.Drawing`s, one per
    example image (k, C, H, W) uint8): the images in grey side by side, each row's class maps painted
    over them (background clear) and its boxes drawn, labelled label(class) and their score if any.
    A strip is one image (as in `gallery`), so a figure of many examples renders quickly."""
    strip, step = _strip(list(images))
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.9 * len(images) + 0.8, 1.25 * len(rows)), squeeze=False,
                             layout="constrained")
    for ax, (name, drawings) in zip(axes[:, 0], rows.items()):
        ax.imshow(strip, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        masks = [d.mask for d in drawings]
        if all(m is not None for m in masks):
            ax.imshow(_mask_colours(np.concatenate([np.pad(m, ((0, 0), (0, step - m.shape[1]))) for m in masks], 1)),
                      interpolation="nearest")
        for n, d in enumerate(drawings):
            _boxes(ax, d.boxes if d.boxes is not None else [], n * step, label)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
        ax.set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _mask_colours(mask: np.ndarray) -> np.ndarray:
    """(H, W) class map -> (H, W, 4) RGBA: class c > 0 in colour c - 1, background transparent."""
    m = mask.astype(int)
    colours = CLASS_COLOURS((m - 1) % 10)
    colours[..., 3] = np.where(m > 0, 0.6, 0.0)
    return colours


def _boxes(ax, boxes, x0: int, label) -> None:
    """Rows [x1, y1, x2, y2, (score,) class] as rectangles, shifted right by x0 pixels."""
    from matplotlib.patches import Rectangle

    for row in boxes:
        x1, y1, x2, y2, cls = *row[:4], int(row[-1])
        colour = CLASS_COLOURS(cls % 10)
        ax.add_patch(Rectangle((x0 + x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.0, edgecolor=colour))
        ax.text(x0 + x1, y1 - 0.5, label(cls) + (f" {row[4]:.2f}" if len(row) == 6 else ""), fontsize=4.5,
                color="white", va="bottom", bbox={"facecolor": colour, "pad": 0.3, "lw": 0})
