"""Throughput benchmark: steady-state training images/s of each distinct cell of a suite.

    python -m bench perf cifar_mtl --epochs 3      # or: make perf SUITE=cifar_mtl
    python -m bench perf cifar_mtl --weightings all              # every weighting method, side by side
    make perf SUITE=weighting_freq3 ARGS="--weightings pcgrad,upgrad --strategies equal"

Trains the first seed of every (dataset, strategy, task subset) for a few epochs into a scratch
store and reports the median images/s over epochs after the first (which pays for cuDNN's
autotuning), plus peak GPU memory. `--weightings` also runs each multi-task cell that trains its
tasks jointly with each listed method (and with `equal`). Every row's `x equal` is its images/s over
that of the same dataset, strategy, backbone and tasks with equal weights (the first such row).
Speed targets are checked here, never in tests.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile

import torch
from rich.console import Console
from tabulate import tabulate

from bench.settings import PluginConfig, SuiteError
from bench.grid import Cell
from bench.executors import run_cells
from bench.store import Store
from bench.strategies import STRATEGIES
from bench.train_cell import pick_device
from bench.weighting import WEIGHTINGS, build


def perf(cells: list[Cell], epochs: int, device_name: str = "auto", weightings: list[str] | None = None) -> list[dict]:
    """One row per measured cell; `weightings`: method names (or ["all"]) to cross the joint cells with."""
    device = pick_device(device_name)
    first = {}
    for c in (c for c in cells if not c.members):  # combined cells (ensembles) train nothing
        first.setdefault((c.dataset.name, c.strategy.id, c.tasks), c)
    picked = [dataclasses.replace(c, train=dataclasses.replace(c.train, epochs=epochs)) for c in first.values()]
    picked = with_weightings(picked, weightings) if weightings else picked
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp, "perf")
        run_cells(picked, store, device, force=True, console=Console(stderr=True, quiet=True))
        for c in picked:
            r, h = store.record(c.name), store.history(c.name)
            steady = statistics.median(h.images_per_second.iloc[1:]) if h is not None and len(h) > 1 else None
            rows.append({
                "cell": c.name, "method": c.strategy.weighting.name, "status": r.status,
                "img/s (steady)": f"{steady:,.0f}" if steady is not None else "-",
                "img/s (all epochs)": f"{r.images_per_second or 0:,.0f}",
                "peak MiB": f"{r.peak_memory_mb:,.0f}" if r.peak_memory_mb else "-",
                "_speed": steady, "_group": (c.dataset.name, c.strategy.name, repr(c.backbone), c.tasks),
            })
    _ratios(rows)
    device_text = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {device_text}, torch {torch.__version__}, {epochs} epochs per cell")
    print(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
    return rows


def with_weightings(cells: list[Cell], names: list[str]) -> list[Cell]:
    """Each cell, then each multi-task cell that trains its tasks jointly once per method in `names`
    (`equal` first); SuiteError for an unknown name, listing the valid ones."""
    names = WEIGHTINGS.names() if names == ["all"] else names
    unknown = sorted(set(names) - set(WEIGHTINGS.names()))
    if unknown:
        raise SuiteError(f"--weightings: unknown {unknown}; valid: all, {', '.join(WEIGHTINGS.names())}")
    out = []
    for c in cells:
        out.append(c)
        if STRATEGIES.get(c.strategy.name).weighs_tasks and len(c.tasks) > 1:
            for name in dict.fromkeys(["equal", *names]):
                if (name != c.strategy.weighting.name or c.strategy.weighting.params) and _fits(name, c):
                    # an entry named by its own id alone (grid.Cell.name) gets the method in it
                    sid = c.strategy.id if c.strategy.id == c.strategy.name else f"{c.strategy.id}+{name}"
                    out.append(dataclasses.replace(c, strategy=dataclasses.replace(
                        c.strategy, id=sid, weighting=PluginConfig(name=name))))
    return out


def _fits(name: str, cell: Cell) -> bool:
    """Whether method `name` with its defaults can run on the cell's task count (Krum needs 3)."""
    try:
        build(name, {}, torch.ones(len(cell.tasks)))
    except ValueError as err:
        print(f"{cell.name}: {name} left out ({err})")
        return False
    return True


def _ratios(rows: list[dict]) -> None:
    """`x equal` per row against the first equal-weighting row of its group; drops the helper keys."""
    reference = {}
    for r in rows:
        if r["method"] == "equal" and r["_speed"]:
            reference.setdefault(r["_group"], r["_speed"])
    for r in rows:
        ref, speed = reference.get(r.pop("_group")), r.pop("_speed")
        r["x equal"] = f"{speed / ref:.2f}" if ref and speed else "-"
