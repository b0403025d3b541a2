"""Datasets: a registry of loaders, each returning a Pool (uint8 images + per-task targets).

`load_taskset` turns a Pool into a TaskSet for one suite entry: the chosen tasks, a deterministic
stratified validation split carved from train (the test set never picks an epoch), an optional
stratified subset for smoke runs, and per-channel statistics from the train split only.
Loaders live in this folder, one module each; importing this package registers them all.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.registry import Registry
from bench.store import atomic_torch_save
from bench.tasks import TaskSpec

DATASETS = Registry("dataset")

# Label-aware flip for datasets whose labels depend on orientation: (x, y, mask) -> (x, y), where
# x is a uint8 (B, C, H, W) batch on the device, y maps task -> targets and mask (B,) bool says
# which images to flip horizontally.
Augment = Callable[[torch.Tensor, dict[str, torch.Tensor], torch.Tensor], tuple]


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) uint8
    y: dict[str, torch.Tensor]  # task -> (N,) int64 or (N, dim) float32

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: torch.Tensor) -> "Split":
        return Split(self.x[idx], {k: v[idx] for k, v in self.y.items()})

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), {k: v.to(device) for k, v in self.y.items()})


@dataclass
class Pool:
    """What a loader returns: the train pool, the test set, and what each task is."""

    train: Split
    test: Split
    specs: dict[str, TaskSpec]
    notes: list[str] = field(default_factory=list)  # caveats the report must state
    flip: Augment | None = None  # label-aware horizontal flip, where flipping changes labels
    stratify: str | None = None  # task whose labels stratify splits; default: first classification task


@dataclass
class TaskSet:
    """One dataset ready for training: splits, the tasks in play, normalisation statistics."""

    name: str
    train: Split
    val: Split
    test: Split
    specs: dict[str, TaskSpec]
    mean: tuple[float, ...]  # per channel, in [0, 1] units, from the train split
    std: tuple[float, ...]
    notes: list[str] = field(default_factory=list)
    flip: Augment | None = None

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, C, H, W) -> float32, standardised per channel with the train statistics."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1) * 255
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1) * 255
        return (x.float() - mean) / std

    @property
    def in_channels(self) -> int:
        return self.train.x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.x.shape[-1]

    def to(self, device: torch.device | str) -> "TaskSet":
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))


def dataset(name: str, tasks: tuple[str, ...]) -> Callable[[Callable], Callable]:
    """Register a loader `fn(root, download, *, options...) -> Pool` that offers `tasks`."""

    def add(fn: Callable) -> Callable:
        fn.tasks = tasks
        return DATASETS.register(name)(fn)

    return add


def data_root() -> Path:
    return Path(os.environ.get("BENCH_DATA_DIR", "data"))


def cache_dir(root: Path) -> Path:
    """Decoded-tensor cache: under the data root when writable, else the user's cache folder."""
    if os.environ.get("BENCH_CACHE_DIR"):
        path = Path(os.environ["BENCH_CACHE_DIR"])
    elif _writable(root):
        path = root / ".bench_cache"
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached(root: Path, prefix: str, key: str, make: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """`make()` once per distinct `key` (a text naming the source or the generator's parameters);
    later calls load the tensors saved under cache_dir(root)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = cache_dir(root) / f"{prefix}-{digest}.pt"
    if path.exists():
        return torch.load(path)
    arrays = make()
    atomic_torch_save(arrays, path)
    return arrays


def source_digest(module_file: str) -> str:
    """A hash of a generator's source, part of its cache key so an edited generator regenerates."""
    return hashlib.sha256(Path(module_file).read_bytes()).hexdigest()[:16]


def _writable(folder: Path) -> bool:
    """Writable and not marked read-only (root may write anywhere; a r-x folder is meant to stay clean)."""
    return folder.is_dir() and os.access(folder, os.W_OK) and bool(folder.stat().st_mode & stat.S_IWUSR)


def load_taskset(cfg, root: Path | None = None, split_seed: int = 0) -> TaskSet:
    """Load dataset `cfg` (a DatasetConfig) and carve train / val / test for its tasks.

    The split depends only on `split_seed`, never on the cell's seed, so every cell of a suite
    sees the same validation images.
    """
    root = data_root() if root is None else Path(root)
    pool = DATASETS.get(cfg.name)(root, cfg.download, **cfg.options)
    specs = {t: pool.specs[t] for t in cfg.tasks}
    gen = torch.Generator().manual_seed(split_seed)
    train = _subset(pool, pool.train, cfg.subset, gen)
    test = _subset(pool, pool.test, cfg.test_subset, gen)
    n_val = int(round(cfg.val_size * len(train))) if cfg.val_size < 1 else int(cfg.val_size)
    if not 0 < n_val < len(train):
        raise ValueError(f"dataset {cfg.name}: val_size {cfg.val_size} leaves no train or no validation images")
    train, val = carve(train, _stratify_labels(pool, train), n_val, gen)
    mean, std = channel_stats(train.x)
    return TaskSet(
        name=cfg.name, train=_only(train, specs), val=_only(val, specs), test=_only(test, specs),
        specs=specs, mean=mean, std=std, notes=list(pool.notes), flip=pool.flip,
    )


def _subset(pool: Pool, split: Split, n: int | None, gen: torch.Generator) -> Split:
    if n is None or n >= len(split):
        return split
    return split.take(stratified_sample(_stratify_labels(pool, split), n, gen))


def carve(split: Split, labels: torch.Tensor, n: int, gen: torch.Generator) -> tuple[Split, Split]:
    """(the rest, a stratified sample of n items) of `split`, both in their original order."""
    picked = stratified_sample(labels, n, gen)
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[picked] = False
    return split.take(keep.nonzero().squeeze(1)), split.take(picked)


def stratified_sample(labels: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Sorted indices of n items drawn so every label keeps its share (largest-remainder rounding)."""
    classes, counts = labels.unique(return_counts=True)
    share = counts.double() * n / len(labels)
    take = share.floor().long()
    rest = n - int(take.sum())
    take[torch.argsort(share - take, descending=True, stable=True)[:rest]] += 1
    picked = []
    for c, k in zip(classes.tolist(), take.tolist()):
        idx = (labels == c).nonzero().squeeze(1)
        picked.append(idx[torch.randperm(len(idx), generator=gen)[:k]])
    return torch.cat(picked).sort().values


def _stratify_labels(pool: Pool, split: Split) -> torch.Tensor:
    task = pool.stratify or next((t for t, s in pool.specs.items() if s.is_classification), None)
    return split.y[task] if task else torch.zeros(len(split), dtype=torch.long)


def _only(split: Split, specs: dict[str, TaskSpec]) -> Split:
    return Split(split.x, {t: split.y[t] for t in specs})


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    xf = x.float().div_(255).transpose(0, 1).reshape(x.shape[1], -1)
    return tuple(xf.mean(1).tolist()), tuple(xf.std(1).tolist())


# Importing the loader modules registers them.
from bench.data import cifar, freq3, mnist, shapes, synthetic  # noqa: E402,F401
