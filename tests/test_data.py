"""CIFAR-10 loading (image-folder tar, torchvision batches, nothing found), the decode cache, and the
train / validation / test carving of load_taskset."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config import DatasetConfig
from bench.data import cifar, load_taskset

VEHICLES = [0, 1, 8, 9]  # airplane, automobile, ship, truck


def _count_decodes(monkeypatch) -> list[Path]:
    calls = []
    decode = cifar.decode
    monkeypatch.setattr(cifar, "decode", lambda source: calls.append(source) or decode(source))
    return calls


def _check_cifar_taskset(ts, n_train: int, n_val: int, n_test: int) -> None:
    for split, n in ((ts.train, n_train), (ts.val, n_val), (ts.test, n_test)):
        assert split.x.shape == (n, 3, 32, 32) and split.x.dtype == torch.uint8
        labels = split.y["class10"]
        assert labels.dtype == torch.int64
        # stratified: every class equally often
        assert torch.bincount(labels, minlength=10).tolist() == [n // 10] * 10
        animal = split.y["animal"]
        assert torch.equal(animal == 0, torch.isin(labels, torch.tensor(VEHICLES)))
    assert ts.specs["class10"].classes == 10 and ts.specs["animal"].kind == "binary"
    assert ts.in_channels == 3 and ts.image_size == 32


def test_cifar_from_image_folder_tar(cifar_small_root, monkeypatch):
    cifar_tar_root = cifar_small_root  # 30 train and 10 test real JPEGs per class
    decodes = _count_decodes(monkeypatch)
    cfg = DatasetConfig(name="cifar10", tasks=("class10", "animal"), subset=50, test_subset=30, val_size=10)
    ts = load_taskset(cfg, root=cifar_tar_root)
    _check_cifar_taskset(ts, n_train=40, n_val=10, n_test=30)
    assert decodes == [cifar_tar_root / "cifar10-jpeg.tar.gz"]
    assert ts.train.x.float().std() > 20  # real images, not blank decodes

    again = load_taskset(cfg, root=cifar_tar_root)
    assert len(decodes) == 1  # served from the cache in BENCH_CACHE_DIR
    assert list(Path(os.environ["BENCH_CACHE_DIR"]).glob("cifar10-*.pt"))
    assert torch.equal(again.train.x, ts.train.x) and torch.equal(again.test.y["class10"], ts.test.y["class10"])


def test_missing_cifar_lists_where_it_looked(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        load_taskset(DatasetConfig(name="cifar10", tasks=("class10",)), root=root)
    message = str(err.value)
    for name in ("cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar10-jpeg", "cifar10-jpeg.tar.gz",
                 "cifar10", "cifar10.tar.gz"):
        assert str(root / name) in message, name
    assert "BENCH_DATA_DIR" in message and "download: true" in message


def _write_batches(folder: Path, per_batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """torchvision's cifar-10-batches-py layout: pickled dicts of 'data' (N, 3072) and 'labels'."""
    folder.mkdir()
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        labels = [i % 10 for i in range(per_batch)]
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels, "batch_label": name}))
        written[name] = data
    return written


def test_cifar_from_torchvision_batches(tmp_path, monkeypatch):
    written = _write_batches(tmp_path / "cifar-10-batches-py", per_batch=20, rng=np.random.default_rng(0))
    arrays = cifar.decode(tmp_path / "cifar-10-batches-py")
    # rows are channel-major (1024 R, 1024 G, 1024 B), batches in order 1..5
    expected = np.concatenate([written[f"data_batch_{i}"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(arrays["train_x"].numpy(), expected)
    np.testing.assert_array_equal(arrays["test_x"].numpy(), written["test_batch"].reshape(-1, 3, 32, 32))
    assert arrays["train_y"].tolist() == [i % 10 for i in range(20)] * 5

    decodes = _count_decodes(monkeypatch)
    cfg = DatasetConfig(name="cifar10", tasks=("class10", "animal"), test_subset=10, val_size=20)
    ts = load_taskset(cfg, root=tmp_path)
    _check_cifar_taskset(ts, n_train=80, n_val=20, n_test=10)
    assert decodes == [tmp_path / "cifar-10-batches-py"]


def _images(x: torch.Tensor) -> set[bytes]:
    return {bytes(row) for row in x.flatten(1).numpy()}


def test_validation_split_is_disjoint_and_ignores_cell_seed(tmp_path):
    cfg = DatasetConfig(name="synthetic", tasks=("quadrant", "brightness"), val_size=0.25,
                        options={"n_train": 64, "n_test": 16, "image_size": 8})
    ts = load_taskset(cfg, root=tmp_path)
    assert (len(ts.train), len(ts.val), len(ts.test)) == (48, 16, 16)
    assert not _images(ts.train.x) & _images(ts.val.x)
    assert torch.equal(load_taskset(cfg, root=tmp_path).val.x, ts.val.x)  # same split every load
    assert not torch.equal(load_taskset(cfg, root=tmp_path, split_seed=1).val.x, ts.val.x)
    # statistics come from the train split only
    assert ts.mean[0] == pytest.approx(ts.train.x[:, 0].float().mean().item() / 255, rel=1e-5)
