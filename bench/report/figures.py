"""Matplotlib figures for the report. Each function saves one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


MAX_LABELLED_CLASSES = 40  # beyond this, one tick label per class makes a panel metres wide (shapes: 135)


def confusion_panels(path: Path, title: str, mats: dict[str, np.ndarray], class_names: list[str]) -> Path:
    """One row-normalised confusion matrix per strategy, side by side (rows: true, columns: predicted)."""
    k = len(mats)
    labelled = len(class_names) <= MAX_LABELLED_CLASSES
    size = max(3.2, 0.35 * len(class_names) + 1.5) if labelled else 8.0  # inches per panel
    fig, axes = plt.subplots(1, k, figsize=(size * k, size), squeeze=False)
    for ax, (name, cm) in zip(axes[0], mats.items()):
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
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
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
