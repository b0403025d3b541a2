"""Before any training: the checks that need the data, and on a CPU an estimate of the run's time.

    plan = preflight(cells, store, device, console)      # bench/cli.py, before run_cells

1. The cells that will train: those without a finished result of the same key (all with --force).
2. Their datasets, each loaded once (the run reuses them, `plan.datasets`). A size setting that does
   not fit its pool (`val_size`, `subset`, `test_subset`) raises SizeError naming its key path, which
   the CLI reports as a suite error (exit 2) before any cell trains. A dataset that cannot be loaded
   (its files are missing) is reported here, once, with the reason; its cells then fail with a
   one-line pointer to it instead of the same message again.
3. On a CPU, a short run (under SHORT_RUN images in all) gets one torch thread per operation unless
   `--threads` says otherwise: its small operations run several times faster so. A longer run gets
   an estimate: a few training steps of the first model are timed (`probe`) and every cell
   extrapolated from them (its epochs, steps and images); a run estimated longer than LONG_RUN also
   prints the command of a suite sized for a CPU. Other models cost more or less per step
   (cross-stitch runs a column per task): the estimates feed the progress bars
   (bench/executors/progress.py), which scale them by how the finished cells compared. Only one
   model is timed, so that the warning comes within seconds even for a suite sized for a GPU. A GPU
   run is not timed ahead: its suites are sized for it. A CPU busier than it has cores gets a hint
   to use one thread per operation.

Probing trains a throw-away model on the real data; each cell seeds itself when it starts, so no
stored number depends on whether a probe ran.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import torch
from rich.console import Console

from bench.data import SizeError, TaskSet
from bench.grid import Cell
from bench.executors.progress import duration
from bench.record import RecordError
from bench.runner import DataCache, epochs, failure_reason
from bench.store import Store

PROBE_STEPS = 2  # training steps timed per model, after as many to warm up
SHORT_RUN = 20_000  # images a run passes through its models (all epochs and evaluations) below which it is not timed
PROBE_EVAL = 256  # validation images predicted to time evaluation
LONG_RUN = 600.0  # s: a CPU run estimated longer warns, with the command of a CPU-sized suite
CPU_COMMAND = "make bench SUITE=smoke"  # the CPU-sized check of the whole pipeline (about 30 s on 2 cores)

__all__ = ["Plan", "SizeError", "Timing", "describe_device", "preflight", "probe"]


@dataclass
class Plan:
    to_train: list[Cell]  # cells that will run (trained or combined)
    datasets: DataCache  # their data, loaded once (load errors kept)
    estimates: dict[str, float] = field(default_factory=dict)  # cell -> seconds (CPU only)
    threads: int | None = None  # the torch threads chosen for a short CPU run (1), when none were asked


@dataclass(frozen=True)
class Timing:
    """One model's measured costs on this machine."""

    step: float  # s per training step of its batch size
    item: float  # s per evaluated image


def preflight(cells: list[Cell], store: Store, device: torch.device, console: Console, *,
              force: bool = False, estimate: bool = True, threads: int | None = None) -> Plan:
    """The plan of a run; SizeError (a suite error) when a size setting does not fit its data.
    `estimate`: time the run on a CPU (an inline run: a pool's workers share the cores); `threads`:
    the torch threads asked for (None: a short CPU run gets one, a long one torch's default)."""
    plan = Plan(to_train=[c for c in cells if force or not _finished(store, c)], datasets=DataCache(device))
    _load(plan, console)
    trained = [c for c in plan.to_train if not c.members and _data(plan, c) is not None]
    if not (estimate and device.type == "cpu" and trained):
        return plan
    if sum(images(c, _data(plan, c)) for c in trained) < SHORT_RUN:
        if threads is None:  # measured: the smoke suite's cells 42 s with 2 threads, 6 s with 1 (load 3, 2 cores)
            plan.threads = 1
            torch.set_num_threads(1)
            console.print("a short run: one thread per operation (its small operations gain nothing from more; "
                          "--threads N to choose)", highlight=False)
        return plan  # seconds on any CPU for the models this harness has: not worth timing
    _busy_hint(console)
    plan.estimates = _estimate(plan, trained, device, console)
    return plan


def check_numerics(cells: list[Cell], device_type: str) -> None:
    """ValueError (before training) for a setting that cannot run with the numerics its cells get on
    `device_type` ("cpu" or "cuda", where the cells will train): the gradient-cosine probe
    (`train.grad_cosine_every`) under autocast. Its batched Jacobian (torchjd's `jac` under
    torch.vmap) fails there: seen on an NVIDIA H200 with torch 2.11 and bf16, every cell of
    smoke_weighting_cifar failed with "Expected grad_output to have type BFloat16 but got Float"."""
    import torch

    from bench.precision import numerics

    bad = sorted({c.strategy.id for c in cells if not c.members and c.train.grad_cosine_every > 0
                  and numerics(c.train.precision, c.train.deterministic, torch.device(device_type)).precision != "fp32"})
    if bad:
        raise ValueError(f"train.grad_cosine_every needs precision fp32 on {device_type} (its gradient-cosine probe "
                         "fails under autocast); entries " + ", ".join(bad) + ": set train.precision: fp32 for "
                         "them, or train.grad_cosine_every: 0")


def _busy_hint(console: Console) -> None:
    """On a CPU busier than it has cores, one thread per operation is several times faster for small
    models (measured: the smoke suite's cells 63 s with 2 threads, 10 s with 1, at load 7 on 2 cores)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if torch.get_num_threads() > 1 and load >= (os.cpu_count() or 1):
        console.print(f"this CPU is busy (load average {load:.1f} on {os.cpu_count()} cores): --threads 1 trains small "
                      "models several times faster here", highlight=False)


def describe_device(device: torch.device) -> str:
    """`cuda:0 (NVIDIA H100 80GB HBM3)` or `cpu (2 threads; no CUDA GPU found)`: which device, and why."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    why = "no CUDA GPU found" if not torch.cuda.is_available() else "chosen with --device"
    return f"cpu ({torch.get_num_threads()} threads; {why})"


