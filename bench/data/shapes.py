"""`shapes`: counting two kinds of shapes (seed 002), generated from a seed.

Each 28x28 grayscale image holds exactly 10 filled shapes of exactly two of six types (square,
circle, triangle pointing up / right / down / left) on a black background. The image is a 4x4 grid
of 7x7 cells; 10 cells hold one shape each (size 4-6 px, jittered inside its cell, intensity
100-255), and every cell's last row and column stay empty, so shapes never touch.

Tasks:
- `pair` (multiclass, 135 = 15 type pairs x 9): which two types, and how many of the first (the
  lower type index), 1..9. Label = pair_index * 9 + (count - 1). The generator draws pairs and
  counts uniformly, so with thousands of images every class occurs (seed 002's own data held 105).
- `counts` (regression, dim 6): the number of shapes of each type, in TYPES order.

Flips and quarter turns are label-aware (`LABEL_MAPS`): they permute the triangle types (a
horizontal flip swaps right- and left-pointing ones), and both labels follow. Free rotations are not
declared (a turned triangle is no type of the six). Random crops can push edge shapes out of the frame, so suites on this dataset set `crop_pad: 0`.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from bench.augment import LabelMaps
from bench.data import Pool, Split, cached, dataset, source_digest
from bench.kinds.classification import Multiclass
from bench.kinds.regression import Regression

TYPES = ("square", "circle", "triangle_up", "triangle_right", "triangle_down", "triangle_left")
MIRROR = (0, 1, 2, 5, 4, 3)  # type index after a horizontal flip
PAIRS = tuple(itertools.combinations(range(len(TYPES)), 2))  # 15 unordered type pairs, a < b
PER_IMAGE = 10  # shapes per image
MAX_FIRST = PER_IMAGE - 1  # count of the first type: 1..9
CLASSES = len(PAIRS) * MAX_FIRST  # 135
GRID, CELL = 4, 7  # 4x4 cells of 7x7 px = 28x28
SIZES = (4, 5, 6)  # shape side in px; at most CELL - 1, leaving a 1 px gap to the next cell


# ---- label maps: a flip or quarter turn permutes the triangle types --------------------------------
# type index -> type index after the op (TYPES order)
VFLIP = (0, 1, 4, 3, 2, 5)  # up <-> down
ROT90 = (0, 1, 5, 2, 3, 4)  # one counter-clockwise quarter turn: up -> left -> down -> right -> up


def _power(perm: tuple[int, ...], k: int) -> tuple[int, ...]:
    """The permutation applied k times."""
    out = tuple(range(len(perm)))
    for _ in range(k):
        out = tuple(perm[i] for i in out)
    return out


@lru_cache(maxsize=None)
def _tables(perm: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """For a type permutation (type -> type after the op): the new `pair` label of every class (135,)
    and, per output column, the input column of `counts` (6,)."""
    source = np.argsort(perm)  # new counts[j] = old counts[source[j]]
    pairs = counts_to_pair(pair_to_counts(np.arange(CLASSES))[:, source])
    return torch.from_numpy(pairs), torch.from_numpy(source)


def _pair_map(perm: tuple[int, ...]):
    def move(y: torch.Tensor, did: torch.Tensor) -> torch.Tensor:  # y (B,), did (B,) bool
        return torch.where(did, _tables(perm)[0].to(y.device)[y], y)
    return move


def _counts_map(perm: tuple[int, ...]):
    def move(y: torch.Tensor, did: torch.Tensor) -> torch.Tensor:  # y (B, 6), did (B,) bool
        return torch.where(did[:, None], y[:, _tables(perm)[1].to(y.device)], y)
    return move


def _pair_rot90(y: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    table = torch.stack([_tables(_power(ROT90, k))[0] for k in range(4)]).to(y.device)  # (4, 135)
    return table[turns, y]


def _counts_rot90(y: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    source = torch.stack([_tables(_power(ROT90, k))[1] for k in range(4)]).to(y.device)  # (4, 6)
    return y.gather(1, source[turns])


LABEL_MAPS: LabelMaps = {
    "pair": {"hflip": _pair_map(MIRROR), "vflip": _pair_map(VFLIP), "rot90": _pair_rot90},
    "counts": {"hflip": _counts_map(MIRROR), "vflip": _counts_map(VFLIP), "rot90": _counts_rot90},
}


@dataset("shapes", tasks={"pair": "multiclass", "counts": "regression"}, label_maps=LABEL_MAPS)
def shapes(root: Path, download: bool, *, n: int = 10_000, n_test: int = 2_000, seed: int = 0) -> Pool:
    key = f"shapes:n={n}:n_test={n_test}:seed={seed}:{source_digest(__file__)}"
    arrays = cached(root, "shapes", key, lambda: {
        **{f"train_{k}": v for k, v in generate(n, seed, 0).items()},
        **{f"test_{k}": v for k, v in generate(n_test, seed, 1).items()},
    })
    names = tuple(class_name(c) for c in range(CLASSES))
    return Pool(
        train=Split(arrays["train_x"], {"pair": arrays["train_pair"], "counts": arrays["train_counts"]}),
        test=Split(arrays["test_x"], {"pair": arrays["test_pair"], "counts": arrays["test_counts"]}),
        specs={"pair": Multiclass(name="pair", classes=CLASSES, class_names=names),
               "counts": Regression(name="counts", dim=len(TYPES))},
        stratify="pair",
    )


def class_name(label: int) -> str:
    (a, b), k = PAIRS[label // MAX_FIRST], label % MAX_FIRST + 1
    return f"{k} {TYPES[a]} + {PER_IMAGE - k} {TYPES[b]}"


def generate(n: int, seed: int, stream: int) -> dict[str, torch.Tensor]:
    """n images with labels; `stream` separates train (0) from test (1) for the same seed."""
    rng = np.random.default_rng([seed, stream])
    pair = rng.integers(0, len(PAIRS), n)
    first = rng.integers(1, MAX_FIRST + 1, n)  # how many of the first type
    a, b = np.array(PAIRS)[pair].T
    types = np.where(np.arange(PER_IMAGE) < first[:, None], a[:, None], b[:, None])  # (n, 10)
    slots = rng.random((n, GRID * GRID)).argsort(1)[:, :PER_IMAGE]  # distinct cells per image
    size = rng.integers(0, len(SIZES), (n, PER_IMAGE))  # index into SIZES
    room = CELL - np.array(SIZES)[size]  # number of offsets that keep the last row/column empty
    dy, dx = (np.floor(rng.random((2, n, PER_IMAGE)) * room).astype(int))
    level = rng.integers(100, 256, (n, PER_IMAGE), dtype=np.uint8)
    cells = np.zeros((n, GRID * GRID, CELL, CELL), np.uint8)
    cells[np.arange(n)[:, None], slots] = tiles()[types, size, dy, dx] * level[..., None, None]
    x = cells.reshape(n, GRID, GRID, CELL, CELL).transpose(0, 1, 3, 2, 4).reshape(n, 1, GRID * CELL, GRID * CELL)
    label = pair * MAX_FIRST + first - 1
    return {"x": torch.from_numpy(x), "pair": torch.from_numpy(label),
            "counts": torch.from_numpy(pair_to_counts(label).astype(np.float32))}


def masks(size: int) -> np.ndarray:
    """(6, size, size) bool: each type's filled shape; mirror pairs are exact mirror images."""
    c = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    v, u = np.meshgrid(c, c, indexing="ij")  # v down, u right
    up = np.abs(u) <= (v + 1) / 2 + 1 / size  # apex at the top; the margin keeps a 1-2 px tip
    left = up.T
    return np.stack([np.ones_like(up), u**2 + v**2 <= 1, up, left[:, ::-1], up[::-1], left])


