"""Datasets: a registry of loaders, each returning a Pool (uint8 images + per-task targets).

`load_taskset` turns a Pool into a TaskSet for one suite entry: the chosen tasks, a deterministic
stratified validation split carved from train (the test set never picks an epoch), an optional
stratified subset for smoke runs, and per-channel statistics from the train split only.
An entry may also be the union of several datasets' parts (`union:` in a suite), each image then
labelled for its own part's tasks only (partial labels: `Split.labelled`); losses and metrics of a
task use only the items that carry its label.
Loaders live in this folder, one module each; importing this package registers them all.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from bench.registry import Registry
from bench.store import atomic_torch_save
from bench.kinds import TaskSpec

DATASETS = Registry("dataset")

# How a horizontal flip changes the labels of a dataset whose labels depend on orientation:
# (y, flipped) -> y, where y maps task -> targets of a batch and flipped (B,) bool says which images
# were mirrored. The pixels, and the geometry of masks and boxes, are flipped by the trainer and the
# task kinds; tasks missing from y are left alone.
FlipLabels = Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) uint8
    y: dict[str, torch.Tensor]  # task -> targets, first dimension N, layout set by the task's kind
    labelled: dict[str, torch.Tensor] = field(default_factory=dict)  # task -> (N,) bool; absent: all labelled

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: torch.Tensor) -> "Split":
        return Split(self.x[idx], {k: v[idx] for k, v in self.y.items()},
                     {k: v[idx] for k, v in self.labelled.items()})

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), {k: v.to(device) for k, v in self.y.items()},
                     {k: v.to(device) for k, v in self.labelled.items()})

    def only(self, tasks: list[str] | tuple[str, ...]) -> "Split":
        """The same items with the targets (and label masks) of `tasks` only."""
        return Split(self.x, {t: self.y[t] for t in tasks}, {t: m for t, m in self.labelled.items() if t in tasks})

    def part(self, task: str) -> "Split":
        """The items labelled for `task` (all of them when its labels are complete)."""
        if task not in self.labelled:
            return self
        return self.take(self.labelled[task].nonzero().squeeze(1))

    def any_of(self, tasks: list[str] | tuple[str, ...]) -> "Split":
        """The items labelled for at least one of `tasks` (all of them when one has complete labels)."""
        if any(t not in self.labelled for t in tasks):
            return self
        keep = torch.stack([self.labelled[t] for t in tasks]).any(0)
        return self if keep.all() else self.take(keep.nonzero().squeeze(1))

    def groups(self, tasks: list[str]) -> list[tuple[list[str], "Split"]]:
        """Tasks grouped by the items labelled for them, each group with those items, in task order:
        a dataset labelled for every task gives one group over the whole split; a union of
        datasets one group per part."""
        groups: list[tuple[list[str], torch.Tensor | None]] = []
        for t in tasks:
            mask = self.labelled.get(t)
            same = next((g for g in groups if (g[1] is None and mask is None)
                         or (g[1] is not None and mask is not None and torch.equal(g[1], mask))), None)
            if same is None:
                groups.append(([t], mask))
            else:
                same[0].append(t)
        return [(ts, self if mask is None else self.take(mask.nonzero().squeeze(1)).only(ts)) for ts, mask in groups]


@dataclass
class Pool:
    """What a loader returns: the train pool, the test set, and what each task is."""

    train: Split
    test: Split
    specs: dict[str, TaskSpec]
    notes: list[str] = field(default_factory=list)  # caveats the report must state
    flip_labels: FlipLabels | None = None  # where a horizontal flip changes labels
    stratify: str | None = None  # task whose labels stratify splits; default: the first a kind can stratify by


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
    flip_labels: FlipLabels | None = None

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


def dataset(name: str, tasks: dict[str, str]) -> Callable[[Callable], Callable]:
    """Register a loader `fn(root, download, *, options...) -> Pool` offering `tasks` (task -> kind).

    The kinds are declared here, not only in the Pool the loader returns, so a suite can be checked
    and a cell's key can name the kind modules it uses without loading any data."""

    def add(fn: Callable) -> Callable:
        fn.tasks, fn.kinds = tuple(tasks), dict(tasks)
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