def _finished(store: Store, cell: Cell) -> bool:
    try:
        return store.is_done(cell.name, cell.key)
    except RecordError:  # damaged: the run names it and trains the cell again
        return False


def _load(plan: Plan, console: Console) -> None:
    """Load each dataset of the cells to train; a size error raises, any other is reported once."""
    by_dataset: dict[str, list[Cell]] = {}
    for c in plan.to_train:
        if not c.members:
            by_dataset.setdefault(json.dumps(dataclasses.asdict(c.dataset), sort_keys=True, default=list), []).append(c)
    for group in by_dataset.values():
        try:
            plan.datasets.get(group[0].dataset)
        except SizeError:
            raise
        except Exception as err:  # noqa: BLE001  (any loader error: its cells fail with it)
            reason = failure_reason(err)
            console.print(f"dataset {group[0].dataset.name}: cannot be loaded, so its {len(group)} cells will "
                          f"fail: {reason}", markup=False, highlight=False)
            plan.datasets.reported[reason] = f"dataset {group[0].dataset.name} above"


def _estimate(plan: Plan, cells: list[Cell], device: torch.device, console: Console) -> dict[str, float]:
    """Seconds per cell to train, from the timed steps of the first model that trains (the models of
    a failing build are skipped: those cells fail on their own), printed with a warning when long."""
    models = {_model_signature(c): c for c in reversed(cells)}  # the first cell of each model
    timing = next((t for c in cells if models.get(_model_signature(c)) is c
                   and (t := _probe(c, plan, device)) is not None), None)
    if timing is None:
        return {}
    estimates = {c.name: cell_seconds(c, _data(plan, c), timing) for c in cells}
    total = sum(estimates.values())
    load = f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if hasattr(os, "getloadavg") else ""
    console.print(f"estimate on this CPU: about {duration(total)} for {len(cells)} cells to train (from the first "
                  f"model's timed steps, {len(models)} distinct models{load})", highlight=False)
    if total > LONG_RUN:
        console.print(f"[yellow]This run is long on this CPU[/yellow] (a GPU runs it with --device cuda). "
                      f"A CPU-sized check of the whole pipeline: {CPU_COMMAND} (about 30 s on 2 cores). "
                      "Ctrl-C stops this run; finished cells stay in the store.", highlight=False)
    return estimates


def _probe(cell: Cell, plan: Plan, device: torch.device) -> Timing | None:
    try:
        return probe(cell, _data(plan, cell), device)
    except Exception:  # noqa: BLE001  (the cell fails on its own, with its reason, when it runs)
        return None


def _data(plan: Plan, cell: Cell) -> TaskSet | None:
    try:
        return plan.datasets.get(cell.dataset)
    except Exception:  # noqa: BLE001  (reported by _load)
        return None


def _model_signature(cell: Cell) -> str:
    """Cells with the same signature train the same model on the same data at the same batch size."""
    return json.dumps([dataclasses.asdict(cell.dataset), dataclasses.asdict(cell.backbone), cell.strategy.name,
                       cell.strategy.params, len(cell.tasks), cell.train.batch_size], sort_keys=True, default=list)


def images(cell: Cell, data: TaskSet) -> int:
    """Images a cell passes through its model: every epoch's training and validation, then the test set."""
    return epochs(cell) * (len(data.train) + len(data.val)) + len(data.test)


def cell_seconds(cell: Cell, data: TaskSet, timing: Timing) -> float:
    """A cell's training time from its model's timing: epochs of steps plus a validation pass each,
    then the test set once."""
    steps = max(1, len(data.train) // cell.train.batch_size)
    per_epoch = steps * timing.step + len(data.val) * timing.item
    return epochs(cell) * per_epoch + len(data.test) * timing.item


def probe(cell: Cell, data: TaskSet, device: torch.device, steps: int = PROBE_STEPS) -> Timing:
    """Time `steps` training steps of the cell's model on its data and the prediction of PROBE_EVAL
    validation images, through the Trainer: two epochs of that, the first one a warm-up (joint
    training: a sequential strategy's distillation is not timed)."""
    from bench.precision import apply as apply_numerics
    from bench.strategies import STRATEGIES
    from bench.train_cell import backbone_factory
    from bench.trainer import Trainer

    specs = {t: data.specs[t] for t in cell.tasks}
    strategy = STRATEGIES.get(cell.strategy.name)(**cell.strategy.params)
    model = strategy.build(specs, backbone_factory(cell, data, device)).to(device)
    n = min(len(data.train), cell.train.batch_size * steps)
    val = data.val.take(torch.arange(min(len(data.val), PROBE_EVAL), device=data.val.x.device))
    trainer = Trainer(cell.train, device, seed=0)
    apply_numerics(trainer.numerics)  # as the cell will (precision, determinism): part of what is timed
    result = trainer.fit(model, dataclasses.replace(data, val=val), specs,
                         train=data.train.take(torch.arange(n, device=data.train.x.device)), epochs=2)
    measured = result.history[-1]["train_seconds"]  # the second epoch's steps: no warm-up in them
    t0 = time.perf_counter()  # fit has evaluated `val` twice already: warm
    trainer.evaluate(model, data, val, specs)
    evaluated = time.perf_counter() - t0
    return Timing(step=measured / max(1, n // cell.train.batch_size), item=evaluated / max(1, len(val)))
