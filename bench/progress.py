"""The run's progress on the terminal: a bar for the suite and one for the cell that trains, each with
an estimate of the time left.

A cell's time left is, before its first epoch, its estimate from the preflight (bench/preflight.py,
timed steps on a CPU) and after that rich's, from the epochs it has done. The suite's is the sum of
the estimates of the cells still to train, scaled by how long the finished cells took against their
own estimates; without estimates (a GPU run) it is rich's, from the cells done so far.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, \
    TimeElapsedColumn
from rich.text import Text


class TimeLeftColumn(ProgressColumn):
    """`~0:03:12 left`: rich's estimate once a task has progressed, else the task's `estimate` field."""

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


class RunProgress:
    """The bars of one run. `start(cell, epochs)` adds a cell's bar; `epoch(row)` advances it by one
    history row; `finish(summary_text, seconds)` removes it and advances the suite."""

    def __init__(self, console: Console, total: int, estimates: dict[str, float] | None = None):
        self.estimates = estimates or {}
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeLeftColumn(), console=console, transient=False)
        self.left = dict(self.estimates)  # cell -> estimate, for the cells not yet run
        self.spent = self.expected = 0.0  # seconds taken and estimated, over the finished estimated cells
        self.suite: TaskID | None = None
        self.bar: TaskID | None = None
        self.cell: str | None = None
        self.total = total

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        self.suite = self.progress.add_task("suite", total=self.total, left=self._suite_left())
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, cell: str, epochs: int) -> None:
        self.cell = cell
        self.bar = self.progress.add_task(f"  {cell}", total=epochs, estimate=self.estimates.get(cell))

    def epoch(self, text: str) -> None:
        """One history row of the current cell (`text` describes it)."""
        self.progress.update(self.bar, advance=1, description=f"  {self.cell} {text}")

    def finish(self, cell: str, description: str, seconds: float | None = None) -> None:
        """Cell `cell` is over (trained, failed or cached: seconds None); the suite bar moves on."""
        if self.bar is not None:
            self.progress.remove_task(self.bar)
            self.bar = None
        estimate = self.left.pop(cell, None)
        if estimate is not None and seconds is not None:
            self.spent, self.expected = self.spent + seconds, self.expected + estimate
        self.progress.update(self.suite, advance=1, description=description, left=self._suite_left())

    def _suite_left(self) -> float | None:
        if not self.estimates:
            return None  # rich's, from the cells done
        scale = self.spent / self.expected if self.expected else 1.0
        return sum(self.left.values()) * scale
