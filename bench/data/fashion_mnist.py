"""`fashion_mnist`: the real Fashion-MNIST (Xiao et al. 2017; 10 clothing classes), read from idx files,
and placed on the scene canvas so seed 003's three tasks share one image size. Registered as the
dataset `fashion_mnist` with one task, `clothing` (multiclass); the decoded files are cached.
Label maps: a mirrored or slightly rotated garment is the same garment (hflip and rotate keep the
label); vertical flips and quarter turns are not declared.

Reads torchvision's file names (`train-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, ..., each plain
or `.gz`) from the first of `root/fashion-mnist`, `root/FashionMNIST/raw` (torchvision's layout),
`root` that holds it; with `download` and files missing, torchvision's FashionMNIST download fills
`root/FashionMNIST/raw`. The same names as MNIST's, so a data root holding both keeps them in
separate folders (the root itself is searched last).

Placement (`place_on_canvas`): each 28x28 image goes to a uniform random integer position on the
canvas, drawn from a seed, rather than the centre. Digits in the scenes appear anywhere on the
canvas, so a centred garment would let "is it in the middle" tell the tasks apart, and a
classifier trained only on centred images would see a narrower input distribution than the
shared backbone does elsewhere. `seed=None` centres instead (for inspection and tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.augment import keep
from bench.data import Pool, Split, cached, dataset, files_key, source_digest
from bench.data.mnist import FILES, read_idx
from bench.kinds.classification import Multiclass

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def folders(root: Path) -> list[Path]:
    return [root / "fashion-mnist", root / "FashionMNIST" / "raw", root]


def find_files(root: Path) -> dict[str, Path]:
    """Role (train_x, ..., test_y) -> the first plain or gzipped idx file found for it."""
    found = {}
    for role, name in FILES.items():
        path = next((d / f for d in folders(root) for f in (name, f"{name}.gz") if (d / f).is_file()), None)
        if path is not None:
            found[role] = path
    return found


def load(root: Path, download: bool = False) -> dict[str, torch.Tensor]:
    """train_x (60000, 1, 28, 28) uint8, train_y (60000,) int64, test_x, test_y (10,000 each)."""
    paths = find_files(root)
    if download and len(paths) < len(FILES):
        import torchvision

        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)  # fetches all four files
        paths = find_files(root)
    if len(paths) < len(FILES):
        missing = ", ".join(f"{FILES[r]}[.gz]" for r in FILES if r not in paths)
        raise FileNotFoundError(
            f"Fashion-MNIST not found: looked for {missing} in " + ", ".join(str(d) for d in folders(root))
            + ". Set BENCH_DATA_DIR to a folder holding them, or set `download: true` on the dataset in the suite."
        )
    arrays = {role: torch.from_numpy(read_idx(path)) for role, path in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or len(x) != len(y) or int(y.max()) >= len(CLASSES):
            raise ValueError(f"Fashion-MNIST {split}: images {tuple(x.shape)} and labels {tuple(y.shape)} "
                             f"(max {int(y.max())}) from {paths[f'{split}_x']} do not match")
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x[:, None], y.long()
    return arrays


def place_on_canvas(images: torch.Tensor, canvas: int, *, seed: int | None = 0, stream: int = 0) -> torch.Tensor:
    """(N, C, h, w) uint8 -> (N, C, canvas, canvas) uint8 on zeros, at seeded random positions (centred if seed is None).

    `stream` separates splits drawn with one seed (train 0, test 1), as in the scene generator.
    """
    n, c, h, w = images.shape
    if h > canvas or w > canvas:
        raise ValueError(f"fashion_mnist: {h}x{w} images do not fit a {canvas} px canvas")
    if seed is None:
        top = np.full(n, (canvas - h) // 2)
        left = np.full(n, (canvas - w) // 2)
    else:
        rng = np.random.default_rng([seed, stream])
        top, left = rng.integers(0, canvas - h + 1, n), rng.integers(0, canvas - w + 1, n)
    rows = torch.from_numpy(top)[:, None] + torch.arange(h)  # (N, h) canvas rows of each image
    cols = torch.from_numpy(left)[:, None] + torch.arange(w)  # (N, w)
    out = torch.zeros(n, c, canvas, canvas, dtype=images.dtype)
    batch = torch.arange(n)[:, None, None, None]
    chans = torch.arange(c)[None, :, None, None]
    out[batch, chans, rows[:, None, :, None], cols[:, None, None, :]] = images
    return out


@dataset("fashion_mnist", tasks={"clothing": "multiclass"}, label_maps={"clothing": {"hflip": keep, "rotate": keep}})
def fashion_mnist(root: Path, download: bool, *, canvas: int = 64, seed: int | None = 0) -> Pool:
    """The 60,000 training and 10,000 test images, each on a black `canvas` px square at a seeded random
    position (`place_on_canvas`; seed null centres them). Suites take a stratified `subset` of them."""
    if download:
        load(root, download=True)  # fetches what is missing before the cache key names the files
    paths = find_files(root)
    key = f"fashion_mnist:{source_digest(__file__)}:{files_key(paths.values())}"
    arrays = cached(root, "fashion_mnist", key, lambda: load(root))
    splits = {name: Split(place_on_canvas(arrays[f"{name}_x"], canvas, seed=seed, stream=stream),
                          {"clothing": arrays[f"{name}_y"]}) for stream, name in enumerate(("train", "test"))}
    where = "a random position" if seed is not None else "the centre"
    note = (f"fashion_mnist: the real Fashion-MNIST (Xiao et al. 2017), 28x28 grayscale photos of 10 kinds of "
            f"clothing, each at {where} of a black {canvas}x{canvas} canvas.")
    return Pool(train=splits["train"], test=splits["test"], notes=[note], stratify="clothing",
                specs={"clothing": Multiclass(name="clothing", classes=10, class_names=CLASSES)})