@lru_cache(maxsize=1)
def tiles() -> np.ndarray:
    """(types, sizes, dy, dx, CELL, CELL) uint8 0/1: every shape at every offset inside a cell."""
    span = CELL - min(SIZES)  # offsets 0..span-1
    out = np.zeros((len(TYPES), len(SIZES), span, span, CELL, CELL), np.uint8)
    for si, s in enumerate(SIZES):
        m = masks(s)
        for dy, dx in itertools.product(range(CELL - s), repeat=2):
            out[:, si, dy, dx, dy:dy + s, dx:dx + s] = m
    return out


def pair_to_counts(label: np.ndarray) -> np.ndarray:
    """(N,) pair labels -> (N, 6) per-type counts."""
    pair, first = label // MAX_FIRST, label % MAX_FIRST + 1
    a, b = np.array(PAIRS)[pair].T
    counts = np.zeros((len(label), len(TYPES)), np.int64)
    counts[np.arange(len(label)), a] = first
    counts[np.arange(len(label)), b] = PER_IMAGE - first
    return counts


def counts_to_pair(counts: np.ndarray) -> np.ndarray:
    """(N, 6) counts with exactly two non-zero types -> (N,) pair labels."""
    present = counts > 0
    a = present.argmax(1)
    b = present.shape[1] - 1 - present[:, ::-1].argmax(1)
    index = {p: i for i, p in enumerate(PAIRS)}
    pair = np.array([index[(i, j)] for i, j in zip(a.tolist(), b.tolist())], dtype=np.int64)
    return pair * MAX_FIRST + counts[np.arange(len(counts)), a] - 1