def files_key(paths) -> str:
    """A cache-key text naming source files by path, size and modification time (a changed file re-reads)."""
    return ":".join(f"{p.resolve()}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in paths)


def _writable(folder: Path) -> bool:
    """Writable and not marked read-only (root may write anywhere; a r-x folder is meant to stay clean)."""
    return folder.is_dir() and os.access(folder, os.W_OK) and bool(folder.stat().st_mode & stat.S_IWUSR)


def load_taskset(cfg, root: Path | None = None, split_seed: int = 0) -> TaskSet:
    """Load dataset `cfg` (a DatasetConfig, or a union of parts) and carve train / val / test.

    The split depends only on `split_seed`, never on the cell's seed, so every cell of a suite
    sees the same validation images.
    """
    root = data_root() if root is None else Path(root)
    parts = [_load_part(p, root, split_seed) for p in (cfg.parts or (cfg,))]
    specs = {t: s for p in parts for t, s in p.specs.items()}
    if len(parts) == 1:
        train, val, test = parts[0].train, parts[0].val, parts[0].test
    else:
        _check_same_images(parts, cfg.name)
        train, val, test = (union([getattr(p, name) for p in parts], specs) for name in ("train", "val", "test"))
    mean, std = channel_stats(train.x)
    flips = [p.flip_labels for p in parts if p.flip_labels is not None]
    return TaskSet(name=cfg.name, train=train, val=val, test=test, specs=specs, mean=mean, std=std,
                   notes=[n for p in parts for n in p.notes], flip_labels=_compose(flips))


def _load_part(cfg, root: Path, split_seed: int) -> TaskSet:
    """One registered dataset's tasks, split, with its targets checked (statistics left at 0 / 1)."""
    loader = DATASETS.get(cfg.name)
    pool = loader(root, cfg.download, **cfg.options)
    specs = {t: pool.specs[t] for t in cfg.tasks}
    for t, spec in specs.items():
        if spec.kind != loader.kinds[t]:
            raise TypeError(f"dataset {cfg.name}: task {t} is registered as {loader.kinds[t]!r} but the loader "
                            f"returned a {spec.kind!r} spec; fix its @dataset declaration")
    for name, split in (("train", pool.train), ("test", pool.test)):
        for t, spec in specs.items():
            spec.check_targets(split.y[t], image_size=split.x.shape[-1], where=f"dataset {cfg.name} ({name})")
    gen = torch.Generator().manual_seed(split_seed)
    train = _subset(pool, pool.train, cfg.subset, gen)
    test = _subset(pool, pool.test, cfg.test_subset, gen)
    n_val = int(round(cfg.val_size * len(train))) if cfg.val_size < 1 else int(cfg.val_size)
    if not 0 < n_val < len(train):
        raise ValueError(f"dataset {cfg.name}: val_size {cfg.val_size} leaves no train or no validation images")
    train, val = carve(train, _stratify_labels(pool, train), n_val, gen)
    # a loader labelling its tasks on separate images (digit scenes) keeps only those of the chosen tasks
    train, val, test = (split.only(cfg.tasks).any_of(cfg.tasks) for split in (train, val, test))
    return TaskSet(name=cfg.name, train=train, val=val, test=test, specs=specs, mean=(), std=(),
                   notes=list(pool.notes), flip_labels=pool.flip_labels)


def _check_same_images(parts: list[TaskSet], name: str) -> None:
    sizes = {f"{i}: {p.name}": tuple(p.train.x.shape[1:]) for i, p in enumerate(parts)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"dataset {name}: the union's parts have different image shapes (C, H, W) {sizes}; "
                         "give them one canvas size and channel count (see each dataset's options)")


def union(splits: list[Split], specs: dict[str, TaskSpec]) -> Split:
    """Items of every split, in order; each task labelled only on the items of the split it came from."""
    sizes = [len(s) for s in splits]
    y, labelled = {}, {}
    for t, spec in specs.items():
        k = next(i for i, s in enumerate(splits) if t in s.y)
        own = splits[k].y[t]
        y[t] = torch.cat([own if i == k else spec.placeholder(own, n) for i, n in enumerate(sizes)])
        labelled[t] = torch.cat([splits[k].labelled.get(t, torch.ones(n, dtype=torch.bool)) if i == k
                                 else torch.zeros(n, dtype=torch.bool) for i, n in enumerate(sizes)])
    return Split(torch.cat([s.x for s in splits]), y, labelled)


def _compose(flips: list[FlipLabels]) -> FlipLabels | None:
    if len(flips) < 2:
        return flips[0] if flips else None

    def flip_labels(y: dict[str, torch.Tensor], flipped: torch.Tensor) -> dict[str, torch.Tensor]:
        for f in flips:
            y = f(y, flipped)
        return y

    return flip_labels


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
    if pool.stratify:
        return split.y[pool.stratify]
    for t, spec in pool.specs.items():
        labels = spec.stratify_labels(split.y[t])
        if labels is not None and t not in split.labelled:
            return labels
    if split.labelled:  # tasks labelled on separate items (digit scenes): keep each task's share
        return torch.stack(list(split.labelled.values()), 1).long().argmax(1)
    return torch.zeros(len(split), dtype=torch.long)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    xf = x.float().div_(255).transpose(0, 1).reshape(x.shape[1], -1)
    return tuple(xf.mean(1).tolist()), tuple(xf.std(1).tolist())


# Importing the loader modules registers them.
from bench.data import cifar, digit_scenes, fashion_mnist, freq3, mnist, shapes, synthetic  # noqa: E402,F401
