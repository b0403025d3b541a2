"""Benchmark `bench report SUITE` end to end, as a user runs it: a fresh interpreter per run.

    python scripts/perf_report.py cifar_mtl --runs 3        # or: make perf-report SUITE=cifar_mtl

Copies results/SUITE to a scratch folder (the report writes results.csv, and suite.json when the
store's manifest is missing or out of date, into the store), runs the report once to settle that,
then times RUNS more, each in a new Python process, and prints their wall times, whether torch was
imported (it must not be, for an unchanged suite), and the load average, since the machine may be
shared. Speed goals are checked here, never in tests (issue 12: `bench report cifar_mtl` within 3 s).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = ("import sys; from bench.cli import main; code = main(sys.argv[1:]); "
       "print('torch imported:', 'torch' in sys.modules); sys.exit(code)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", help="a suite name with a store under results/")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--results", default=str(REPO / "results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="perf_report_") as tmp:
        shutil.copytree(Path(args.results) / args.suite, Path(tmp) / "results" / args.suite)
        command = [sys.executable, "-c", RUN, "report", args.suite, "--results", f"{tmp}/results",
                   "--reports", f"{tmp}/reports"]
        seconds, cpu, torch = _run(command)
        print(f"first run (may parse the suite and record its manifest): {seconds:.2f} s wall, {cpu:.2f} s CPU, {torch}")
        times, cpus = [], []
        for i in range(args.runs):
            seconds, cpu, torch = _run(command)
            times.append(seconds)
            cpus.append(cpu)
            print(f"run {i + 1}: {seconds:.2f} s wall, {cpu:.2f} s CPU, {torch}")
    print(f"median {statistics.median(times):.2f} s wall, {statistics.median(cpus):.2f} s CPU over {len(times)} "
          f"runs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores "
          "(on a busy machine wall time exceeds CPU time by the share others take)")
    return 0


def _run(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system) and the torch line of one report."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if out.returncode != 0:
        sys.exit(f"bench report failed ({out.returncode}):\n{out.stderr}")
    return seconds, cpu, next(line for line in out.stdout.splitlines() if line.startswith("torch imported"))


if __name__ == "__main__":
    sys.exit(main())
