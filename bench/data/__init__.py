"""Datasets: a registry of loaders, each returning a Pool (uint8 images + per-task targets).

`load_taskset` turns a Pool into a TaskSet for one suite entry: the chosen tasks, a deterministic
stratified validation split carved from train (the test set never picks an epoch), an optional
stratified subset for smoke runs, and per-channel statistics from the train split only.
An entry may also be the union of several datasets' parts (`union:` in a suite), each image then
labelled for its own part's tasks only (partial labels: `Split.labelled`); losses and metrics of a
task use only the items that carry its label.
Each dataset declares its tasks' kinds and its label maps (how orientation ops of the augmentation
pipeline change its labels, bench/augment.py) when it registers: fixed in `@dataset(name, tasks=...,
label_maps=...)`, or, for datasets whose tasks the suite declares (`npz`, `image_folder`), from its
options through `declare=`. So a suite is checked, and a cell's key names its kind modules, without
loading any data.
Loaders live in this folder, one module each; importing this package registers them all.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from bench.augment import LabelMaps
from bench.registry import Registry
from bench.store import atomic_torch_save
from bench.kinds import TaskSpec

DATASETS = Registry("dataset")


@dataclass(frozen=True)
class Declaration:
    """What a dataset offers, known before loading: its tasks' kinds and its label maps."""

    kinds: dict[str, str]  # task -> kind name (bench/kinds), in the dataset's task order
    # task -> orientation op (hflip, vflip, rot90, rotate) -> how that op changes the task's labels;
    # an op missing for a class or regression task is refused by the augmentation pipeline
    label_maps: LabelMaps = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.kinds)


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
    label_maps: LabelMaps = field(default_factory=dict)  # the tasks' declared label maps (Declaration)

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


def dataset(name: str, tasks: dict[str, str] | None = None, *, label_maps: LabelMaps | None = None,
            declare: Callable[[dict[str, Any]], Declaration] | None = None) -> Callable[[Callable], Callable]:
    """Register a loader `fn(root, download, *, options...) -> Pool`.

    Either `tasks` (task -> kind) and `label_maps` (see Declaration) fixed here, or `declare(options)
    -> Declaration` for a dataset whose tasks the suite declares in its options; `declare` raises
    ValueError starting with the option's key path (e.g. "tasks.digit.kind: ...")."""
    if (tasks is None) == (declare is None):
        raise TypeError(f"dataset {name!r}: give either tasks= or declare=")
    fixed = Declaration(dict(tasks), dict(label_maps or {})) if tasks is not None else None

    def add(fn: Callable) -> Callable:
        fn.declare = declare or (lambda options: fixed)
        return DATASETS.register(name)(fn)

    return add


def declaration(cfg) -> Declaration:
    """The Declaration of one registered dataset entry (a DatasetConfig that is not a union)."""
    return DATASETS.get(cfg.registered).declare(cfg.options)


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
    return TaskSet(name=cfg.name, train=train, val=val, test=test, specs=specs, mean=mean, std=std,
                   notes=[n for p in parts for n in p.notes],
                   label_maps={t: m for p in parts for t, m in p.label_maps.items()})


def _load_part(cfg, root: Path, split_seed: int) -> TaskSet:
    """One registered dataset's tasks, split, with its targets checked (statistics left at 0 / 1)."""
    decl = declaration(cfg)
    pool = DATASETS.get(cfg.registered)(root, cfg.download, **cfg.options)
    specs = {t: pool.specs[t] for t in cfg.tasks}
    for t, spec in specs.items():
        if spec.kind != decl.kinds[t]:
            raise TypeError(f"dataset {cfg.name}: task {t} is declared as {decl.kinds[t]!r} but the loader "
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
                   notes=list(pool.notes), label_maps={t: m for t, m in decl.label_maps.items() if t in cfg.tasks})


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
from bench.data import cifar, digit_scenes, fashion_mnist, freq3, image_folder, mnist, npz, shapes, synthetic  # noqa: E402,F401
