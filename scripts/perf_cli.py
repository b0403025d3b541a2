"""Benchmark of the harness where it is not training: the commands a user waits on, in fresh interpreters.

    make perf-cli                     # or: python scripts/perf_cli.py [--repeat 3] [--tests]

Each line is the median wall time over --repeat fresh interpreters, and which heavy packages the
command imported (`bench validate` should import no torch; a run of a small cell neither torchvision
nor scipy.stats before its report). `--tests` also times the whole test suite once (`pytest -q`).
Goals (issue 12, on 2 cores): validate without torch, `make test` within 60 s; the report's
own goal (3 s for cifar_mtl) is issue 8's. A benchmark, not a test: the numbers depend on the machine
and its load, printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "scipy.stats", "matplotlib", "pandas", "mlflow")
TINY_SUITE = """name: perf_cli
datasets:
  synthetic: {val_size: 16, options: {n_train: 64, n_test: 32, image_size: 8}}
backbone: {name: convnet, widths: [8], hidden: 8}
strategies: [hard_share]
seeds: [0]
train: {epochs: 1, batch_size: 16, optimizer: adam, lr: 0.001}
"""
# Runs the CLI in-process, then prints which heavy modules it imported (as JSON on the last line).
PROBE = ("import json, sys; from bench import cli; code = cli.main(sys.argv[1:]); "
         "print(json.dumps({'code': code, 'imported': [m for m in %r if m in sys.modules]}))" % (HEAVY,))


def timed(args: list[str], repeat: int, env: dict[str, str]) -> tuple[float, dict]:
    """Median wall seconds of `python -c PROBE args...` over `repeat` runs, and the last run's report."""
    walls, report = [], {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if out.returncode != 0 and not out.stdout.strip():
            raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr}")
        report = json.loads(out.stdout.strip().splitlines()[-1])
    return statistics.median(walls), report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="fresh interpreters per command (median)")
    parser.add_argument("--tests", action="store_true", help="also time the test suite once")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {load:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "perf_cli.yaml"
        suite.write_text(TINY_SUITE)
        env = {**os.environ, "BENCH_CACHE_DIR": str(Path(tmp) / "cache"), "COLUMNS": "120"}
        roots = ["--results", str(Path(tmp) / "results"), "--reports", str(Path(tmp) / "reports")]
        commands = {
            "bench validate cifar_mtl": ["validate", "suites/cifar_mtl.yaml"],
            "bench validate smoke": ["validate", "suites/smoke.yaml"],
            "bench run, one small cell, no report": ["run", str(suite), "--force", "--no-report", "--device", "cpu",
                                                     *roots],
            "bench run, one small cell, with report": ["run", str(suite), "--force", "--device", "cpu", *roots],
        }
        rows = []
        for label, command in commands.items():
            seconds, report = timed(command, args.repeat, env)
            rows.append((label, f"{seconds:.2f} s", ", ".join(report["imported"]) or "none", str(report["code"])))
        if args.tests:
            t0 = time.perf_counter()
            code = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=REPO).returncode
            rows.append(("pytest -q (the whole suite, once)", f"{time.perf_counter() - t0:.1f} s", "-", str(code)))
    width = max(len(r[0]) for r in rows)
    print(f"{'command':<{width}}  {'median wall':>11}  exit  heavy packages imported")
    for label, seconds, imported, code in rows:
        print(f"{label:<{width}}  {seconds:>11}  {code:>4}  {imported}")
    end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {end:.1f} at the end")


if __name__ == "__main__":
    main()
