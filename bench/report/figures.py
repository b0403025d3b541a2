"""Matplotlib figures for the report. Each function saves one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


PANELS_PER_ROW = 4  # strategies per row of a confusion figure; more wrap to the next row
MAX_LABELLED_CLASSES = 40  # beyond this, one tick label per class makes a panel metres wide (shapes: 135)


def confusion_panels(path: Path, title: str, mats: dict[str, np.ndarray], class_names: list[str], *,
                     mask_diagonal: bool = False) -> Path:
    """One row-normalised confusion matrix per strategy, side by side (rows: true, columns: predicted).

    mask_diagonal blanks the correct predictions and scales the colours to the largest error rate,
    so that the errors of a many-class task stay visible.
    """
    labelled = len(class_names) <= MAX_LABELLED_CLASSES
    size = max(3.2, 0.35 * len(class_names) + 1.5) if labelled else 8.0  # inches per panel
    cols = min(len(mats), PANELS_PER_ROW)
    rows = -(-len(mats) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[len(mats):]:
        ax.set_visible(False)
    cmap = plt.get_cmap("Blues").with_extremes(bad="lightgrey")
    for ax, (name, cm) in zip(axes.flat, mats.items()):
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        if mask_diagonal:
            norm = norm.astype(float)
            np.fill_diagonal(norm, np.nan)
        im = ax.imshow(norm, vmin=0, vmax=max(float(np.nanmax(norm)), 1e-9) if mask_diagonal else 1, cmap=cmap)
        if mask_diagonal:
            fig.colorbar(im, ax=ax, fraction=0.046)
        if labelled:
            ticks = np.arange(len(class_names))
            ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
            ax.set_yticks(ticks, class_names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name, fontsize=9)
        if len(class_names) <= 12:
            for i in range(len(class_names)):
                for j in range(len(class_names)):
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.suptitle(title)
    return _save(fig, path)


def per_class_accuracy(path: Path, title: str, accs: dict[str, np.ndarray], support: np.ndarray,
                       class_names: list[str]) -> Path:
    """One bar panel per strategy: accuracy of each true class, classes ordered by test support
    (most frequent first), with the support drawn as a line on the right axis."""
    order = np.argsort(-support, kind="stable")
    x = np.arange(len(order))
    fig, axes = plt.subplots(len(accs), 1, figsize=(max(6.0, 0.18 * len(x) + 2), 2.4 * len(accs)),
                             squeeze=False, sharex=True)
    for ax, (name, acc) in zip(axes[:, 0], accs.items()):
        ax.bar(x, acc[order], color="tab:blue")
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(name, fontsize=9)
        twin = ax.twinx()
        twin.plot(x, support[order], color="tab:orange", marker=".", lw=1)
        twin.set_ylabel("test support", color="tab:orange")
        twin.set_ylim(0, None)
    axes[-1, 0].set_xticks(x, [class_names[i] for i in order], rotation=90, fontsize=6)
    fig.suptitle(title)
    return _save(fig, path)


def residuals(path: Path, title: str, res: dict[str, np.ndarray]) -> Path:
    """Per strategy (columns): a histogram of residuals and their Q-Q plot against the normal."""
    from scipy import stats  # here, not at the top: scipy.stats costs ~1.5 s to import

    fig, axes = plt.subplots(2, len(res), figsize=(3.6 * len(res), 6.4), squeeze=False)
    for (hist, qq), (name, r) in zip(axes.T, res.items()):
        hist.hist(r, bins=min(50, max(10, len(r) // 20)), color="tab:blue")
        hist.axvline(0, color="black", lw=0.8)
        hist.set_title(name, fontsize=9)
        hist.set_xlabel("pred - target")
        stats.probplot(r, dist="norm", plot=qq)
        qq.get_lines()[0].set_markersize(3)
        qq.set_title("Q-Q vs normal", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def gallery(path: Path, title: str, rows: dict[str, list]) -> Path:
    """One strip per strategy of `diagnostics.Example`s, each captioned true / predicted / loss.

    A strip is one image (not one axes per example): a 16-image gallery then renders in well under a second.
    """
    cols = max(len(r) for r in rows.values())
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.1 * cols + 0.8, 1.9 * len(rows)), squeeze=False)
    for ax, (name, examples) in zip(axes[:, 0], rows.items()):
        strip, step = _strip([e.image for e in examples])
        ax.imshow(strip, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for n, ex in enumerate(examples):
            ax.text((n + 0.5) * step, -1, f"t: {ex.true}\np: {ex.predicted}\nloss {ex.loss:.2f}",
                    ha="center", va="bottom", fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
        ax.set_ylabel(name, fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def _strip(images: list[np.ndarray], pad: int = 2) -> tuple[np.ndarray, int]:
    """(C, H, W) uint8 images side by side with white gaps -> (H, k * (W + pad)[, C]) and the step."""
    padded = [np.pad(im, ((0, 0), (0, 0), (0, pad)), constant_values=255) for im in images]
    strip = np.concatenate(padded, axis=2).transpose(1, 2, 0)  # (H, k * (W + pad), C)
    return (strip[..., 0] if strip.shape[2] == 1 else strip), images[0].shape[2] + pad


def training_curves(path: Path, title: str, histories: dict[str, pd.DataFrame], columns: list[str]) -> Path:
    """One panel per history column, one line per strategy (mean over seeds, by epoch index)."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    for ax, col in zip(axes[0], columns):
        for name, h in histories.items():
            if col in h:
                series = h.groupby("step")[col].mean()
                ax.plot(series.index, series.values, label=name)
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:  # no lines when no cell has a history
        axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def forgetting_bars(path: Path, title: str, values: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
                    ylabels: dict[str, str]) -> Path:
    """One panel per task; per strategy a baseline bar (right after the task's own stage) beside a
    final bar (after the last stage), mean over seeds with std error bars.

    values: task -> strategy -> (baselines, finals), each (n_seeds,).
    """
    panel = max(3.2, 1.3 * max(len(v) for v in values.values()))  # inches: wider with more strategies
    fig, axes = plt.subplots(1, len(values), figsize=(panel * len(values), 3.4), squeeze=False)
    width = 0.38
    for ax, (task, by_strategy) in zip(axes[0], values.items()):
        x = np.arange(len(by_strategy))
        bars = ((-width / 2, 0, "baseline (own stage)", 0.45), (width / 2, 1, "final", 1.0))
        for offset, which, label, alpha in bars:
            means = [np.mean(v[which]) for v in by_strategy.values()]
            stds = [np.std(v[which], ddof=1) if len(v[which]) > 1 else 0.0 for v in by_strategy.values()]
            ax.bar(x + offset, means, width, yerr=stds, capsize=3, alpha=alpha, color="tab:blue", label=label)
        ax.set_xticks(x, list(by_strategy), rotation=20, fontsize=8)
        ax.set_title(task, fontsize=9)
        ax.set_ylabel(ylabels.get(task, ""))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ensemble_members(path: Path, title: str, panels: dict[str, dict[str, tuple[list[float], float]]],
                     ylabels: dict[str, str]) -> Path:
    """One panel per task: per ensemble (x), its members as grey dots and the ensemble as a red bar marker."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (task, ensembles) in zip(axes[0], panels.items()):
        for x, (members, value) in enumerate(ensembles.values()):
            jitter = np.linspace(-0.12, 0.12, len(members)) if len(members) > 1 else np.zeros(1)
            ax.scatter(x + jitter, members, color="0.45", s=22, zorder=2, label="member" if x == 0 else None)
            ax.scatter([x], [value], color="tab:red", marker="_", s=900, linewidths=2.5, zorder=3,
                       label="ensemble" if x == 0 else None)
        ax.set_xticks(range(len(ensembles)), list(ensembles), rotation=15, fontsize=7)
        ax.set_xlim(-0.6, len(ensembles) - 0.4)
        ax.set_title(task, fontsize=9)
        ax.set_ylabel(ylabels.get(task, ""))
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
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
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False, sharey=ylim is not None)
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
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.9 * len(images) + 0.8, 1.25 * len(rows)), squeeze=False)
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
