"""Throughput benchmark: steady-state training images/s of each distinct cell of a suite.

    python -m bench perf cifar_mtl --epochs 3      # or: make perf SUITE=cifar_mtl

Trains the first seed of every (dataset, strategy, task subset) for a few epochs into a scratch
store and reports the median images/s over epochs after the first (which pays for cuDNN's
autotuning), plus peak GPU memory. Speed targets are checked here, never in tests.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile

import torch
from rich.console import Console
from tabulate import tabulate

from bench.grid import Cell
from bench.executors import run_cells
from bench.train_cell import pick_device
from bench.store import Store


def perf(cells: list[Cell], epochs: int, device_name: str = "auto") -> list[dict]:
    device = pick_device(device_name)
    first = {}
    for c in (c for c in cells if not c.members):  # combined cells (ensembles) train nothing
        first.setdefault((c.dataset.name, c.strategy.id, c.tasks), c)
    picked = [dataclasses.replace(c, train=dataclasses.replace(c.train, epochs=epochs)) for c in first.values()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp, "perf")
        run_cells(picked, store, device, force=True, console=Console(stderr=True, quiet=True))
        for c in picked:
            r, h = store.record(c.name), store.history(c.name)
            steady = h.images_per_second.iloc[1:] if h is not None and len(h) > 1 else None
            rows.append({
                "cell": c.name, "status": r.status,
                "img/s (steady)": f"{statistics.median(steady):,.0f}" if steady is not None else "-",
                "img/s (all epochs)": f"{r.images_per_second or 0:,.0f}",
                "peak MiB": f"{r.peak_memory_mb:,.0f}" if r.peak_memory_mb else "-",
            })
    device_text = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {device_text}, torch {torch.__version__}, {epochs} epochs per cell")
    print(tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True))
    return rows
