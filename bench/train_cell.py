"""One cell's training: what every stored number of a trained cell comes from, beyond the trainer.

Seeds, the cell's numerics (precision, TF32, cuDNN autotuning, determinism: bench/precision.py), the
backbone's statistics sample, the model from the strategy, the strategy's fit through the Trainer,
and the test predictions and metrics, stored in the cell's attempt as each task's kind decides
(`TaskSpec.stored_arrays`: predictions and a loss gallery, or confusion matrices and examples).
This module is part of every trained cell's key (bench/grid.py: CORE_TRAINING_CODE); the
bookkeeping around it (attempts, records, failures, progress) lives in bench/runner.py.
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
import torch

from bench.data import TaskSet
from bench.grid import Cell
from bench.models import BACKBONES, BackboneContext, count_params
from bench.precision import apply as apply_numerics
from bench.store import CellFiles
from bench.strategies import STRATEGIES
from bench.trainer import Trainer

STATS_SAMPLE = 2048  # train images a backbone may see for data-dependent statistics


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when available, else CPU. The numerics flags (cuDNN autotuning, TF32) are each
    cell's own, set when it starts (bench/precision.py)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def train_cell(cell: Cell, attempt: CellFiles, device: torch.device, data: TaskSet,
               on_epoch: Callable[[dict], None]) -> dict:
    """Train `cell` on `data` (its dataset, on `device`), write its history and test predictions into
    `attempt`, and return the results part of its record (bench/record.py)."""
    specs = {t: data.specs[t] for t in cell.tasks}
    trainer = Trainer(cell.train, device, cell.seed, on_epoch, weighting=cell.strategy.weighting)
    apply_numerics(trainer.numerics)  # before anything runs on the device
    seed_everything(cell.seed)
    strategy = STRATEGIES.get(cell.strategy.name)(**cell.strategy.params)
    make_backbone = backbone_factory(cell, data, device)
    model = strategy.build(specs, make_backbone).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(device)
    result = strategy.fit(model, data, specs, trainer)
    attempt.write_history(result.history)
    preds = trainer.predict(model, data, data.test, specs)
    arrays = {}
    test = {}
    for t, p in preds.items():
        part = data.test.part(t)  # the test items labelled for t, which `predict` scored
        pred, target = p.cpu().numpy(), part.y[t].cpu().numpy()
        test[t] = specs[t].metrics(pred, target)
        stored = specs[t].stored_arrays(pred, target, _take_images(part.x))  # what is stored is the kind's decision
        arrays.update({f"{k}__{t}": v for k, v in stored.items()})
    attempt.write_predictions(arrays)
    return {
        "test": test, "val": result.val_metrics, "best_epoch": result.best_epoch, "epochs": len(result.history),
        "params": count_params(model), "train_seconds": result.train_seconds,
        "images_per_second": result.images / max(result.train_seconds, 1e-9),
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "notes": tuple(data.notes), "extra": result.extra,
        "numerics": {**trainer.numerics.to_dict(), "cuda_graph": trainer.graphed},
        "specs": {t: s.to_dict() for t, s in specs.items()},
    }


def _take_images(x: torch.Tensor):
    """indices (k,) -> those images of x (N, C, H, W) as a uint8 numpy array (k, C, H, W)."""
    return lambda idx: x[torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(x.device)].cpu().numpy()


def backbone_factory(cell: Cell, data: TaskSet, device: torch.device):
    build = BACKBONES.get(cell.backbone.name)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data.train), generator=gen)[:STATS_SAMPLE].to(data.train.x.device)
    sample = data.standardise(data.train.x[idx])
    ctx = BackboneContext(in_channels=data.in_channels, image_size=data.image_size, sample=sample)
    return lambda: build(ctx, **cell.backbone.params)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
