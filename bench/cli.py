"""Command line: `bench validate|run|report|perf|status SUITE`, `bench run-cell SUITE CELL`.

    python -m bench run cifar_mtl            # train every cell not yet in results/, then report
    python -m bench run smoke --force        # rerun every cell
    python -m bench run smoke --mlflow mlruns --tensorboard tb   # also log to MLflow and TensorBoard
    python -m bench run cifar_mtl --executor local --workers 4 --gpus 0      # four worker processes
    python -m bench run cifar_mtl --executor slurm --partition gpu --gpus-per-task 1
    python -m bench status cifar_mtl         # done / running / failed / left per cell
    python -m bench run-cell smoke synthetic__hard_share__seed0              # one cell, this process
    python -m bench report cifar_mtl         # rebuild reports/cifar_mtl.md from results/ only
    python -m bench validate cifar_mtl --explain   # every resolved train setting, defaults marked

SUITE is a name in suites/ or a path to a YAML file. A malformed suite (sizes against the data
included), executor options that cannot work (workers < 1, a GPU that does not exist, no SLURM
controller) or an unusable tracker exit with status 2 before any training; `run` exits 1 if any
cell failed or diverged, after listing the failures and writing the report, and 130 when stopped
by Ctrl-C, after one line saying which cells finished (a rerun trains the rest). `run-cell` exits 0 when the cell
is done or was already, 1 when it failed, 75 when another live run holds it. `report` and `status`
also work when the suite file is gone: they read results/<SUITE>/ alone.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bench.arguments import check_device, check_folder, parser, select
from bench.config import SlurmConfig, SuiteError, load_suite, resolve_suite_path, slurm_config

SLURM_FLAGS = ("partition", "time_min", "gpus_per_task", "cpus_per_task", "mem_gb", "array_parallelism")
INTERRUPTED_EXIT = 130  # 128 + SIGINT: how shells report a command stopped by Ctrl-C
BUSY_EXIT = 75  # run-cell: another live run holds the cell (sysexits' EX_TEMPFAIL: try again later)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__).parse_args(argv)
    console = Console(stderr=True)
    path = resolve_suite_path(args.suite)
    try:
        if args.command == "report":  # run checks its folders after the suite
            check_folder(Path(args.reports), "--reports")
        if args.command == "run-cell":
            check_device(args.device)
    except ValueError as err:
        return _refuse(console, "cannot run", str(err))
    if args.command == "run-cell":
        return _run_one_cell(path, args, console)
    if args.command == "report" and not path.exists():
        return _report_from_store(path, args, console)
    if args.command == "report" and path.is_file() and (code := _report_from_manifest(path, args, console)) is not None:
        return code
    if args.command == "status" and not path.exists():
        return _status(path.stem, None, args, console)
    try:
        suite = load_suite(path)
        from bench.grid import expand

        grid = expand(suite)
        cells = select(grid, getattr(args, "strategies", None), suite)
    except SuiteError as err:
        return _refuse(console, "invalid suite", str(err))
    if args.command == "validate":
        console.print(f"{suite.path}: ok, {len(cells)} cells")
        for cell in cells:
            print(cell.name)
        if args.explain:
            from bench.explain import explain

            print("\n" + explain(suite))
        return 0
    if args.command == "run":
        try:
            return _run(suite, grid, cells, args, console)
        except KeyboardInterrupt:  # outside the cells' run: loading the data, timing the estimate
            _note(console, "interrupted; every finished cell stays in the store, and running the same command "
                           "again continues")
            return INTERRUPTED_EXIT
    if args.command == "status":
        return _status(suite.name, cells, args, console)
    if args.command == "perf":
        from bench.perf import perf

        weightings = args.weightings.split(",") if args.weightings else None
        try:
            check_device(args.device)
            rows = perf(cells, args.epochs, args.device, weightings)
        except ValueError as err:  # SuiteError too
            console.print(f"[red]invalid arguments[/red]: {escape(str(err))}", highlight=False)
            return 2
        return 1 if any(r["status"] != "done" for r in rows) else 0
    _report(suite, grid, args, console)
    return 0


def _refuse(console: Console, what: str, message: str) -> int:
    """Print why nothing runs, in one red-labelled line; exit status 2."""
    # escape: messages quote types like dict[str, float], which rich would take for markup
    console.print(f"[red]{what}[/red]: {escape(message)}", highlight=False)
    return 2


def _note(console: Console, text: str) -> None:
    """One unwrapped line of plain text (paths hold brackets rich would read as markup)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _pool_device(args, kind: str) -> str:
    """Where the cells of a pool or a SLURM array train (`kind`: cpu or cuda), for the run's first line."""
    if args.executor == "slurm":
        return f"{kind} on SLURM nodes (--executor slurm)"
    workers = args.workers or 1
    gpus = f", GPUs {args.gpus}" if args.gpus else ""
    return f"{kind} in {workers} worker process{'es' if workers > 1 else ''}{gpus} (--executor local)"


