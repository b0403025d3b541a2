"""The results store: one folder per cell under `results/<suite>/`, written atomically.

    results/<suite>/
        suite.json                  the suite manifest (bench/record.py: Manifest), written by `bench run`
        <cell>/                     the cell's current result
            record.json             its record (bench/record.py: Record), written last
            history.csv             one row per epoch (losses, validation metrics, learning rate)
            predictions.npz         test predictions (float16 probabilities or values) and targets per task,
                                    plus the highest-loss test images (uint8) with indices and losses
            log.txt                 the attempt's log, with the traceback when it failed
            failed_attempt.json     a later rerun that failed or was interrupted while this result stayed,
            failed_attempt.log      and that rerun's log
        .attempts/<cell>.<id>/      a run in progress, with the same files
        .locks/<cell>.lock          the lock of a cell being run (bench/locks.py), held by the run's process

Every run of a cell takes the cell's lock, then trains into a fresh attempt folder; nothing touches
the cell's folder while it trains. When the attempt is done, or the cell has no finished result,
`finish` renames the old folder aside, renames the attempt into place and deletes the old one.
`recover` completes a swap cut between its two renames and deletes attempts left by a killed
process, so those are never read as results; it touches only cells whose lock it can take, so it
never deletes the attempt of a run that is alive, on this machine or another. When an attempt
fails while a finished result exists, the result stays, and the failed attempt's record and log go
beside it. A cell written by the previous code (schema 1:
metrics.json + config.json) is read through `record.read_legacy` and never rewritten.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.locks import CellLock
from bench.record import Manifest, Record, RecordError, read_json, read_legacy, read_record

RECORD, LEGACY_RECORD = "record.json", "metrics.json"
HISTORY, PREDICTIONS, LOG = "history.csv", "predictions.npz", "log.txt"
FAILED_ATTEMPT, FAILED_LOG = "failed_attempt.json", "failed_attempt.log"
MANIFEST = "suite.json"
ATTEMPTS = ".attempts"
LOCKS = ".locks"
ASIDE = ".replaced"  # suffix of a result renamed aside while its replacement moves in
# The longest cell name the store can hold: a file name has at most 255 bytes (NAME_MAX of ext4, XFS,
# NFS, Lustre), and an attempt folder adds `.<pid>-<8 hex digits>` (pids up to 4194304) and, while it
# swaps in, ASIDE to the cell's name.
MAX_CELL_NAME_BYTES = 255 - len(".4194304-01234567" + ASIDE)


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: a shared results folder must stay readable
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    _atomic(path, lambda f: torch.save(obj, f))


def _required_arrays(record: Record, task: str) -> tuple[str, ...]:
    """The arrays a finished cell stores for `task`, as its kind says (TaskSpec.required_arrays); a record
    without specs (older stores) or of an unknown kind: predictions and targets."""
    from bench.kinds import KINDS, TaskSpec

    kind = record.specs.get(task, {}).get("kind")
    return (KINDS.get(kind) if kind in KINDS else TaskSpec).required_arrays


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class CellFiles:
    """Writes the files of one cell folder: an attempt while it runs."""

    def __init__(self, path: Path):
        self.path = path

    def write_record(self, record: Record) -> None:
        atomic_write_json(self.path / RECORD, record.to_json())

    def write_history(self, rows: list[dict]) -> None:
        import pandas as pd

        atomic_write_text(self.path / HISTORY, pd.DataFrame(rows).to_csv(index=False))

    def write_predictions(self, arrays: dict[str, np.ndarray]) -> None:
        _atomic(self.path / PREDICTIONS, lambda f: np.savez_compressed(f, **arrays))

    def append_log(self, text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOG, "a") as f:
            f.write(text.rstrip("\n") + "\n")


class Store:
    """Read the cells of one suite; write them only through attempts (`attempt`, then `finish`)."""

    def __init__(self, root: Path | str, suite: str):
        self.dir = Path(root) / suite
        self.attempts_dir = self.dir / ATTEMPTS
        self.locks_dir = self.dir / LOCKS

    def cell_dir(self, cell: str) -> Path:
        return self.dir / cell

    def cells(self) -> list[str]:
        """Names of the cell folders that hold a record (of either schema)."""
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir() if not p.name.startswith(".")
                      and ((p / RECORD).exists() or (p / LEGACY_RECORD).exists()))

    def record(self, cell: str) -> Record | None:
        """The cell's record, None when it has none; RecordError when it is damaged."""
        folder = self.cell_dir(cell)
        if (folder / RECORD).exists():
            return read_record(folder / RECORD)
        if (folder / LEGACY_RECORD).exists():
            return read_legacy(folder)
        return None

    def finished(self, cell: str) -> Record | None:
        """The cell's record if it is done and its predictions are readable; RecordError when damaged."""
        record = self.record(cell)
        if record is None or record.status != "done":
            return None
        path = self.cell_dir(cell) / PREDICTIONS
        names = set(self._npz(path).files) if path.exists() else set()
        missing = [f"{k}__{t}" for t in record.tasks for k in _required_arrays(record, t) if f"{k}__{t}" not in names]
        if missing:
            raise RecordError(path, f"incomplete: no {', '.join(missing)}")
        return record

    def is_done(self, cell: str, key: str) -> bool:
        record = self.finished(cell)
        return record is not None and record.key == key

    def failed_attempt(self, cell: str) -> Record | None:
        """A rerun that failed while the finished result stayed, if any."""
        path = self.cell_dir(cell) / FAILED_ATTEMPT
        return read_record(path) if path.exists() else None

    def history(self, cell: str):
        """The cell's history as a DataFrame, None when it has none; RecordError when it is damaged."""
        import pandas as pd

        path = self.cell_dir(cell) / HISTORY
        if not path.exists() or not path.stat().st_size:
            return None
        try:
            return pd.read_csv(path)
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
            raise RecordError(path, f"damaged ({str(err).strip()})") from None

    def predictions(self, cell: str) -> dict[str, np.ndarray] | None:
        path = self.cell_dir(cell) / PREDICTIONS
        if not path.exists():
            return None
        with self._npz(path) as z:
            try:
                return {k: z[k] for k in z.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
                raise RecordError(path, f"damaged ({err})") from None

    @staticmethod
    def _npz(path: Path):
        try:
            return np.load(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise RecordError(path, f"damaged ({err})") from None

    # ---- the suite manifest -------------------------------------------------------------
    def manifest(self) -> Manifest | None:
        path = self.dir / MANIFEST
        return Manifest.from_json(read_json(path), path) if path.exists() else None

    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write_json(self.dir / MANIFEST, manifest.to_json())

    # ---- attempts -----------------------------------------------------------------------
    def attempt(self, cell: str) -> CellFiles:
        """A fresh, empty folder to run the cell in: `.attempts/<cell>.<pid>-<random>`."""
        path = self.attempts_dir / f"{cell}.{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir(parents=True)
        return CellFiles(path)

    def finish(self, attempt: CellFiles, record: Record) -> bool:
        """Write the attempt's record and store it. True: it is now the cell's result. False: it
        failed while a finished result exists, which stays; the attempt goes beside it."""
        attempt.write_record(record)
        target = self.cell_dir(record.cell)
        if record.status != "done" and self._has_finished(record.cell):
            log = attempt.path / LOG
            atomic_write_text(target / FAILED_LOG, log.read_text() if log.exists() else "")
            atomic_write_json(target / FAILED_ATTEMPT, record.to_json())
            shutil.rmtree(attempt.path)
            return False
        self._swap(attempt.path, target)
        return True

    def _has_finished(self, cell: str) -> bool:
        try:
            return self.finished(cell) is not None
        except RecordError:  # a damaged result is not worth keeping over a fresh failure
            return False

    @staticmethod
    def _swap(attempt: Path, target: Path) -> None:
        aside = attempt.with_name(attempt.name + ASIDE)
        if target.exists():
            os.rename(target, aside)
        os.rename(attempt, target)  # a crash between the renames is repaired by recover()
        shutil.rmtree(aside, ignore_errors=True)

    # ---- locks and recovery ---------------------------------------------------------------
    def lock(self, cell: str) -> CellLock:
        """The cell's lock (not taken yet): whoever holds it may run the cell and touch its files."""
        return CellLock(self.locks_dir / f"{cell}.lock")

    def leftovers(self, cell: str) -> list[Path]:
        """The cell's attempt folders and results renamed aside (`.replaced`), oldest first."""
        if not self.attempts_dir.is_dir():
            return []
        found = [p for p in self.attempts_dir.iterdir() if _attempt_cell(p.name) == cell]
        return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))

    def recover(self) -> list[str]:
        """Complete swaps cut between their renames and delete attempts of runs that are gone, for every
        cell whose lock can be taken now (its holder, if any, is dead). Returns one line per repair;
        cells held by a live run, here or on another host, are left alone and named."""
        if not self.attempts_dir.is_dir():
            return []
        lines = []
        for cell in sorted({_attempt_cell(p.name) for p in self.attempts_dir.iterdir()}):
            lock = self.lock(cell)
            if not lock.try_acquire():
                holder = lock.holder() or "starting"
                lines.append(f"{cell}: left its attempt alone; a live run holds the cell ({holder})")
                continue
            try:
                lines += self.recover_cell(cell)
            finally:
                lock.release()
        return lines

    def recover_cell(self, cell: str) -> list[str]:
        """`recover` for one cell; the caller holds the cell's lock, so every leftover is dead."""
        lines, target = [], self.cell_dir(cell)
        for aside in [p for p in self.leftovers(cell) if p.name.endswith(ASIDE)]:
            attempt = aside.with_name(aside.name[:-len(ASIDE)])
            if not target.exists() and (attempt / RECORD).exists():
                os.rename(attempt, target)
                lines.append(f"{target}: completed its interrupted replacement")
            elif not target.exists():
                os.rename(aside, target)
                lines.append(f"{target}: restored after an interrupted replacement")
            shutil.rmtree(aside, ignore_errors=True)
        for attempt in self.leftovers(cell):
            shutil.rmtree(attempt)
            lines.append(f"{attempt}: removed an interrupted attempt (never read as a result)")
        return lines


def _attempt_cell(name: str) -> str:
    """`<cell>.<pid>-<hex>[.replaced]` -> the cell (cell names may hold dots, the suffix does not)."""
    return name.removesuffix(ASIDE).rsplit(".", 1)[0]
