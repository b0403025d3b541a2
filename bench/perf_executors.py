"""Wall time of the local worker pool against inline runs, side by side (a benchmark, not a test).

    python -m bench.perf_executors smoke smoke_freq3 smoke_shapes --workers 2      # or: make perf-pool

Each suite is run end to end (`bench run --no-report --device cpu`: start-up, data, training) in a
fresh process into a scratch store, three ways, one after another: inline with torch's default
threads (what `make bench` does), inline with T = cpus // N threads (`--threads T`), and
`--executor local --workers N` (each worker T threads). Prints the wall seconds, the ratio of the
pool to each inline run (below 1: the pool is faster), whether the pool stored the same metrics
and predictions as the inline run with as many threads (CPU numerics depend on the thread count),
and the load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

from bench.config import load_suite, resolve_suite_path
from bench.executors.local import threads_per_worker
from bench.store import Store

WAYS = ("inline", "inline, T threads", "pool")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.perf_executors", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suites", nargs="+", help="suite names or YAML paths")
    p.add_argument("--workers", type=int, default=2, help="pool workers (default 2)")
    args = p.parse_args(argv)
    load = os.getloadavg()
    rows = [measure(suite, args.workers) for suite in args.suites]
    print(f"{os.cpu_count()} CPUs, {args.workers} workers of T = {threads_per_worker(args.workers)} torch threads; "
          "load average (1, 5, 15 min) before "
          f"{_load(load)}, after {_load(os.getloadavg())}")
    print(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
    return 0 if all(r["same results"] == "yes" for r in rows) else 1


def measure(suite: str, workers: int) -> dict:
    """One row: the suite's wall seconds three ways, the pool's ratios and whether its results match."""
    path = resolve_suite_path(suite)
    name = load_suite(path).name
    threads = str(threads_per_worker(workers))
    extra = {"inline": [], "inline, T threads": ["--threads", threads],
             "pool": ["--executor", "local", "--workers", str(workers)]}
    with tempfile.TemporaryDirectory() as tmp:
        seconds, failed = {}, []
        for label in WAYS:
            seconds[label], error = _run(path, Path(tmp) / label, extra[label])
            if error:
                failed.append(f"{label}: {error}")
        stores = {label: Store(Path(tmp) / label, name) for label in WAYS}
        same = "no: " + "; ".join(failed) if failed else \
            ("yes" if _same(stores["inline, T threads"], stores["pool"]) else "no")
        cells = len(stores["inline"].cells())
    pool = seconds["pool"]
    return {"suite": name, "cells": str(cells), **{f"{k} s": f"{v:.1f}" for k, v in seconds.items()},
            "pool / inline": f"{pool / seconds['inline']:.2f}",
            "pool / inline, T threads": f"{pool / seconds['inline, T threads']:.2f}", "same results": same}


def _run(path: Path, results: Path, extra: list[str]) -> tuple[float, str]:
    command = [sys.executable, "-m", "bench", "run", str(path), "--results", str(results), "--no-report",
               "--device", "cpu", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = done.stderr.strip().splitlines()
    return wall, "" if done.returncode == 0 else f"exit {done.returncode}: {lines[-1] if lines else ''}"


def _same(a: Store, b: Store) -> bool:
    """Same cells, each with the same status, test metrics and stored predictions."""
    if a.cells() != b.cells():
        return False
    for cell in a.cells():
        ra, rb = a.record(cell), b.record(cell)
        pa, pb = a.predictions(cell) or {}, b.predictions(cell) or {}
        if (ra.status, ra.test) != (rb.status, rb.test) or pa.keys() != pb.keys() \
                or not all(np.array_equal(pa[k], pb[k]) for k in pa):
            return False
    return True


def _load(avg: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.1f}" for x in avg)


if __name__ == "__main__":
    sys.exit(main())