def _worker_device_type(args, suite) -> str:
    """Where a pool's or a cluster's cells will train: "cuda" when GPUs are given (or `--device` is
    auto and this machine has one, for a pool), else "cpu"."""
    import torch

    if args.device.startswith("cuda") or getattr(args, "gpus", None):
        return "cuda"
    if args.executor == "slurm":
        return "cuda" if _slurm_config(suite, args).gpus_per_task > 0 else "cpu"
    return "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"


def _run(suite, grid: list, cells: list, args, console: Console) -> int:
    """Check, plan, track, run, report: exit 2 before any training for a bad suite, executor or
    tracker, 1 if a cell failed. The failures are listed before the report is written."""
    import torch

    from bench.executors import ExecutorError, make_executor, run_cells
    from bench.grid import manifest
    from bench.preflight import SizeError, check_numerics, describe_device, preflight
    from bench.store import Store
    from bench.tracking import TrackingError, make_tracker
    from bench.train_cell import pick_device

    tracker = make_tracker(suite.tracking, mlflow=args.mlflow, tensorboard=args.tensorboard)
    store = Store(args.results, suite.name)
    try:
        check_device(args.device, here=args.executor != "slurm")  # a SLURM job's GPU is on its node
        for folder, flag in ((args.results, "--results"), (None if args.no_report else args.reports, "--reports")):
            if folder is not None:
                check_folder(Path(folder), flag)
        if args.threads is not None and args.threads < 1:
            raise ExecutorError(f"--threads: {args.threads} is not a number of threads; give 1 or more")
        executor = make_executor(args.executor, workers=args.workers, gpus=args.gpus, device=args.device,
                                 slurm=_slurm_config(suite, args) if args.executor == "slurm" else None)
        inline = args.executor == "inline"
        if inline and args.threads:
            torch.set_num_threads(args.threads)  # before the preflight times any step
        device = pick_device(args.device) if inline else torch.device("cpu")
        kind = device.type if inline else _worker_device_type(args, suite)  # where the cells will train
        where = describe_device(device) if inline else _pool_device(args, kind)
        console.print(f"suite {suite.name}: {len(cells)} cells on {where}", highlight=False)
        check_numerics(cells, kind)
        tracker.check()
        # The data is checked where this machine has it: inline runs keep what the preflight loaded, and a
        # pool's parent checks it on the CPU; a SLURM job loads its own, on the cluster.
        plan = None if args.executor == "slurm" else preflight(cells, store, device, console, force=args.force,
                                                               estimate=inline, threads=args.threads)
    except (ExecutorError, ValueError) as err:  # before any training
        what = ("invalid suite" if isinstance(err, SizeError) else "tracking" if isinstance(err, TrackingError)
                else "cannot run")
        return _refuse(console, what, f"{suite.path}: {err}" if isinstance(err, SizeError) else str(err))
    the_manifest = manifest(suite, grid)
    store.write_manifest(the_manifest)  # the report reads the suite from here
    tracker.start_suite(suite.name, suite.description, the_manifest.to_json())
    report, ended = None, {}  # ended: cell -> its outcome so far, for the line an interrupt prints
    try:
        summary = run_cells(cells, store, args.device, force=args.force, console=console, executor=executor,
                            suite_path=str(Path(suite.path).resolve()), threads=args.threads or (plan and plan.threads),
                            tracker=tracker,
                            datasets=plan.datasets if plan else None,
                            estimates=plan.estimates if plan else None,
                            on_event=lambda e: ended.update({e.cell: e.outcome.status} if e.kind == "end" else {}))
        console.print(f"done {len(summary.done)}, cached {len(summary.cached)}, failed {len(summary.failed)} "
                      f"in {summary.wall_seconds:.1f} s")
        for name in summary.failed:
            console.print(f"[red]failed[/red]: {escape(name)} (see {_log_path(store, name)})", highlight=False)
        if not args.no_report:
            report = _report(suite, grid, args, console, run_seconds=summary.wall_seconds)
    except ExecutorError as err:  # e.g. sbatch refused the array; finished cells stay in the store
        return _refuse(console, "cannot run", str(err))
    except KeyboardInterrupt:  # Ctrl-C, here or in the pool's workers: the cell training is recorded failed
        return _interrupted(console, len(cells), ended)
    finally:
        tracker.end_suite(report, _figures(report))
    return 1 if summary.failed else 0


def _interrupted(console: Console, total: int, ended: dict[str, str]) -> int:
    """One line for a run stopped by Ctrl-C: what finished, and that a rerun trains only the rest."""
    done = [cell for cell, status in ended.items() if status == "done"]
    cached = sum(status == "cached" for status in ended.values())
    _note(console, f"interrupted: {len(done)} cell(s) finished in this run ({', '.join(done) or 'none'}), {cached} "
                   f"were finished before, and a cell cut short is recorded as failed; run the same command again "
                   f"to train the {total - len(done) - cached} left")
    return INTERRUPTED_EXIT


