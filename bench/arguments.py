"""The command line's own arguments, checked before any work: the output folders.

    check_folder(Path("results"), "--results")     # bench/cli.py, before `bench run` loads any data

Each raises ValueError naming the flag, what is wrong and what would work; the CLI prints it in one
line and exits 2, so a folder that cannot be written never costs a
traceback after the data loaded or a cell trained.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path



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
