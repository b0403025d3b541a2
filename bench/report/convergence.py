"""Convergence: a cell whose best epoch is its last may still have been improving when it stopped.

The trainer keeps the epoch with the best validation score (the suite's `select`); if that is the
last epoch of a stage, the validation curve had not turned yet, and a longer budget might have
changed the result. The report flags such cells "still improving". A sequential cell selects once
per stage, so each stage is checked on its own.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from bench.record import Record


def improving_stages(best_epochs: Sequence[int], stage_lengths: Sequence[int]) -> list[int]:
    """The 1-based stages whose best epoch is their last.

    `best_epochs[k]`: the epoch (1-based, within stage k) the trainer kept; `stage_lengths[k]`: the
    epochs stage k trained. Raises ValueError when the two differ in length or a best epoch lies
    outside 1..length.
    """
    if len(best_epochs) != len(stage_lengths):
        raise ValueError(f"{len(best_epochs)} best epochs for {len(stage_lengths)} stages")
    for best, length in zip(best_epochs, stage_lengths):
        if not 1 <= best <= length:
            raise ValueError(f"best epoch {best} outside a stage of {length} epochs")
    return [k + 1 for k, (best, length) in enumerate(zip(best_epochs, stage_lengths)) if best == length]


def stage_labels(history: pd.DataFrame) -> pd.Series:
    """The stage of each history row (one per epoch) as text, "" for one-stage training (an empty
    `stage` column, which pandas reads as NaN, or none)."""
    if "stage" not in history:
        return pd.Series([""] * len(history), index=history.index, dtype="string")
    return history["stage"].astype("string").fillna("")


def stage_lengths(history: pd.DataFrame) -> list[int]:
    """Epochs per stage, in training order, from a cell's history."""
    stages = stage_labels(history)
    return [int(n) for n in stages.groupby(stages, sort=False).size()]


def still_improving(record: Record, history: pd.DataFrame | None) -> list[int] | None:
    """The stages of a trained cell whose best epoch was their last ([] when none; [1] for a one-stage
    cell that kept its last epoch); None when it cannot be told (a combined cell, no history)."""
    if record.best_epoch is None or record.members:
        return None
    best = record.extra.get("stage_best_epochs") or [record.best_epoch]
    if history is not None and len(history):
        lengths = stage_lengths(history)
    elif record.epochs is not None and len(best) == 1:
        lengths = [record.epochs]
    else:
        return None
    try:
        return improving_stages(best, lengths)
    except ValueError:  # history and record disagree (an edited or mixed store): no verdict
        return None
