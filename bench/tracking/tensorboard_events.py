"""TensorBoard: event files per cell, written with torch.utils.tensorboard's SummaryWriter."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.tracking.base import Tracker, TrackingError, as_text, final_metrics, flatten, numeric


class TensorBoardTracker(Tracker):
    """One SummaryWriter per cell under <folder>/<suite>/<cell>/: scalars per history row, hparams at the end.

    Like the results store, the folder holds each cell's latest run: a rerun clears the cell's old
    event files, which TensorBoard would otherwise draw as one tangled curve.
    """

    label = "tensorboard"

    def __init__(self, target: str, *, where: str = "tracking.tensorboard"):
        self.where = where
        self.root = Path(target).expanduser().resolve()
        self.suite: str | None = None
        self._writers: dict[str, Any] = {}  # cell -> SummaryWriter
        self._steps: dict[str, int] = {}
        self._hparams: dict[str, dict] = {}

    @classmethod
    def resume(cls, state: dict) -> TensorBoardTracker:
        t = cls(state["dir"], where="tracking state")
        t.suite = state["suite"]
        return t

    def state(self) -> dict:
        return {"dir": str(self.root), "suite": self.suite}

    @property
    def enabled(self) -> bool:
        return True

    def check(self) -> None:
        try:
            import torch.utils.tensorboard  # noqa: F401  (raises ImportError without the tensorboard package)
        except ImportError as err:
            raise TrackingError(f"{self.where}: TensorBoard logging needs the tensorboard package: "
                                f"pip install 'mtl-bench[tensorboard]' ({err})") from None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".bench_write_check"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise TrackingError(f"{self.where}: cannot write TensorBoard logs to {self.root}: {err}") from None

    def start_suite(self, suite_name: str, description: str, manifest: dict) -> None:
        self.suite = suite_name

    def start_cell(self, cell_name: str, resolved_config: dict, tags: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = self.root / self.suite / cell_name
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        writer = SummaryWriter(log_dir=str(folder))
        writer.add_text("config", "```\n" + json.dumps(resolved_config, indent=2, default=str) + "\n```")
        self._writers[cell_name], self._steps[cell_name] = writer, 0
        self._hparams[cell_name] = {k: v if isinstance(v, (int, float, str)) else as_text(v)
                                    for k, v in {**flatten(resolved_config), **tags}.items()}

    def log_epoch(self, cell_name: str, row: dict) -> None:
        self._steps[cell_name] = step = self._steps[cell_name] + 1
        writer = self._writers[cell_name]
        for key, value in numeric(row).items():
            writer.add_scalar(key, value, step)

    def end_cell(self, cell_name: str, record: dict, files: list[Path]) -> None:
        writer = self._writers.pop(cell_name)
        status = str(record.get("status", "unknown"))
        writer.add_text("status", status + (f": {record['reason']}" if record.get("reason") else ""))
        hparams = self._hparams.pop(cell_name)
        test = {k: v for k, v in final_metrics(record).items() if k.startswith("test_") and math.isfinite(v)}
        if status == "done" and test:  # run_name ".": the hparams go into the cell's own folder
            writer.add_hparams(hparams, test, run_name=".", global_step=self._steps[cell_name])
        writer.close()

    def end_suite(self, report_path: Path | None, figure_paths: list[Path]) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
