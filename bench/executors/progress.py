"""Progress on the terminal, from the events of cell runs wherever they run.

A suite bar (done / cached / failed / left) and one bar per cell that is training, fed by
bench/runner.py's `Event`s: inline runs call the screen directly, pool workers send their events
through a queue to the parent process, SLURM jobs send none (the parent reports submissions and
outcomes). Notes (recoveries, damaged results, submissions) are printed as one unwrapped line; a
failure's reason is printed in full once (a missing dataset fails all its cells alike), later
cells name the first.

Each bar shows the time left. A cell's is, before its first epoch, its estimate from the preflight
(bench/preflight.py, timed steps on a CPU) and after that rich's, from the epochs it has done. The
suite's is the sum of the estimates of the cells still to run, scaled by how long the finished cells
took against their own estimates; without estimates (a GPU run) it is rich's, from the cells done.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from bench.runner import Event, OnEvent, Outcome, outcome_text
from bench.store import Store


class Screen:
    """`with Screen(console, store, total) as screen: screen(event)`; `also` sees every event too.

    estimates: cell -> seconds (bench/preflight.py); shown: failure reasons already printed in full,
    with where (the preflight's, for a dataset that cannot be loaded)."""

    def __init__(self, console: Console, store: Store, total: int, also: OnEvent | None = None, *,
                 estimates: dict[str, float] | None = None, shown: dict[str, str] | None = None):
        self.console, self.store, self.total, self.also = console, store, total, also
        self.counts = {"done": 0, "cached": 0, "failed": 0}
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeLeftColumn(), console=console, transient=False)
        self._bars: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._notes: set[str] = set()  # the planner and the cell's run may both see one damaged result
        self._shown = dict(shown or {})
        self._left = dict(estimates or {})  # cell -> estimate, for the cells not yet run
        self._spent = self._expected = 0.0  # seconds taken and estimated, over the finished estimated cells

    def __enter__(self) -> "Screen":
        self._progress.start()
        self._suite = self._progress.add_task(self._suite_text(), total=self.total, left=self._suite_left())
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def __call__(self, event: Event) -> None:
        if self.also is not None:
            self.also(event)
        if event.kind == "start":
            self._started[event.cell] = time.perf_counter()
            self._bars[event.cell] = self._progress.add_task(f"  {event.cell}", total=event.epochs or 1,
                                                             estimate=self._left.get(event.cell))
        elif event.kind == "epoch" and event.cell in self._bars:  # a worker's row may arrive after its outcome
            self._progress.update(self._bars[event.cell], advance=1,  # one per history row, every stage's too
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
            self.console.log(self._outcome_line(outcome), markup=False)
        estimate, started = self._left.pop(event.cell, None), self._started.pop(event.cell, None)
        if estimate is not None and started is not None:
            self._spent, self._expected = self._spent + time.perf_counter() - started, self._expected + estimate
        self._progress.update(self._suite, completed=sum(self.counts.values()), description=self._suite_text(),
                              left=self._suite_left())

    def _outcome_line(self, outcome: Outcome) -> str:
        """The outcome's line; a failure's reason in full the first time only."""
        if outcome.status in ("failed", "diverged") and outcome.reason in self._shown:
            return outcome_text(self.store, outcome).replace(f"({outcome.reason})",
                                                             f"(the same reason as {self._shown[outcome.reason]})")
        if outcome.status in ("failed", "diverged"):
            self._shown[outcome.reason] = outcome.cell
        return outcome_text(self.store, outcome)

    def _suite_text(self) -> str:
        c = self.counts
        return (f"suite: {c['done']} done, {c['cached']} cached, {c['failed']} failed, "
                f"{self.total - sum(c.values())} left")

    def _suite_left(self) -> float | None:
        if not self._left and not self._expected:
            return None  # no estimates: rich's, from the cells done
        scale = self._spent / self._expected if self._expected else 1.0
        return sum(self._left.values()) * scale


class TimeLeftColumn(ProgressColumn):
    """`~0:03:12 left`: a task's `left` field, else rich's estimate once it has progressed, else its `estimate`."""

    def render(self, task: Task) -> Text:
        left = task.fields.get("left")
        if left is None and task.completed:
            left = task.time_remaining
        if left is None:
            left = task.fields.get("estimate")
        return Text("" if left is None else f"~{clock(left)} left", style="progress.remaining")


def clock(seconds: float) -> str:
    """h:mm:ss, as the bars show times."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def duration(seconds: float) -> str:
    """A span as a person reads it: "40 s", "12 min", "3 h 05 min", "7.8 days"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        hours, minutes = divmod(int(round(seconds / 60)), 60)
        return f"{hours} h {minutes:02d} min"
    return f"{seconds / 86400:.1f} days"


def epoch_text(row: dict) -> str:
    vals = [f"{k[4:]}={v:.3f}" for k, v in row.items() if k.startswith("val_") and k.endswith(("accuracy", "mae"))]
    stage = f"stage {row['stage']} " if row.get("stage") else ""
    return f"{stage}epoch {row['epoch']} loss={row['train_loss']:.3f} " + " ".join(vals)
