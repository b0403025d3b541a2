"""`mnist`: handwritten digits with two tasks (seed 004): `digit` (10 classes) and `parity` (binary, odd = 1).

Reads torchvision's raw idx files (`train-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, ..., each
plain or `.gz`) from the first of `root/MNIST/raw`, `root/mnist`, `root/mnist-test`, `root` that
holds it; with `download: true` and files missing, uses torchvision's download into root/MNIST/raw.
When only the 10,000-image test set is there, that set is the whole pool, split deterministically
(stratified by digit) into train and test by `test_fraction`, and the report says so.

Label maps: none. A mirrored or turned digit is not a digit (6 / 9), so the augmentation pipeline
refuses flips and quarter turns here; small rotations need the op's `label_invariant: true`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from bench.data import Pool, Split, cached, carve, dataset, files_key
from bench.kinds.classification import Binary, Multiclass

FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
SPLIT_SEED = 0  # the fixed split of the test set when it is the whole pool


@dataset("mnist", tasks={"digit": "multiclass", "parity": "binary"})
def mnist(root: Path, download: bool, *, test_fraction: float = 0.2) -> Pool:
    if not 0 < test_fraction < 1:
        raise ValueError(f"datasets.mnist.options.test_fraction: {test_fraction} must lie strictly between 0 and 1")
    paths = mnist_files(root, download)
    key = "mnist:" + files_key(paths.values())
    arrays = cached(root, "mnist", key, lambda: {k: torch.from_numpy(read_idx(p)) for k, p in paths.items()})
    test = _split(arrays["test_x"], arrays["test_y"])
    notes = []
    if "train_x" in arrays and "train_y" in arrays:
        train = _split(arrays["train_x"], arrays["train_y"])
    else:
        n_test = int(round(test_fraction * len(test)))
        train, test = carve(test, test.y["digit"], n_test, torch.Generator().manual_seed(SPLIT_SEED))
        notes.append(f"MNIST training files not found under {root}: the pool is the 10,000-image MNIST test set, "
                     f"split {len(train):,} train / {len(test):,} test (stratified by digit, fixed seed). "
                     "Not comparable with results on the standard 60,000 / 10,000 split.")
    return Pool(
        train=train, test=test, notes=notes, stratify="digit",
        specs={"digit": Multiclass(name="digit", classes=10, class_names=tuple("0123456789")),
               "parity": Binary(name="parity", class_names=("even", "odd"))},
    )


def mnist_files(root: Path, download: bool, needed_by: str = "") -> dict[str, Path]:
    """The idx files found (see `find_files`), after torchvision's download when allowed and some are
    missing; FileNotFoundError listing every folder looked in when the test set is not there."""
    paths = find_files(root)
    if download and len(paths) < len(FILES):
        import torchvision

        torchvision.datasets.MNIST(str(root), train=True, download=True)
        paths = find_files(root)
    if "test_x" not in paths or "test_y" not in paths:
        raise FileNotFoundError(
            f"MNIST not found{f' ({needed_by} needs it)' if needed_by else ''}: looked for {FILES['test_x']}[.gz] "
            f"and {FILES['test_y']}[.gz] in " + ", ".join(str(d) for d in folders(root))
            + ". Set BENCH_DATA_DIR to a folder holding them, or set `download: true` on the dataset in the suite."
        )
    return paths


def folders(root: Path) -> list[Path]:
    return [root / "MNIST" / "raw", root / "mnist", root / "mnist-test", root]


def find_files(root: Path) -> dict[str, Path]:
    """Role (train_x, ..., test_y) -> the first plain or gzipped idx file found for it."""
    found = {}
    for role, name in FILES.items():
        hits = (d / f for d in folders(root) for f in (name, f"{name}.gz") if (d / f).is_file())
        path = next(hits, None)
        if path is not None:
            found[role] = path
    return found


def read_idx(path: Path) -> np.ndarray:
    """An idx file of unsigned bytes (the MNIST format), plain or gzipped, as an array of its shape."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an idx file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def _split(images: torch.Tensor, digits: torch.Tensor) -> Split:
    digits = digits.long()
    return Split(images[:, None], {"digit": digits, "parity": digits % 2})  # (N, 1, 28, 28) uint8
