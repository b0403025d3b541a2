"""`bench status SUITE`: done / running / failed / left per cell, read from the store and its locks.

    python -m bench status cifar_mtl

Works for a suite running anywhere (this machine, a worker pool, SLURM nodes) as long as the
results folder is visible here: a cell is `running` while a live run holds its lock
(bench/locks.py), with the holder and the last epoch its attempt logged; `done` when the store holds
it finished with its current key; `failed` when its latest record failed or diverged; `left`
otherwise (never run, stale, damaged, or held by a run that died). Without the suite file the
cells come from the store's manifest and records, and keys are not checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tabulate import tabulate

from bench.locks import Holder
from bench.record import RecordError
from bench.store import LOG, Store

STATES = ("done", "running", "failed", "left")


@dataclass(frozen=True)
class CellStatus:
    cell: str
    state: str  # one of STATES
    detail: str = ""


def status_rows(store: Store, keys: dict[str, str] | None) -> list[CellStatus]:
    """One row per cell: of the grid (`keys`: cell name -> current key), else of the store."""
    names = list(keys) if keys is not None else _stored_cells(store)
    return [_status(store, name, None if keys is None else keys[name]) for name in names]


def status_table(rows: list[CellStatus]) -> str:
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    table = tabulate([(r.cell, r.state, r.detail) for r in rows], headers=("cell", "state", "detail"),
                     tablefmt="github")
    return table + "\n\n" + ", ".join(f"{counts[s]} {s}" for s in STATES) + f" (of {len(rows)} cells)"


def _stored_cells(store: Store) -> list[str]:
    try:
        manifest = store.manifest()
    except RecordError:  # `bench status` names the damaged file; the records still list the cells
        manifest = None
    names = list(manifest.cells) if manifest is not None else []
    locked = sorted(p.name[:-len(".lock")] for p in store.locks_dir.glob("*.lock")) if store.locks_dir.is_dir() else []
    return names + [n for n in store.cells() + locked if n not in names]


def _status(store: Store, cell: str, key: str | None) -> CellStatus:
    holder = store.lock(cell).holder()
    if holder is not None and holder.alive:
        return CellStatus(cell, "running", _running_detail(store, cell, holder))
    dead = f"; a dead run's lock is left ({holder}), the next run takes it over" if holder is not None else ""
    try:
        record = store.record(cell)
        finished = store.finished(cell)
    except RecordError as err:
        return CellStatus(cell, "left", f"damaged: {err}{dead}")
    if finished is not None and (key is None or finished.key == key):
        failed = store.failed_attempt(cell)
        return CellStatus(cell, "done", (f"a later rerun failed: {failed.reason}" if failed else "") + dead)
    if record is not None and record.status in ("failed", "diverged"):
        return CellStatus(cell, "failed", f"{record.status}: {record.reason}{dead}")
    if finished is not None:
        return CellStatus(cell, "left", f"stale: its config or training code changed{dead}")
    return CellStatus(cell, "left", dead.lstrip("; "))


def _running_detail(store: Store, cell: str, holder: Holder) -> str:
    """The holder, how fresh its lease is, and the last epoch its newest attempt logged."""
    detail = f"{holder}, lease renewed {holder.renewed_s:.0f} s ago"
    attempts = [p for p in store.leftovers(cell) if (p / LOG).exists()]
    if not attempts:
        return detail
    rows = []
    for line in (attempts[-1] / LOG).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    epochs = [r for r in rows if isinstance(r, dict) and "epoch" in r]
    if epochs:
        last = epochs[-1]
        detail += f", epoch {last['epoch']}" + (f" of stage {last['stage']}" if last.get("stage") else "") \
            + f" (train loss {last['train_loss']:.3f})"
    return detail
