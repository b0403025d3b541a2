"""Command line: `bench validate SUITE`, `bench run SUITE`, `bench report SUITE`.

    python -m bench run cifar_mtl            # train every cell not yet in results/, then report
    python -m bench run smoke --force        # rerun every cell
    python -m bench report cifar_mtl         # rebuild reports/cifar_mtl.md from results/ only

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
    if args.command == "report" and path.is_file() and (code := _report_from_manifest(path, args, console)) is not None:
        return code
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
        return 0
    if args.command == "run":
        return _run(suite, grid, cells, args, console)
    if args.command == "perf":
        from bench.perf import perf

        rows = perf(cells, args.epochs, args.device)
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
    """The report of the store, with staleness against the suite's cells now (its file exists).

    `bench report` also records the suite's manifest in an existing store whose manifest is missing
    or was written from another version of the suite file or harness, as `bench run` does, so that
    the next report can take `_report_from_manifest`'s path.
    """
    from bench.grid import manifest
    from bench.report import write_report
    from bench.store import Store

    now = manifest(suite, grid)
    store = Store(args.results, suite.name)
    if args.command == "report" and store.dir.is_dir() and _stored_fingerprint(store) not in (now.fingerprint, DAMAGED):
        store.write_manifest(now)
    path = write_report(Path(args.results), suite.name, Path(args.reports), current_keys=dict(now.keys),
                        manifest=now, run_seconds=run_seconds, command=_command(args))
    console.print(f"report: {path}")
    return 0


DAMAGED = "damaged"  # a manifest the report names as damaged; `bench run` rewrites it


def _stored_fingerprint(store) -> str | None:
    """The fingerprint of the store's manifest ("" for one written without), None when it has none."""
    from bench.record import RecordError

    try:
        stored = store.manifest()
    except RecordError:
        return DAMAGED
    return stored.fingerprint if stored else None


def _report_from_manifest(suite_path: Path, args, console: Console) -> int | None:
    """`bench report` without parsing the suite (which imports the training side, torch), when the
    store's manifest was written from this very suite file and harness (`record.suite_fingerprint`):
    then the keys it lists are the suite's keys now. None when that cannot be told: the caller parses."""
    import yaml

    from bench.record import suite_fingerprint
    from bench.store import Store

    try:
        raw = yaml.safe_load(suite_path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # the full path reports it
    name = str(raw.get("name", suite_path.stem)) if isinstance(raw, dict) else suite_path.stem
    store = Store(args.results, name)
    if _stored_fingerprint(store) != suite_fingerprint(suite_path):
        return None
    from bench.report import write_report

    path = write_report(Path(args.results), name, Path(args.reports), current_keys=dict(store.manifest().keys),
                        command=_command(args))
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
        if name == "perf":
            s.add_argument("--epochs", type=int, default=3, help="epochs per cell (first is warm-up)")
        if name == "run":
            s.add_argument("--force", action="store_true", help="rerun cells that are already finished")
            s.add_argument("--no-report", action="store_true", help="skip writing the report")
    return p


if __name__ == "__main__":
    sys.exit(main())
