"""`--executor local --workers N [--gpus 0,1]`: N worker processes on this machine.

    python -m bench run cifar_mtl --executor local --workers 4 --gpus 0        # four workers share GPU 0

Each worker is a spawned process (concurrent.futures.ProcessPoolExecutor with one process) that
lives for the whole run, so it expands the suite and loads each dataset (decoded, onto its device)
once, then trains cell after cell through `run_named_cell` (bench/executors/job.py). Why one pool per
worker and not one pool of N: a ProcessPoolExecutor whose process dies is broken as a whole and
terminates its other processes, which would lose the cells they were training. Here a worker
killed mid-cell loses that cell only: it is recorded as failed (bench/runner.py: record_lost, with
the attempt's log), a fresh worker takes the slot, and a rerun trains just that cell.

With `--gpus`, worker i is pinned to GPU gpus[i % len(gpus)] through CUDA_VISIBLE_DEVICES (indices
count the GPUs this process sees), so several workers may share one GPU. Each worker uses
`cpus // N` torch threads (or `--threads`), so N workers do not oversubscribe the cores. Workers send progress
events through a queue; the parent shows them.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator

import torch

from bench.executors.job import CellJob, ExecutorError, RunContext, run_named_cell
from bench.grid import Cell
from bench.runner import DataCache, OnEvent, Outcome, record_lost
from bench.train_cell import pick_device


def check_pool(workers: int, gpus: tuple[int, ...], device: str) -> None:
    """Raise ExecutorError unless `workers` >= 1 and every index in `gpus` is a GPU this process sees."""
    if workers < 1:
        raise ExecutorError(f"--workers: {workers} is not a number of processes; give 1 or more")
    if not gpus:
        return
    if device == "cpu" or device.startswith("cuda:"):
        raise ExecutorError(f"--gpus pins each worker to a GPU; it cannot go with --device {device} "
                            "(leave --device at auto, or give cuda)")
    count = torch.cuda.device_count()
    missing = sorted({g for g in gpus if not 0 <= g < count})
    if missing:
        seen = f"{count} GPU(s), indices 0-{count - 1}" if count else "no GPU (torch.cuda.device_count() is 0)"
        raise ExecutorError(f"--gpus: GPU {', '.join(map(str, missing))} does not exist; this machine shows {seen}")


def threads_per_worker(workers: int) -> int:
    """torch threads of each of `workers` workers: this process's CPUs shared out, at least 1."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def parse_gpus(text: str | None) -> tuple[int, ...]:
    """'0,1,1' -> (0, 1, 1); ExecutorError naming the bad part."""
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ExecutorError(f"--gpus: {text!r} is not a comma-separated list of GPU indices, e.g. 0,1") from None


class LocalPool:
    """`workers` spawned worker processes, each optionally pinned to one of `gpus` (see the module
    docstring); ExecutorError from the constructor when the options cannot work on this machine."""

    name = "local"

    def __init__(self, workers: int, gpus: tuple[int, ...] = (), device: str = "auto"):
        check_pool(workers, gpus, device)
        self.workers, self.gpus = workers, gpus
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # --gpus counts these; a worker needs their real ids
        self._ids = visible.split(",") if visible else [str(g) for g in range(max(gpus, default=-1) + 1)]
        self._threads = threads_per_worker(workers)  # unless the run gives --threads
        self._slots: list[ProcessPoolExecutor | None] = []
        self._events = None

    def __enter__(self) -> "LocalPool":
        self._events = multiprocessing.get_context("spawn").Queue()
        self._slots = [None] * self.workers
        return self

    def __exit__(self, *exc) -> None:
        for pool in self._slots:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._slots = []

    def run(self, cells: list[Cell], ctx: RunContext, on_event: OnEvent) -> Iterator[Outcome]:
        pending, running = deque(cells), {}

        def submit(slot: int) -> None:
            cell = pending.popleft()
            job = ctx.job(cell.name, device="cuda" if self.gpus else None)  # a pinned worker sees its GPU as cuda:0
            running[self._slot(slot, ctx.threads).submit(_work, job)] = (slot, cell)

        for slot in range(min(self.workers, len(pending))):
            submit(slot)
        while running:
            finished, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
            self._drain(on_event)
            for future in finished:
                slot, cell = running.pop(future)
                yield self._outcome(future, slot, cell, ctx)
                if pending:
                    submit(slot)
        self._drain(on_event)

    def _slot(self, slot: int, threads: int | None) -> ProcessPoolExecutor:
        if self._slots[slot] is None:
            gpu = self._ids[self.gpus[slot % len(self.gpus)]] if self.gpus else None
            self._slots[slot] = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                    initializer=_start_worker,
                                                    initargs=(self._events, gpu, threads or self._threads))
        return self._slots[slot]

    def _outcome(self, future: Future, slot: int, cell: Cell, ctx: RunContext) -> Outcome:
        """The worker's outcome; for a worker that died or raised, the cell recorded as failed."""
        try:
            return future.result()
        except BrokenProcessPool:
            self._slots[slot].shutdown(wait=True)  # reaps the dead worker: a zombie's pid would still hold the lock
            self._slots[slot] = None  # the next cell of this slot gets a fresh worker
            holder = ctx.store.lock(cell.name).holder()
            reason = f"the worker process ({holder or 'pid unknown'}) died mid-cell: killed or crashed"
        except Exception as err:  # the suite or cell could not be read in the worker
            reason = f"the worker could not run the cell: {type(err).__name__}: {err}"
        record_lost(cell, ctx.store, reason)
        return Outcome(cell.name, "failed", reason)

    def _drain(self, on_event: OnEvent) -> None:
        while True:
            try:
                on_event(self._events.get_nowait())
            except queue.Empty:
                return


_WORKER: dict = {}  # this worker process's event queue and loaded datasets (per device)


def _start_worker(events, gpu: str | None, threads: int) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything initialises CUDA in this process
    torch.set_num_threads(threads)
    _WORKER.update(events=events, data={})


def _work(job: CellJob) -> Outcome:
    device = pick_device(job.device)
    data = _WORKER["data"].setdefault(str(device), DataCache(device))
    return run_named_cell(job, datasets=data, on_event=_WORKER["events"].put)
