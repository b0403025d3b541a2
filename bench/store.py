"""The results store: one folder per cell under `results/<suite>/<cell>/`, written atomically.

Files per cell:
- `config.json`    the fully resolved cell config, its key, and provenance (code, torch, device)
- `metrics.json`   status (done | failed | diverged), reason, per-task metrics, timings; written last
- `history.csv`    one row per epoch (losses, validation metrics, learning rate)
- `predictions.npz` test predictions (float16 probabilities or values) and targets, per task, plus
                   the highest-loss test images (uint8) with their indices and losses (`gallery_*__<task>`)
- `log.txt`        the cell's log, with the traceback when it failed
A cell counts as finished only when `metrics.json` says done and its key matches.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

STATUSES = ("done", "failed", "diverged", "skipped")


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    _atomic(path, lambda f: torch.save(obj, f))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class Store:
    """Read and write the cells of one suite."""

    def __init__(self, root: Path | str, suite: str):
        self.dir = Path(root) / suite

    def cell_dir(self, cell: str) -> Path:
        return self.dir / cell

    def is_done(self, cell: str, key: str) -> bool:
        m = self.metrics(cell)
        return m is not None and m.get("status") == "done" and m.get("key") == key

    def metrics(self, cell: str) -> dict | None:
        path = self.cell_dir(cell) / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else None

    def config(self, cell: str) -> dict | None:
        path = self.cell_dir(cell) / "config.json"
        return json.loads(path.read_text()) if path.exists() else None

    def cells(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir() if (p / "metrics.json").exists()) if self.dir.exists() else []

    def write_config(self, cell: str, config: dict) -> None:
        atomic_write_json(self.cell_dir(cell) / "config.json", config)

    def write_metrics(self, cell: str, metrics: dict) -> None:
        assert metrics.get("status") in STATUSES, metrics.get("status")
        atomic_write_json(self.cell_dir(cell) / "metrics.json", metrics)

    def write_history(self, cell: str, rows: list[dict]) -> None:
        import pandas as pd

        atomic_write_text(self.cell_dir(cell) / "history.csv", pd.DataFrame(rows).to_csv(index=False))

    def history(self, cell: str):
        import pandas as pd

        path = self.cell_dir(cell) / "history.csv"
        return pd.read_csv(path) if path.exists() and path.stat().st_size else None

    def write_predictions(self, cell: str, arrays: dict[str, np.ndarray]) -> None:
        _atomic(self.cell_dir(cell) / "predictions.npz", lambda f: np.savez_compressed(f, **arrays))

    def predictions(self, cell: str) -> dict[str, np.ndarray] | None:
        path = self.cell_dir(cell) / "predictions.npz"
        if not path.exists():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def append_log(self, cell: str, text: str) -> None:
        path = self.cell_dir(cell) / "log.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(text.rstrip("\n") + "\n")

    def reset(self, cell: str) -> None:
        """Forget a cell's earlier outcome before it reruns (its log restarts too)."""
        for name in ("metrics.json", "log.txt"):
            (self.cell_dir(cell) / name).unlink(missing_ok=True)
