"""A lock per cell: runs of one suite into one results folder never train a cell at the same time.

The lock of cell C is `results/<suite>/.locks/C.lock`, a lease from filelock (`SoftFileLease`): a
marker file created with O_EXCL that names its holder (host, pid, process start time, a random
token) and whose mtime a daemon thread of the holder renews every LEASE_S / 3 seconds. Another
process takes the lock over when
- the holder ran on this host and its process is gone (its pid is dead or was reused by a process
  that started later): at once, the usual case after Ctrl-C, `kill -9` or a killed pool worker;
- the holder ran on another host and the marker stayed unchanged for LEASE_S seconds, as watched
  by the contender on its own monotonic clock (so hosts' clocks need not agree): a SLURM job whose
  node died, say. A single look never takes a lock over; a waiting run keeps watching it.
A takeover swaps the marker atomically (renameat2 RENAME_EXCHANGE where the file system has it),
so two contenders cannot both take one stale lock.

Why a lease and not `flock`/`fcntl`: byte-range locks vanish with their process, which is ideal
on one machine, but on cluster file systems they are node-local or off unless the mount says
otherwise (Lustre without `-o flock`, BeeGFS by default), which would silently let two nodes train
one cell. O_EXCL creation, renames and mtimes are what NFS, Lustre, GPFS and BeeGFS all share.
Why not pid + hostname alone: a pid says nothing about a process on another host.

The holder of a cell's lock is the only process that may touch the cell's folder and its attempts
(bench/store.py): it trains, swaps its attempt in, and may delete attempts left by dead runs.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import SoftFileLease, Timeout

LEASE_S = 60.0  # a holder unseen for this long on another host is dead; every contender must agree (filelock checks)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, read from its marker."""

    host: str
    pid: int
    renewed_s: float  # seconds since the holder last renewed the lease (by this machine's clock vs the file's mtime)
    alive: bool  # this host: its pid runs; another host: renewed within the lease

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


class CellLock:
    """One cell's lock. `try_acquire` never waits; `acquire(timeout)` watches a held lock, taking it
    over when its holder is judged dead (see the module docstring). Release it in a `finally`."""

    def __init__(self, path: Path, *, lease_s: float = LEASE_S):
        self.path = Path(path)
        self._lease = SoftFileLease(str(self.path), lease_duration=lease_s)

    def try_acquire(self) -> bool:
        """Take the lock if it is free or its holder is dead on this host; False if someone holds it."""
        return self.acquire(timeout=0)

    def acquire(self, timeout: float, poll_s: float = 1.0) -> bool:
        """Wait up to `timeout` seconds for the lock; False if it stayed held."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if timeout <= 0:
                self._lease.acquire(blocking=False)
            else:
                self._lease.acquire(timeout=timeout, poll_interval=poll_s)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        if self._lease.is_locked:
            self._lease.release()

    @property
    def lost(self) -> bool:
        """Held by this object once, and since taken over by another run (it was judged dead)."""
        return self._lease.compromise is not None

    def holder(self) -> Holder | None:
        """The current holder, None when the lock is free (or its marker unreadable)."""
        return read_holder(self.path)


def read_holder(path: Path) -> Holder | None:
    """The holder named by a lock marker at `path`, None when there is none."""
    owner = SoftFileLease(str(path), lease_duration=LEASE_S).owner  # reads the marker; takes nothing
    try:
        renewed = max(0.0, time.time() - os.stat(path).st_mtime)
    except FileNotFoundError:
        return None
    if owner is None:
        return None
    here = owner.hostname == socket.gethostname()
    alive = _pid_alive(owner.pid) if here else renewed < (owner.lease_duration or LEASE_S)
    return Holder(host=owner.hostname, pid=owner.pid, renewed_s=renewed, alive=alive)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
