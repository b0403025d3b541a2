"""`synthetic`: a tiny learnable dataset generated from a seed, for tests and smoke runs.

Each image is noise plus one bright square in one of four quadrants. Tasks: `quadrant`
(multiclass, 4), `top` (binary: the square is in the top half) and `brightness` (regression:
the square's intensity in [0, 1]).

Label maps (`LABEL_MAPS`): flips and quarter turns move the square to another quadrant; `top`
follows a vertical flip, and is not declared for quarter turns (`top` alone does not say where a
turn takes the square); the brightness stays.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.augment import LabelMaps, keep
from bench.data import Pool, Split, dataset
from bench.kinds.classification import Binary, Multiclass
from bench.kinds.regression import Regression


# quadrant -> quadrant after the op; quadrant q is (row, col) = divmod(q, 2): 0 TL, 1 TR, 2 BL, 3 BR
HFLIP = (1, 0, 3, 2)
VFLIP = (2, 3, 0, 1)
ROT90 = ((0, 1, 2, 3), (2, 0, 3, 1), (3, 2, 1, 0), (1, 3, 0, 2))  # by counter-clockwise quarter turns 0..3


def _quadrant_flip(table: tuple[int, ...]):
    def move(y: torch.Tensor, did: torch.Tensor) -> torch.Tensor:
        return torch.where(did, torch.tensor(table, device=y.device)[y], y)
    return move


def _quadrant_rot90(y: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    return torch.tensor(ROT90, device=y.device)[turns, y]


def _top_vflip(y: torch.Tensor, did: torch.Tensor) -> torch.Tensor:
    return torch.where(did, 1 - y, y)


LABEL_MAPS: LabelMaps = {
    "quadrant": {"hflip": _quadrant_flip(HFLIP), "vflip": _quadrant_flip(VFLIP), "rot90": _quadrant_rot90},
    "top": {"hflip": keep, "vflip": _top_vflip},
    "brightness": {"hflip": keep, "vflip": keep, "rot90": keep},
}


@dataset("synthetic", tasks={"quadrant": "multiclass", "top": "binary", "brightness": "regression"},
         label_maps=LABEL_MAPS)
def synthetic(root: Path, download: bool, *, n_train: int = 512, n_test: int = 256,
              image_size: int = 16, channels: int = 3, seed: int = 0) -> Pool:
    gen = torch.Generator().manual_seed(seed)
    specs = {
        "quadrant": Multiclass(name="quadrant", classes=4,
                               class_names=("top-left", "top-right", "bottom-left", "bottom-right")),
        "top": Binary(name="top", class_names=("bottom", "top")),
        "brightness": Regression(name="brightness", dim=1),
    }
    return Pool(train=_make(n_train, image_size, channels, gen), test=_make(n_test, image_size, channels, gen),
                specs=specs, stratify="quadrant")


def _make(n: int, size: int, channels: int, gen: torch.Generator) -> Split:
    quadrant = torch.randint(0, 4, (n,), generator=gen)
    level = torch.rand(n, generator=gen)
    x = torch.rand(n, channels, size, size, generator=gen) * 0.3
    half = size // 2
    for i in range(n):
        r, c = divmod(int(quadrant[i]), 2)
        x[i, :, r * half + 1:(r + 1) * half - 1, c * half + 1:(c + 1) * half - 1] += 0.3 + 0.7 * level[i]
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return Split(x, {"quadrant": quadrant, "top": (quadrant < 2).long(), "brightness": level.unsqueeze(1)})
