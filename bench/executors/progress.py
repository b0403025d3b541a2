"""Progress on the terminal, from the events of cell runs wherever they run.

A suite bar (done / cached / failed / left) and one bar per cell that is training, fed by
bench/runner.py's `Event`s: inline runs call the screen directly, pool workers send their events
through a queue to the parent process, SLURM jobs send none (the parent reports submissions and
outcomes). Notes (recoveries, damaged results, submissions) are printed as one unwrapped line.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench.runner import Event, OnEvent, outcome_text
from bench.store import Store


class Screen:
    """`with Screen(console, store, total) as screen: screen(event)`; `also` sees every event too."""

    def __init__(self, console: Console, store: Store, total: int, also: OnEvent | None = None):
        self.console, self.store, self.total, self.also = console, store, total, also
        self.counts = {"done": 0, "cached": 0, "failed": 0}
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self._bars: dict[str, int] = {}
        self._notes: set[str] = set()  # the planner and the cell's run may both see one damaged result

    def __enter__(self) -> "Screen":
        self._progress.start()
        self._suite = self._progress.add_task(self._suite_text(), total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def __call__(self, event: Event) -> None:
        if self.also is not None:
            self.also(event)
        if event.kind == "start":
            self._bars[event.cell] = self._progress.add_task(f"  {event.cell}", total=event.epochs or 1)
        elif event.kind == "epoch" and event.cell in self._bars:  # a worker's row may arrive after its outcome
            self._progress.update(self._bars[event.cell], completed=event.row["epoch"],
                                  description=f"  {event.cell} " + epoch_text(event.row))
        elif event.kind in ("note", "waiting"):
            text = (f"{event.cell}: waiting, " if event.kind == "waiting" else "") + event.text
            if text not in self._notes:
                self._notes.add(text)
                self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        elif event.kind == "end":
            self._end(event)

    def _end(self, event: Event) -> None:
        outcome = event.outcome
        if event.cell in self._bars:
            self._progress.remove_task(self._bars.pop(event.cell))
        self.counts[outcome.status if outcome.status in self.counts else "failed"] += 1
        if outcome.status != "cached":
            # markup off: rich drops [bracketed] words
            self.console.log(outcome_text(self.store, outcome), markup=False)
        self._progress.update(self._suite, completed=sum(self.counts.values()), description=self._suite_text())

    def _suite_text(self) -> str:
        c = self.counts
        return (f"suite: {c['done']} done, {c['cached']} cached, {c['failed']} failed, "
                f"{self.total - sum(c.values())} left")


def epoch_text(row: dict) -> str:
    vals = [f"{k[4:]}={v:.3f}" for k, v in row.items() if k.startswith("val_") and k.endswith(("accuracy", "mae"))]
    stage = f"stage {row['stage']} " if row.get("stage") else ""
    return f"{stage}epoch {row['epoch']} loss={row['train_loss']:.3f} " + " ".join(vals)
