"""The tracking interface: the hooks, the null tracker, the fan-out, and what backends share.

`Tracker` names the hooks the runner calls and logs nothing; `CompositeTracker` fans them out and
drops a backend that raises mid-run, with one warning, so tracking can never fail a cell.
"""

from __future__ import annotations

import json
import numbers
import warnings
from pathlib import Path
from typing import Any


class TrackingError(ValueError):
    """A tracker is enabled but unusable (package missing, store unreachable); raised before training."""


class TrackingWarning(UserWarning):
    """A tracker failed mid-run and was disabled; the cells go on."""


class Tracker:
    """The hooks the runner calls; this base class logs nothing (the null tracker)."""

    label = "none"

    def check(self) -> None:
        """Raise TrackingError if this tracker cannot work; called by the CLI before any training."""

    def start_suite(self, suite_name: str, description: str, manifest: dict) -> None:
        pass

    def start_cell(self, cell_name: str, resolved_config: dict, tags: dict) -> None:
        pass

    def log_epoch(self, cell_name: str, row: dict) -> None:
        pass

    def end_cell(self, cell_name: str, record: dict, files: list[Path]) -> None:
        pass

    def end_suite(self, report_path: Path | None, figure_paths: list[Path]) -> None:
        pass

    def state(self) -> dict:
        """JSON-able: what `resume_tracker` needs in another process to log under this suite run."""
        return {}

    @property
    def enabled(self) -> bool:
        return False


NullTracker = Tracker


class CompositeTracker(Tracker):
    """Fans every hook out to several trackers; one that raises mid-run warns once and is dropped."""

    label = "composite"

    def __init__(self, trackers: list[Tracker]):
        self.trackers = list(trackers)

    def check(self) -> None:
        for t in self.trackers:  # unguarded: a misconfigured tracker must stop the run before training
            t.check()

    def start_suite(self, suite_name: str, description: str, manifest: dict) -> None:
        self._fan("start_suite", suite_name, description, manifest)

    def start_cell(self, cell_name: str, resolved_config: dict, tags: dict) -> None:
        self._fan("start_cell", cell_name, resolved_config, tags)

    def log_epoch(self, cell_name: str, row: dict) -> None:
        self._fan("log_epoch", cell_name, row)

    def end_cell(self, cell_name: str, record: dict, files: list[Path]) -> None:
        self._fan("end_cell", cell_name, record, files)

    def end_suite(self, report_path: Path | None, figure_paths: list[Path]) -> None:
        self._fan("end_suite", report_path, figure_paths)

    def state(self) -> dict:
        return {t.label: t.state() for t in self.trackers}

    @property
    def enabled(self) -> bool:
        return bool(self.trackers)

    def _fan(self, hook: str, *args: Any) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, hook)(*args)
            except Exception as err:  # tracking must never fail a cell
                self.trackers.remove(t)
                warnings.warn(f"{t.label} tracking disabled for the rest of this run after an error in "
                              f"{hook}: {type(err).__name__}: {err}", TrackingWarning, stacklevel=3)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}; an empty mapping stays, as {}, so its key is visible."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def as_text(value: Any) -> str:
    """A config value as MLflow shows it: strings as they are, everything else as JSON (YAML-like)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def numeric(row: dict) -> dict[str, float]:
    """The finite-or-not real numbers of a mapping (strings, None and bools are not metrics)."""
    return {k: float(v) for k, v in row.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}


def final_metrics(record: dict) -> dict[str, float]:
    """A cell record's numbers: test_<task>_<metric>, best_val_<task>_<metric>, and top-level scalars."""
    out = {k: v for k, v in numeric(record).items() if k != "seed"}  # the seed is a tag, not a result
    for prefix, section in (("test", record.get("test")), ("best_val", record.get("val"))):
        for task, metrics in (section or {}).items():
            out.update({f"{prefix}_{task}_{m}": v for m, v in numeric(metrics or {}).items()})
    return out
