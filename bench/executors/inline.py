"""`--executor inline` (the default): the cells run one after another in this process.

Each dataset is loaded once per run and kept on the device (bench/runner.py: DataCache), and each
cell runs under its lock like everywhere else, so an inline run and a pool or SLURM array can share
one results folder.
"""

from __future__ import annotations

from typing import Iterator

import torch

from bench.executors.job import RunContext
from bench.grid import Cell
from bench.runner import DataCache, OnEvent, Outcome, execute_cell
from bench.train_cell import pick_device


class Inline:
    """The cells in this process, one after another, sharing one DataCache across the run's waves."""

    name = "inline"

    def __init__(self) -> None:
        self._data: DataCache | None = None

    def __enter__(self) -> "Inline":
        return self

    def __exit__(self, *exc) -> None:
        self._data = None

    def run(self, cells: list[Cell], ctx: RunContext, on_event: OnEvent) -> Iterator[Outcome]:
        if ctx.threads:
            torch.set_num_threads(ctx.threads)
        if self._data is None:
            self._data = DataCache(pick_device(ctx.device))
        for cell in cells:
            yield execute_cell(cell, ctx.store, self._data.device, self._data, force=ctx.force, on_event=on_event)
