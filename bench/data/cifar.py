"""CIFAR-10 with two tasks: `class10` (the 10 classes) and `animal` (binary; vehicles are 0).

Looks in the data root, in order, for torchvision's `cifar-10-batches-py/`, its
`cifar-10-python.tar.gz`, or an image-folder tree `train/<class>/*.jpg`, `test/<class>/*.jpg`
(as a folder `cifar10-jpeg/` or `cifar10/`, or a `.tar.gz` of either name). Decodes once and
caches the uint8 tensors; with `download: true` and nothing found, uses torchvision's download.

Label maps: a mirrored or slightly rotated photo shows the same object, so both tasks keep their
labels under hflip and rotate; vertical flips and quarter turns are not declared (an upside-down
scene is not what CIFAR-10's classes are).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.augment import keep
from bench.data import Pool, Split, cached, dataset
from bench.kinds.classification import Binary, Multiclass

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
VEHICLES = (0, 1, 8, 9)
FOLDER_NAMES = ("cifar10-jpeg", "cifar10")


@dataset("cifar10", tasks={"class10": "multiclass", "animal": "binary"},
         label_maps={t: {"hflip": keep, "rotate": keep} for t in ("class10", "animal")})
def cifar10(root: Path, download: bool) -> Pool:
    source = find_source(root)
    if source is None and download:
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        source = find_source(root)
    if source is None:
        raise FileNotFoundError(
            "CIFAR-10 not found. Looked for: " + ", ".join(str(p) for p in candidates(root))
            + ". Set BENCH_DATA_DIR to a folder holding one of them, or set `download: true` "
            "on the dataset in the suite."
        )
    arrays = cached_decode(source, root)
    return Pool(
        train=_split(arrays["train_x"], arrays["train_y"]),
        test=_split(arrays["test_x"], arrays["test_y"]),
        specs={
            "class10": Multiclass(name="class10", classes=10, class_names=CLASSES),
            "animal": Binary(name="animal", class_names=("non-animal", "animal")),
        },
        stratify="class10",
    )


def _split(x: torch.Tensor, labels: torch.Tensor) -> Split:
    animal = torch.ones_like(labels)
    animal[torch.isin(labels, torch.tensor(VEHICLES))] = 0
    return Split(x, {"class10": labels, "animal": animal})


def candidates(root: Path) -> list[Path]:
    out = [root / "cifar-10-batches-py", root / "cifar-10-python.tar.gz"]
    for name in FOLDER_NAMES:
        out += [root / name, root / f"{name}.tar.gz"]
    return out


def find_source(root: Path) -> Path | None:
    return next((p for p in candidates(root) if p.exists()), None)


def cached_decode(source: Path, root: Path) -> dict[str, torch.Tensor]:
    """Decode `source` once; later calls load the cached tensors (about a second)."""
    stat = source.stat()
    return cached(root, "cifar10", f"{source.resolve()}:{stat.st_size}:{int(stat.st_mtime)}", lambda: decode(source))


def decode(source: Path) -> dict[str, torch.Tensor]:
    name = source.name
    if name == "cifar-10-batches-py":
        return _from_batches(lambda f: (source / f).read_bytes())
    if name == "cifar-10-python.tar.gz":
        with tarfile.open(source) as tar:
            return _from_batches(lambda f: tar.extractfile(f"cifar-10-batches-py/{f}").read())
    return _from_image_files(_image_files(source))


def _from_batches(read) -> dict[str, torch.Tensor]:
    def load(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batches = [pickle.loads(read(f), encoding="latin1") for f in files]
        x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        y = np.concatenate([b["labels"] for b in batches])
        return torch.from_numpy(x), torch.from_numpy(y).long()

    train_x, train_y = load([f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = load(["test_batch"])
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def _image_files(source: Path) -> dict[tuple[str, int, str], torch.Tensor]:
    """(split, class index, file name) -> encoded image bytes (uint8), from a folder tree or a .tar.gz."""
    files = {}
    if source.is_dir():
        for path in source.glob("*/*/*"):
            _add(files, path.relative_to(source).parts, lambda p=path: bytearray(p.read_bytes()))
    else:
        # Decompress once and slice members out of the buffer: ~4x faster than extractfile() per member.
        data = bytearray(gzip.decompress(source.read_bytes()))
        view = memoryview(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar:
                if m.isfile():
                    _add(files, Path(m.name).parts, lambda m=m: view[m.offset_data:m.offset_data + m.size])
    if not files:
        raise FileNotFoundError(f"{source}: no train/<class>/*.jpg or test/<class>/*.jpg images inside")
    return files


def _add(files: dict, parts: tuple[str, ...], read) -> None:
    parts = parts[-3:]  # tolerate one wrapping folder
    if len(parts) == 3 and parts[0] in ("train", "test") and parts[1] in CLASSES:
        files[(parts[0], CLASSES.index(parts[1]), parts[2])] = torch.frombuffer(read(), dtype=torch.uint8)


def _from_image_files(files: dict[tuple[str, int, str], torch.Tensor]) -> dict[str, torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_image

    def decode_chunk(chunk: list[torch.Tensor]) -> list[torch.Tensor]:  # libjpeg-turbo; releases the GIL
        return [decode_image(b, mode=ImageReadMode.RGB) for b in chunk]

    out, workers = {}, os.cpu_count() or 1
    # torchvision >= 0.29 flags its decoders as deprecated in favour of torchcodec; they still work,
    # and one extra dependency for 32x32 JPEGs is not worth it. Revisit when they are removed.
    warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
    for split in ("train", "test"):
        keys = sorted(k for k in files if k[0] == split)
        blobs = [files[k] for k in keys]
        chunks = [blobs[i:i + 1024] for i in range(0, len(blobs), 1024)]
        with ThreadPoolExecutor(workers) as pool:
            images = [im for chunk in pool.map(decode_chunk, chunks) for im in chunk]
        out[f"{split}_x"] = torch.stack(images)  # (N, 3, H, W) uint8
        out[f"{split}_y"] = torch.tensor([k[1] for k in keys], dtype=torch.long)
    return out
