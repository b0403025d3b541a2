"""Label maps for the augmentation pipeline (`bench.augment.LabelMaps`), one declaration per dataset.

Staging file: each block belongs in its dataset's module (`bench/data/<name>.py`), where the integrator
moves it and hands it to the Pool in place of today's `flip`. Every map is derived from the dataset's
generator and tested against re-rendered or re-detected pixels in tests/test_augment.py.

Orientation conventions (what `bench.augment` passes as `did`): flips a bool per image; rot90 the
counter-clockwise quarter turns 0..3 of the displayed image (row 0 at the top); rotate degrees.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from bench.augment import LabelMaps, keep
from bench.data import freq3 as F
from bench.data import shapes as S


# ---- shapes: a flip or quarter turn permutes the triangle types ----------------------------------
# type index -> type index after the op; TYPES = square, circle, triangle up / right / down / left
SHAPES_HFLIP = S.MIRROR  # (0, 1, 2, 5, 4, 3): right <-> left
SHAPES_VFLIP = (0, 1, 4, 3, 2, 5)  # up <-> down
SHAPES_ROT90 = (0, 1, 5, 2, 3, 4)  # one counter-clockwise quarter turn: up -> left -> down -> right -> up


@lru_cache(maxsize=None)
def _shape_tables(perm: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """For a type permutation (type -> type after the op): the new `pair` label of every class (135,)
    and, per output column, the input column of `counts` (6,)."""
    source = np.argsort(perm)  # new counts[j] = old counts[source[j]]
    pairs = S.counts_to_pair(S.pair_to_counts(np.arange(S.CLASSES))[:, source])
    return torch.from_numpy(pairs), torch.from_numpy(source)


def _power(perm: tuple[int, ...], k: int) -> tuple[int, ...]:
    out = tuple(range(len(perm)))
    for _ in range(k):
        out = tuple(perm[i] for i in out)
    return out


def _shapes_pair(perm: tuple[int, ...]):
    def move(y: torch.Tensor, did: torch.Tensor) -> torch.Tensor:
        return torch.where(did, _shape_tables(perm)[0].to(y.device)[y], y)
    return move


def _shapes_counts(perm: tuple[int, ...]):
    def move(y: torch.Tensor, did: torch.Tensor) -> torch.Tensor:
        return torch.where(did[:, None], y[:, _shape_tables(perm)[1].to(y.device)], y)
    return move


def _shapes_pair_rot90(y: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    table = torch.stack([_shape_tables(_power(SHAPES_ROT90, k))[0] for k in range(4)]).to(y.device)  # (4, 135)
    return table[turns, y]


def _shapes_counts_rot90(y: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    source = torch.stack([_shape_tables(_power(SHAPES_ROT90, k))[1] for k in range(4)]).to(y.device)  # (4, 6)
    return y.gather(1, source[turns])


SHAPES: LabelMaps = {
    "pair": {"hflip": _shapes_pair(SHAPES_HFLIP), "vflip": _shapes_pair(SHAPES_VFLIP), "rot90": _shapes_pair_rot90},
    "counts": {"hflip": _shapes_counts(SHAPES_HFLIP), "vflip": _shapes_counts(SHAPES_VFLIP),
               "rot90": _shapes_counts_rot90},
}


# ---- freq3: the grating's orientation theta = k * 22.5 deg, in (u right, v down) ----------------
# hflip: u -> -u gives theta -> 180 - theta; vflip: v -> -v gives theta -> -theta = 180 - theta (a
# grating repeats every 180 deg): both k -> (8 - k) % 8. A quarter turn adds 90 deg: k -> k + 4.
# Glyphs (`a`) are all mirror-symmetric left-right, but the triangle and the tee are not top-bottom
# symmetric, and the triangle, bar and tee change under a quarter turn: `a` declares hflip only.
def _freq3_mirror(y: torch.Tensor, did: torch.Tensor) -> torch.Tensor:
    return torch.where(did, F.mirror_b(y), y)


def _freq3_rot90(y: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    o, f = y // len(F.FREQUENCIES), y % len(F.FREQUENCIES)
    return (o + 4 * turns) % F.ORIENTATIONS * len(F.FREQUENCIES) + f


FREQ3: LabelMaps = {
    "a": {"hflip": keep},
    "b": {"hflip": _freq3_mirror, "vflip": _freq3_mirror, "rot90": _freq3_rot90},
    "c": {"hflip": keep, "vflip": keep, "rot90": keep},  # RMS contrast: a pixel permutation keeps it
}


# ---- synthetic: one square in quadrant (row, col) = divmod(q, 2) ----------------------------------
QUADRANT_HFLIP = (1, 0, 3, 2)  # quadrant -> quadrant after the op; 0 TL, 1 TR, 2 BL, 3 BR
QUADRANT_VFLIP = (2, 3, 0, 1)
QUADRANT_ROT90 = (2, 0, 3, 1)  # counter-clockwise: TL -> BL -> BR -> TR -> TL


def _quadrant_flip(table: tuple[int, ...]):
    def move(y: torch.Tensor, did: torch.Tensor) -> torch.Tensor:
        return torch.where(did, torch.tensor(table, device=y.device)[y], y)
    return move


def _quadrant_rot90(y: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    table = torch.tensor([_power(QUADRANT_ROT90, k) for k in range(4)], device=y.device)  # (4, 4)
    return table[turns, y]


def _top_vflip(y: torch.Tensor, did: torch.Tensor) -> torch.Tensor:
    return torch.where(did, 1 - y, y)


SYNTHETIC: LabelMaps = {
    "quadrant": {"hflip": _quadrant_flip(QUADRANT_HFLIP), "vflip": _quadrant_flip(QUADRANT_VFLIP),
                 "rot90": _quadrant_rot90},
    "top": {"hflip": keep, "vflip": _top_vflip},  # no rot90: `top` alone does not say where a turn takes the square
    "brightness": {"hflip": keep, "vflip": keep, "rot90": keep},
}


# ---- natural images -----------------------------------------------------------------------------
CIFAR10: LabelMaps = {t: {"hflip": keep, "rotate": keep} for t in ("class10", "animal")}
MNIST: LabelMaps = {}  # a mirrored or turned digit is not a digit (6 / 9); small rotations need label_invariant

DECLARED: dict[str, LabelMaps] = {"shapes": SHAPES, "freq3": FREQ3, "synthetic": SYNTHETIC,
                                  "cifar10": CIFAR10, "mnist": MNIST}
