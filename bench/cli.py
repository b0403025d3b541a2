"""Command line: `bench validate SUITE`, `bench run SUITE`, `bench report SUITE`.

    python -m bench run cifar_mtl            # train every cell not yet in results/, then report
    python -m bench run smoke --force        # rerun every cell
    python -m bench report cifar_mtl         # rebuild reports/cifar_mtl.md from results/ only
    python -m bench validate cifar_mtl --explain   # every resolved train setting, defaults marked

SUITE is a name in suites/ or a path to a YAML file. A malformed suite exits with status 2 before
any training; `run` exits 1 if any cell failed or diverged. `report` also works when the suite file
is gone: it reads results/<SUITE>/ alone and judges staleness from the code.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bench.config import SuiteError, load_suite, resolve_suite_path


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    path = resolve_suite_path(args.suite)
    if args.command == "report" and not path.exists():
        return _report_from_store(path, args, console)
    try:
        suite = load_suite(path)
        from bench.grid import expand

        grid = expand(suite)
        cells = select(grid, getattr(args, "strategies", None), suite)
    except SuiteError as err:
        # escape: messages quote types like dict[str, float], which rich would take for markup
        console.print(f"[red]invalid suite[/red]: {escape(str(err))}", highlight=False)
        return 2
    if args.command == "validate":
        console.print(f"{suite.path}: ok, {len(cells)} cells")
        for cell in cells:
            print(cell.name)
        if args.explain:
            from bench.explain import explain

            print("\n" + explain(suite))
        return 0
    if args.command == "run":
        return _run(suite, grid, cells, args, console)
    if args.command == "perf":
        from bench.perf import perf

        weightings = args.weightings.split(",") if args.weightings else None
        try:
            rows = perf(cells, args.epochs, args.device, weightings)
        except SuiteError as err:
            console.print(f"[red]invalid arguments[/red]: {escape(str(err))}", highlight=False)
            return 2
        return 1 if any(r["status"] != "done" for r in rows) else 0
    return _report(suite, grid, args, console)


def select(cells: list, ids: str | None, suite) -> list:
    """Keep the cells of the comma-separated strategy ids (all when None); unknown ids are errors."""
    if not ids:
        return cells
    wanted, valid = set(ids.split(",")), [s.id for s in suite.strategies]
    unknown = wanted - set(valid)
    if unknown:
        raise SuiteError(f"--strategies: unknown {sorted(unknown)}; valid: {', '.join(valid)}")
    return [c for c in cells if c.strategy.id in wanted]


def _run(suite, grid: list, cells: list, args, console: Console) -> int:
    from bench.grid import manifest
    from bench.runner import run_cells
    from bench.train_cell import pick_device
    from bench.store import Store

    device = pick_device(args.device)
    console.print(f"suite {suite.name}: {len(cells)} cells on {device}")
    store = Store(args.results, suite.name)
    store.write_manifest(manifest(suite, grid))  # the report reads the suite from here
    summary = run_cells(cells, store, device, force=args.force, console=console)
    console.print(f"done {len(summary.done)}, cached {len(summary.cached)}, failed {len(summary.failed)} "
                  f"in {summary.wall_seconds:.1f} s")
    if not args.no_report:
        _report(suite, grid, args, console, run_seconds=summary.wall_seconds)
    for name in summary.failed:
        console.print(f"[red]failed[/red]: {name} (see {_log_path(store, name)})", highlight=False)
    return 1 if summary.failed else 0


def _log_path(store, cell: str) -> Path:
    """The failed attempt's log: beside the earlier result when that was kept."""
    from bench.store import FAILED_LOG, LOG

    kept = store.cell_dir(cell) / FAILED_LOG
    return kept if kept.exists() else store.cell_dir(cell) / LOG


def _report(suite, grid: list, args, console: Console, run_seconds: float | None = None) -> int:
    """The report of the store, with staleness against the suite's cells now (its file exists)."""
    from bench.grid import manifest
    from bench.report import write_report

    path = write_report(Path(args.results), suite.name, Path(args.reports), current_keys={c.name: c.key for c in grid},
                        manifest=manifest(suite, grid), run_seconds=run_seconds, command=_command(args))
    console.print(f"report: {path}")
    return 0


def _report_from_store(suite_path: Path, args, console: Console) -> int:
    """`bench report` without a suite file: the store alone, staleness judged from the code."""
    from bench.report import write_report

    name, results = suite_path.stem, Path(args.results)
    if not (results / name).is_dir():
        console.print(f"[red]nothing to report[/red]: no suite file {suite_path} and no results in {results / name}",
                      highlight=False)
        return 2
    console.print(f"no suite file {suite_path}: reporting {results / name} from the store alone", highlight=False)
    path = write_report(results, name, Path(args.reports), command=f"python -m bench run {shlex.quote(args.suite)}")
    console.print(f"report: {path}")
    return 0


def _command(args) -> str:
    only = f" --strategies {shlex.quote(args.strategies)}" if getattr(args, "strategies", None) else ""
    return "python -m bench run " + shlex.quote(args.suite) + only


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("validate", "check a suite without running it"),
                       ("run", "train every cell not yet finished, then write the report"),
                       ("report", "write reports/<suite>.md from the results store"),
                       ("perf", "measure training throughput of each distinct cell (no store, no report)")):
        s = sub.add_parser(name, help=text)
        s.add_argument("suite", help="suite name in suites/ or path to a YAML file")
        s.add_argument("--results", default="results", help="results store root (default: results)")
        s.add_argument("--reports", default="reports", help="reports root (default: reports)")
        if name in ("run", "perf"):
            s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
            s.add_argument("--strategies", help="comma-separated strategy ids: run only their cells")
        if name == "validate":
            s.add_argument("--explain", action="store_true",
                           help="print every resolved train setting of every entry, marking defaults")
        if name == "perf":
            s.add_argument("--epochs", type=int, default=3, help="epochs per cell (first is warm-up)")
            s.add_argument("--weightings", help="comma-separated weighting methods, or all: also run each "
                                                "jointly trained multi-task cell with each (and equal)")
        if name == "run":
            s.add_argument("--force", action="store_true", help="rerun cells that are already finished")
            s.add_argument("--no-report", action="store_true", help="skip writing the report")
    return p


if __name__ == "__main__":
    sys.exit(main())
