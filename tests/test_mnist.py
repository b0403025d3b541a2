"""The `mnist` reader: plain and gzipped idx files, the folders it searches, torchvision's download,
and the test-set-only fallback (a deterministic stratified split plus a note for the report)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import DATASETS
from bench.data.mnist import FILES, read_idx

mnist = DATASETS.get("mnist")


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format: 0, 0, type 8 (unsigned byte), ndim, big-endian dims, then the bytes."""
    data = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def fake_split(folder: Path, prefix: str, n: int, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    """n images whose pixel (0, 0) is the image's index, digits 0..9 equally often."""
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)
    digits = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(folder / (FILES[f"{prefix}_x"] + ext), images)
    write_idx(folder / (FILES[f"{prefix}_y"] + ext), digits)
    return images, digits


@pytest.mark.parametrize("train_gz", [False, True])
def test_reads_plain_and_gzipped_idx_files(tmp_path, train_gz):
    raw = tmp_path / "MNIST" / "raw"
    train_x, train_y = fake_split(raw, "train", 60, gz=train_gz)
    test_x, test_y = fake_split(raw, "test", 30, gz=not train_gz)
    pool = mnist(tmp_path, False)
    assert torch.equal(pool.train.x, torch.from_numpy(train_x)[:, None])
    assert torch.equal(pool.test.x, torch.from_numpy(test_x)[:, None])
    assert pool.train.y["digit"].tolist() == train_y.tolist()
    assert pool.test.y["parity"].tolist() == (test_y % 2).tolist()
    assert pool.notes == [] and pool.specs["parity"].class_names == ("even", "odd")


def test_test_set_alone_is_split_deterministically_and_noted(tmp_path):
    _, digits = fake_split(tmp_path / "mnist-test", "test", 200, gz=True)
    pool = mnist(tmp_path, False, test_fraction=0.25)
    train_ids, test_ids = pool.train.x[:, 0, 0, 0].tolist(), pool.test.x[:, 0, 0, 0].tolist()
    assert sorted(train_ids + test_ids) == list(range(200))  # a partition of the 200 images
    assert len(test_ids) == 50 and pool.test.y["digit"].bincount().tolist() == [5] * 10  # stratified
    assert pool.train.y["digit"].tolist() == digits[train_ids].tolist()  # labels travel with images
    assert len(pool.notes) == 1 and "150 train / 50 test" in pool.notes[0] and "test set" in pool.notes[0]
    again = mnist(tmp_path, False, test_fraction=0.25)
    assert torch.equal(again.test.x, pool.test.x)


def test_missing_files_name_every_folder_searched(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        mnist(tmp_path, False)
    for folder in (tmp_path / "MNIST" / "raw", tmp_path / "mnist", tmp_path / "mnist-test", tmp_path):
        assert str(folder) in str(err.value)
    assert "download: true" in str(err.value)


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision

    calls = []

    class FakeMNIST:  # what torchvision's download leaves behind: the four files in root/MNIST/raw
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            fake_split(Path(root) / "MNIST" / "raw", "train", 20, gz=False)
            fake_split(Path(root) / "MNIST" / "raw", "test", 10, gz=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    pool = mnist(tmp_path, True)
    assert calls == [(str(tmp_path), True, True)]
    assert len(pool.train) == 20 and len(pool.test) == 10 and pool.notes == []


def test_bad_input(tmp_path):
    (tmp_path / FILES["test_x"]).write_bytes(b"not an idx file")
    (tmp_path / FILES["test_y"]).write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="not an idx file"):
        mnist(tmp_path, False)
    with pytest.raises(ValueError, match="test_fraction"):
        mnist(tmp_path, False, test_fraction=1.0)


def test_real_mnist_test_set():
    folder = Path(os.environ.get("BENCH_DATA_DIR", "/nonexistent")) / "mnist-test"
    if not (folder / (FILES["test_x"] + ".gz")).exists():
        pytest.skip("the real MNIST test set is not under BENCH_DATA_DIR/mnist-test")
    labels = read_idx(folder / (FILES["test_y"] + ".gz"))
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # MNIST's well-known first test labels
    pool = mnist(folder.parent, False)
    assert (len(pool.train), len(pool.test)) == (8000, 2000) and len(pool.notes) == 1
    assert pool.train.x.shape[1:] == (1, 28, 28)
    assert 25 < pool.train.x.float().mean() < 40  # MNIST's mean intensity is about 33 / 255
    assert pool.test.y["digit"].bincount().min() > 150


def test_smoke_suite_runs_end_to_end_and_reports_the_note(run_suite, tmp_path, monkeypatch):
    fake_split(tmp_path / "data" / "mnist-test", "test", 400, gz=True)  # no training files
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    records, report = run_suite("smoke_mnist")
    assert sorted(r["strategy"] for r in records) == ["cross_stitch", "hard_share", "stl", "stl"]
    assert all(r["status"] == "done" and len(r["notes"]) == 1 for r in records)
    assert "> Note: MNIST training files not found" in report
