"""The command line's own arguments: the parser of `bench`'s commands and their flags, and the checks
made before any work: the output folders, the device and the strategy selection.

    args = parser(cli.__doc__).parse_args(argv)
    check_folder(Path("results"), "--results")     # bench/cli.py, before `bench run` loads any data
    check_device("cuda:1", "--device")
    cells = select(expand(suite), "stl, ensemble", suite)   # and the ensemble's members

Each check raises ValueError naming the flag, what is wrong and what would work; the CLI prints it in one
line and exits 2, so a folder that cannot be written or a GPU that is not there never costs a
traceback after the data loaded or a cell trained. torch is imported only to look at a GPU.
"""

from __future__ import annotations

import argparse
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


def parser(description: str = "") -> argparse.ArgumentParser:
    """`bench`'s parser: one subcommand per command, each with its flags (`description`: the CLI's help text)."""
    p = argparse.ArgumentParser(prog="bench", description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("validate", "check a suite without running it"),
                       ("run", "train every cell not yet finished, then write the report"),
                       ("run-cell", "run one cell of a suite in this process (the entry point of every executor)"),
                       ("status", "done / running / failed / left per cell, from the results store"),
                       ("report", "write reports/<suite>.md from the results store"),
                       ("perf", "measure training throughput of each distinct cell (no store, no report)")):
        s = sub.add_parser(name, help=text)
        s.add_argument("suite", help="suite name in suites/ or path to a YAML file")
        if name == "run-cell":
            s.add_argument("cell", help="the cell's name, as `bench validate SUITE` lists it")
        s.add_argument("--results", default="results", help="results store root (default: results)")
        if name not in ("run-cell", "status"):
            s.add_argument("--reports", default="reports", help="reports root (default: reports)")
        if name in ("run", "perf", "run-cell"):
            s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        if name in ("run", "perf"):
            s.add_argument("--strategies", help="comma-separated strategy ids: run only their cells")
        if name == "validate":
            s.add_argument("--explain", action="store_true",
                           help="print every resolved train setting of every entry, marking defaults")
        if name == "perf":
            s.add_argument("--epochs", type=int, default=3, help="epochs per cell (first is warm-up)")
            s.add_argument("--weightings", help="comma-separated weighting methods, or all: also run each "
                                                "jointly trained multi-task cell with each (and equal)")
        if name in ("run", "run-cell"):
            s.add_argument("--force", action="store_true", help="rerun cells that are already finished")
            s.add_argument("--threads", type=int, help="torch threads per cell run (default: inline torch's own, "
                           "local cpus/workers, slurm --cpus-per-task); CPU results match across runs at equal threads")
        if name == "run":
            s.add_argument("--no-report", action="store_true", help="skip writing the report")
            s.add_argument("--mlflow", metavar="URI", help="also log to MLflow: a tracking URI or a folder "
                           "(a sqlite store in it); overrides the suite's tracking.mlflow")
            s.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard event files under DIR; "
                           "overrides the suite's tracking.tensorboard")
            _executor_arguments(s)
    return p


def _executor_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--executor", default="inline", help="where cells run: inline (this process, the default) | "
                   "local (--workers processes) | slurm (job arrays through submitit)")
    g = s.add_argument_group("--executor local")
    g.add_argument("--workers", type=int, help="worker processes (default 1)")
    g.add_argument("--gpus", help="comma-separated GPU indices; worker i uses gpus[i %% len(gpus)], e.g. 0,0,1,1")
    g = s.add_argument_group("--executor slurm (default: the suite's slurm: block, then bench/config.py's SlurmConfig)")
    g.add_argument("--partition", help="partition (default: the cluster's default)")
    g.add_argument("--time-min", type=int, help="time limit per cell, minutes")
    g.add_argument("--gpus-per-task", type=int, help="GPUs per cell")
    g.add_argument("--cpus-per-task", type=int, help="CPUs per cell (also its torch threads)")
    g.add_argument("--mem-gb", type=float, help="host memory per cell, GB")
    g.add_argument("--array-parallelism", type=int, help="array tasks running at once")