def _slurm_config(suite, args) -> SlurmConfig:
    """The suite's `slurm:` block with the command line's flags winning."""
    import dataclasses

    flags = {k: getattr(args, k) for k in SLURM_FLAGS if getattr(args, k) is not None}
    return slurm_config({**dataclasses.asdict(suite.slurm), **flags}, flags=True)


def _run_one_cell(path: Path, args, console: Console) -> int:
    """`bench run-cell`: one cell of the suite in this process, under its lock, into the store."""
    from bench.executors import CellJob, CellNotFound, run_named_cell
    from bench.executors.progress import epoch_text

    def show(event) -> None:
        if event.kind == "epoch":
            console.print(f"{event.cell}: {epoch_text(event.row)}", markup=False, highlight=False)
        elif event.kind == "note":
            console.print(event.text, markup=False, highlight=False, soft_wrap=True)

    job = CellJob(suite=str(path.resolve()), cell=args.cell, results=str(Path(args.results).resolve()),
                  device=args.device, force=args.force, threads=args.threads)
    try:
        if not path.exists():
            raise SuiteError(f"{path}: no such suite file")
        outcome = run_named_cell(job, on_event=show)
    except (SuiteError, CellNotFound) as err:
        console.print(f"[red]cannot run[/red]: {escape(str(err))}", highlight=False)
        return 2
    console.print(f"{outcome.cell}: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else ""),
                  markup=False, highlight=False)
    return {"done": 0, "cached": 0, "busy": BUSY_EXIT}.get(outcome.status, 1)


def _status(name: str, cells: list | None, args, console: Console) -> int:
    """`bench status`: each cell's state from the store (and the locks), wherever the suite runs."""
    from bench.record import RecordError
    from bench.status import status_rows, status_table
    from bench.store import Store

    store = Store(args.results, name)
    if cells is None:  # the cells come from the manifest, else from the records
        try:
            manifest = store.manifest()
        except RecordError as err:
            manifest = None
            _note(console, f"damaged {err}: the cells come from their records (`bench run` rewrites it)")
        if manifest is None and not store.cells():
            console.print(f"[red]nothing to show[/red]: no suite file and no results in {escape(str(store.dir))}",
                          highlight=False)
            return 2
    rows = status_rows(store, None if cells is None else {c.name: c.key for c in cells})
    print(status_table(rows))
    return 0


def _log_path(store, cell: str) -> Path:
    """The failed attempt's log: beside the earlier result when that was kept."""
    from bench.store import FAILED_LOG, LOG

    kept = store.cell_dir(cell) / FAILED_LOG
    return kept if kept.exists() else store.cell_dir(cell) / LOG


def _report(suite, grid: list, args, console: Console, run_seconds: float | None = None) -> Path:
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
        try:
            store.write_manifest(now)
        except OSError as err:  # a read-only store: the report needs no manifest written
            _note(console, f"{store.dir / 'suite.json'}: not updated ({err.strerror or err})")
    path = write_report(Path(args.results), suite.name, Path(args.reports), current_keys=dict(now.keys),
                        manifest=now, run_seconds=run_seconds, command=_command(args),
                        on_note=lambda text: _note(console, text))
    console.print(f"report: {path}")
    return path


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
    from bench.suite_yaml import read_yaml

    try:
        raw = read_yaml(suite_path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # the full path reports it
    name = str(raw.get("name", suite_path.stem)) if isinstance(raw, dict) else suite_path.stem
    store = Store(args.results, name)
    if _stored_fingerprint(store) != suite_fingerprint(suite_path):
        return None
    from bench.report import write_report

    path = write_report(Path(args.results), name, Path(args.reports), current_keys=dict(store.manifest().keys),
                        command=_command(args), on_note=lambda text: _note(console, text))
    console.print(f"report: {path}")
    return 0


def _figures(report: Path | None) -> list[Path]:
    """The figures a report links to (reports/<suite>/*.png), for the tracker."""
    if report is None:
        return []
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())
    return [report.parent / link for link in links if (report.parent / link).is_file()]


def _report_from_store(suite_path: Path, args, console: Console) -> int:
    """`bench report` without a suite file: the store alone, staleness judged from the code."""
    from bench.report import write_report

    name, results = suite_path.stem, Path(args.results)
    if not (results / name).is_dir():
        console.print(f"[red]nothing to report[/red]: no suite file {suite_path} and no results in {results / name}",
                      highlight=False)
        return 2
    console.print(f"no suite file {suite_path}: reporting {results / name} from the store alone", highlight=False)
    path = write_report(results, name, Path(args.reports), command=f"python -m bench run {shlex.quote(args.suite)}",
                        on_note=lambda text: _note(console, text))
    console.print(f"report: {path}")
    return 0


def _command(args) -> str:
    only = f" --strategies {shlex.quote(args.strategies)}" if getattr(args, "strategies", None) else ""
    return "python -m bench run " + shlex.quote(args.suite) + only


if __name__ == "__main__":
    sys.exit(main())
