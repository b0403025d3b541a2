"""Cells computed from other cells' stored test predictions, without training (ensembles).

A cell with `members` (see grid.py) is built here instead of trained: the members' predictions are
read from the store and merged per task by the strategy's `combine` hook, and the result is recorded
like a trained cell's (test metrics per task in its Record, predictions.npz in its attempt folder).
`params` and `train_seconds` are the members' sums; `extra` holds each member's metrics and the
gain over the mean and the best member. Member metrics are recomputed from their stored (float16)
predictions, so that a combination of identical members shows a gain of exactly 0.
"""

from __future__ import annotations

import numpy as np

from bench.grid import Cell
from bench.kinds import TaskSpec
from bench.record import Record, RecordError
from bench.store import CellFiles, Store
from bench.strategies import STRATEGIES

Metrics = dict[str, dict[str, float]]  # task -> metric -> value


class MemberFailed(RuntimeError):
    """A member cell has no finished result, so the combination cannot be built."""


def combine_cell(cell: Cell, store: Store, attempt: CellFiles) -> dict:
    """Combine `cell.members` from the store, write the predictions into `attempt`, return the
    results part of the cell's Record."""
    strategy = STRATEGIES.get(cell.strategy.name)(**cell.strategy.params)
    records = {m.name: _finished(store, m) for m in cell.members}
    preds = {name: store.predictions(name) for name in records}
    specs = {t: TaskSpec.from_dict(s) for r in records.values() for t, s in r.specs.items()}
    test, arrays, members = {}, {}, {name: {} for name in records}
    for t in cell.tasks:
        names = [n for n in records if t in records[n].tasks]  # STL members are per task
        target = _same_target([preds[n][f"target__{t}"] for n in names], t)
        for n in names:
            members[n][t] = specs[t].metrics(preds[n][f"pred__{t}"].astype(np.float32), target)
        pred = strategy.combine(specs[t], [preds[n][f"pred__{t}"] for n in names])
        test[t] = specs[t].metrics(pred, target)
        arrays[f"pred__{t}"], arrays[f"target__{t}"] = pred.astype(np.float16), target
    attempt.write_predictions(arrays)
    return {
        "test": test, "params": sum(r.params or 0 for r in records.values()),
        "train_seconds": sum(r.train_seconds for r in records.values()),
        "notes": tuple(sorted({n for r in records.values() for n in r.notes})),
        "extra": {"members": members, **member_gains(test, members, specs)},
        "specs": {t: specs[t].to_dict() for t in cell.tasks},
    }


def _finished(store: Store, member: Cell) -> Record:
    try:
        record = store.record(member.name)
        if record is not None and record.status == "done":
            record = store.finished(member.name)  # its predictions are readable too
    except RecordError as err:
        raise MemberFailed(f"member {member.name} is damaged: {err}") from None
    if record is None:
        raise MemberFailed(f"member {member.name} has no result")
    if record.status != "done":
        raise MemberFailed(f"member {member.name} {record.status}: {record.reason}")
    if record.key != member.key:
        raise MemberFailed(f"member {member.name} is stale (stored for another config or code); rerun it")
    return record


def _same_target(targets: list[np.ndarray], task: str) -> np.ndarray:
    if any(not np.array_equal(targets[0], t) for t in targets[1:]):
        raise ValueError(f"task {task}: members were tested on different targets")
    return targets[0]


def member_gains(test: Metrics, members: dict[str, Metrics], specs: dict[str, TaskSpec]) -> dict[str, Metrics]:
    """Per task and metric: combined - mean member, and combined - best member (by the metric's
    direction, which the task's kind knows).

    Raw differences: for a lower-is-better metric (MAE) a negative gain is an improvement.
    """
    vs_mean: Metrics = {}
    vs_best: Metrics = {}
    for t, metrics in test.items():
        for metric, value in metrics.items():
            values = [m[t][metric] for m in members.values() if t in m]
            best = max(values) if specs[t].better_high(metric) else min(values)
            vs_mean.setdefault(t, {})[metric] = value - float(np.mean(values))
            vs_best.setdefault(t, {})[metric] = value - best
    return {"gain_vs_mean": vs_mean, "gain_vs_best": vs_best}
