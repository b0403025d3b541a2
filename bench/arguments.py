"""The command line's own arguments, checked before any work: the output folders, the device and the
strategy selection.

    check_folder(Path("results"), "--results")     # bench/cli.py, before `bench run` loads any data
    check_device("cuda:1", "--device")
    cells = select(expand(suite), "stl, ensemble", suite)   # and the ensemble's members

Each raises ValueError naming the flag, what is wrong and what would work; the CLI prints it in one
line and exits 2, so a folder that cannot be written or a GPU that is not there never costs a
traceback after the data loaded or a cell trained. torch is imported only to look at a GPU.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from bench.settings import SuiteError

DEVICE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")
DEVICES = "auto, cpu, cuda, cuda:N (N: a GPU index), mps"


def check_folder(path: Path, flag: str) -> None:
    """ValueError unless `path` is a folder this process can write in, or can be created as one.

    Probed by creating (and removing) a folder: in `path` when it exists, else in its nearest existing
    parent, which is where `mkdir` would write; nothing is left behind. Permission bits alone would
    mislead (root writes in a read-only folder; ACLs and read-only mounts say otherwise)."""
    existing = next(p for p in (path, *path.parents) if p.exists())  # "." or "/" at the latest
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise ValueError(f"{flag}: {path} {what}; give a folder (created if missing)")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".bench-write-check."))
    except OSError as err:
        where = "" if existing == path else f" (its parent {existing} is not writable)"
        raise ValueError(f"{flag}: cannot write in {path}{where}: {err.strerror or err}; give a folder you can "
                         "write, e.g. one under your home or /tmp") from None


def check_device(name: str, flag: str = "--device", *, here: bool = True) -> None:
    """ValueError unless `name` is a device `bench.train_cell.pick_device` can use: auto, cpu, mps, cuda or
    cuda:N. here=True (the cells train on this machine): also that the GPU or MPS device exists here."""
    m = DEVICE.match(name)
    if m is None or (m[2] is not None and m[1] != "cuda"):
        raise ValueError(f"{flag}: unknown device {name!r}; valid: {DEVICES}")
    if not here or m[1] in ("auto", "cpu"):
        return
    import torch

    if m[1] == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{flag}: mps: this machine has no Apple GPU (torch.backends.mps.is_available() is "
                             "False); give cpu or auto")
        return
    count = torch.cuda.device_count()
    index = int(m[2] or 0)
    if index >= count:
        seen = f"{count} GPU(s), indices 0-{count - 1}" if count else "no GPU (torch.cuda.device_count() is 0)"
        raise ValueError(f"{flag}: {name}: no such GPU; this machine shows {seen}; give "
                         + ("cpu or auto" if not count else f"cuda:0 to cuda:{count - 1}"))


def select(cells: list, ids: str | None, suite: Any) -> list:
    """The cells of the comma-separated strategy ids of `--strategies` (all cells when None), plus the
    members of any combined cell among them (an ensemble's cells of the entry it combines), in grid
    order: a combined cell reads its members' stored predictions, so missing members run first.
    Spaces around the ids are ignored. SuiteError for an empty value, an empty id or an unknown id."""
    if ids is None:
        return cells
    valid = [s.id for s in suite.strategies]
    wanted = [part.strip() for part in ids.split(",")]
    if not any(wanted):
        raise SuiteError(f"--strategies: {ids!r} names no strategy id; leave the flag out to run every cell, or "
                         f"give comma-separated ids, valid: {', '.join(valid)}")
    if "" in wanted:
        raise SuiteError(f"--strategies: an empty id in {ids!r}; give comma-separated ids, valid: {', '.join(valid)}")
    unknown = set(wanted) - set(valid)
    if unknown:
        raise SuiteError(f"--strategies: unknown {sorted(unknown)}; valid: {', '.join(valid)}")
    keep = {c.name for c in cells if c.strategy.id in wanted}
    keep |= {m.name for c in cells if c.name in keep for m in c.members}
    return [c for c in cells if c.name in keep]
