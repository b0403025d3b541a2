"""Which cells run, and in what order: the same for every executor.

`plan` splits a suite's cells into those already finished in the store (cached) and waves of cells
left to run: a cell combined from members (an ensemble) goes in a wave after every wave holding
one of its members. `run_cells` recovers the store, then hands each wave to an executor
(bench/executors/: this process, a local worker pool, SLURM) and collects one Outcome per cell.
A cell held by another live run (`busy`: two terminals, or a pool and a SLURM array on one results
folder) is watched until that run lets it go: finished there, it counts as cached; otherwise it
runs here. Progress goes to the screen through events (bench/executors/progress.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import torch
from rich.console import Console

from bench.executors.inline import Inline
from bench.executors.job import RunContext
from bench.executors.progress import Screen
from bench.grid import Cell
from bench.runner import Event, OnEvent, Outcome, is_finished
from bench.store import Store

POLL_S = 2.0  # how often a run looks at the locks of cells another run holds


class Executor(Protocol):
    """Where cells run. `run` yields one Outcome per cell, in any order; `with executor:` holds its
    resources (worker processes) across the waves of one run."""

    name: str

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc) -> None: ...

    def run(self, cells: list[Cell], ctx: RunContext, on_event: OnEvent) -> Iterator[Outcome]: ...


@dataclass(frozen=True)
class Plan:
    cached: tuple[str, ...]  # finished in the store with their current key
    waves: tuple[tuple[Cell, ...], ...]  # left to run; each wave after the ones holding its cells' members


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        {"done": self.done, "cached": self.cached}.get(outcome.status, self.failed).append(outcome.cell)


def plan(cells: list[Cell], store: Store, *, force: bool = False, on_event: OnEvent | None = None) -> Plan:
    """Cached cells (none when `force`), and the rest in waves by their depth of members."""
    emit = on_event or (lambda event: None)
    cached = [] if force else [c.name for c in cells if is_finished(store, c, emit)]
    left = [c for c in cells if c.name not in cached]
    depth: dict[str, int] = {}

    def level(cell: Cell) -> int:
        if cell.name not in depth:
            depth[cell.name] = 1 + max(map(level, cell.members)) if cell.members else 0
        return depth[cell.name]

    waves = [tuple(c for c in left if level(c) == d) for d in range(1 + max(map(level, left), default=-1))]
    return Plan(cached=tuple(cached), waves=tuple(w for w in waves if w))


def run_cells(cells: list[Cell], store: Store, device: torch.device | str = "auto", *, force: bool = False,
              console: Console | None = None, executor: Executor | None = None, suite_path: str | None = None,
              poll_s: float = POLL_S, on_event: OnEvent | None = None, threads: int | None = None) -> RunSummary:
    """Run every cell not already finished with the same key, on `executor` (default: this process);
    never raises for a cell's failure. `on_event` sees every event the screen does; `threads` sets
    torch's intra-op threads per cell run (bench/executors/job.py: RunContext)."""
    console = console or Console(stderr=True)
    for line in store.recover():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    ctx = RunContext(store=store, device=str(device), force=force, suite_path=suite_path, threads=threads)
    summary, t0 = RunSummary(), time.perf_counter()
    with Screen(console, store, total=len(cells), also=on_event) as screen, executor or Inline() as ex:
        p = plan(cells, store, force=force, on_event=screen)
        for name in p.cached:
            summary.add(Outcome(name, "cached"))
            screen(Event(name, "end", outcome=Outcome(name, "cached")))
        for wave in p.waves:
            _run_wave(list(wave), ex, ctx, screen, summary, poll_s)
    summary.wall_seconds = time.perf_counter() - t0
    return summary


def _run_wave(todo: list[Cell], ex: Executor, ctx: RunContext, emit: OnEvent, summary: RunSummary,
              poll_s: float) -> None:
    by_name = {c.name: c for c in todo}
    while todo:
        busy = []
        for outcome in ex.run(todo, ctx, emit):
            if outcome.status == "busy":
                busy.append(by_name[outcome.cell])
                emit(Event(outcome.cell, "waiting", text=outcome.reason))
            else:
                summary.add(outcome)
                emit(Event(outcome.cell, "end", outcome=outcome))
        todo = _await(busy, ctx, emit, summary, poll_s)


def _await(busy: list[Cell], ctx: RunContext, emit: OnEvent, summary: RunSummary, poll_s: float) -> list[Cell]:
    """Watch the locks of cells other runs hold until each is let go (or its holder is judged dead);
    those finished meanwhile count as cached, even with `force`: they were just trained. Returns the
    rest, to run here."""
    locks, again = {c.name: (c, ctx.store.lock(c.name)) for c in busy}, []
    while locks:
        for name, (cell, lock) in list(locks.items()):
            if not lock.try_acquire():  # the same lock object each time: it keeps watching a lease's age
                continue
            try:
                finished = is_finished(ctx.store, cell, emit)
            finally:
                lock.release()
            del locks[name]
            if finished:
                summary.add(Outcome(name, "cached"))
                emit(Event(name, "end", outcome=Outcome(name, "cached")))
            else:
                again.append(cell)
        if locks:
            time.sleep(poll_s)
    return again
