"""Seed 003's data: the digit-scene generator (deterministic, boxes and masks agree with the pixels),
the disjoint split of its source digits, and the Fashion-MNIST reader and canvas placement."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import digit_scenes as ds
from bench.data import fashion_mnist as fm
from bench.data.mnist import FILES, read_idx
from test_mnist import write_idx

REAL = Path(os.environ.get("BENCH_DATA_DIR", "/nonexistent"))


def fake_digits(k: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k 28x28 blobs of 4 px blocks (at least one), with a faint 1 px fringe as MNIST's anti-aliasing has."""
    rng = np.random.default_rng(seed)
    on = rng.random((k, 5, 5)) < 0.4
    on[:, 2, 2] = True
    digits = np.zeros((k, 28, 28), np.uint8)
    digits[:, 4:24, 4:24] = np.kron(on, np.ones((4, 4), bool)) * rng.integers(150, 256, (k, 1, 1))
    fringe = (np.roll(digits, 1, 2) > 0) & (digits == 0)
    digits[fringe] = 40
    return digits, np.arange(k) % 10


def real_digits() -> tuple[np.ndarray, np.ndarray]:
    folder = REAL / "mnist-test"
    if not (folder / f"{FILES['test_x']}.gz").exists():
        pytest.skip("the real MNIST test set is not under BENCH_DATA_DIR/mnist-test")
    return read_idx(folder / f"{FILES['test_x']}.gz")[:500], read_idx(folder / f"{FILES['test_y']}.gz")[:500]


@pytest.fixture(params=["fake", "real"])
def digits(request):
    return fake_digits() if request.param == "fake" else real_digits()


# ---- the generator ---------------------------------------------------------------------------------
def test_layouts_and_determinism():
    d, l = fake_digits()
    a = ds.generate_scenes(d, l, 50, canvas=48, seed=3, stream=0)
    assert a["x"].shape == (50, 1, 48, 48) and a["x"].dtype == torch.uint8
    assert a["mask"].shape == (50, 48, 48) and a["mask"].dtype == torch.int64
    assert a["boxes"].shape == (50, 4, 5) and a["boxes"].dtype == torch.float32
    assert a["source"].shape == (50, 4) and a["source"].dtype == torch.int64
    again = ds.generate_scenes(d, l, 50, canvas=48, seed=3, stream=0)
    assert all(torch.equal(a[k], again[k]) for k in a)
    other = ds.generate_scenes(d, l, 50, canvas=48, seed=3, stream=1)
    assert not torch.equal(a["x"], other["x"])


def test_counts_padding_and_overlap(digits):
    d, l = digits
    s = ds.generate_scenes(d, l, 300, seed=1, max_overlap=0.2)
    boxes, valid = s["boxes"], s["boxes"][..., 4] >= 0
    counts = valid.sum(1)
    assert counts.min() == 1 and counts.max() == 4 and set(counts.tolist()) == {1, 2, 3, 4}
    assert torch.equal(valid, torch.arange(4) < counts[:, None])  # valid rows first
    assert (boxes[~valid] == torch.tensor([0, 0, 0, 0, -1.0])).all() and (s["source"][~valid] == -1).all()
    assert torch.equal(boxes[valid][:, 4].long(), torch.from_numpy(l[s["source"][valid].numpy()]).long())
    for b, v in zip(boxes, valid):  # pairwise: intersection <= 0.2 x the smaller box
        b = b[v]
        lo, hi = torch.maximum(b[:, None, :2], b[None, :, :2]), torch.minimum(b[:, None, 2:4], b[None, :, 2:4])
        inter = (hi - lo).clamp(min=0).prod(-1)
        area = (b[:, 2:4] - b[:, :2]).prod(-1)
        off = ~torch.eye(len(b), dtype=torch.bool)
        assert (inter[off] <= 0.2 * torch.minimum(area[:, None], area[None, :])[off] + 1e-6).all()


def test_boxes_and_masks_agree_with_pixels(digits):
    d, l = digits
    s = ds.generate_scenes(d, l, 200, seed=2)
    x, mask, boxes = s["x"][:, 0], s["mask"], s["boxes"]
    assert torch.equal(mask > 0, x >= ds.FOREGROUND)  # ink is exactly the foreground
    assert mask.max() <= 10
    rows, cols = torch.arange(64)[:, None], torch.arange(64)[None, :]
    for i in range(len(x)):
        covered = torch.zeros(64, 64, dtype=torch.bool)
        for x1, y1, x2, y2, c in boxes[i][boxes[i, :, 4] >= 0].long().tolist():
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
            assert (mask[i][inside] == c + 1).sum() > 0  # the box holds its digit's mask pixels
            covered |= inside & (mask[i] == c + 1)
        assert torch.equal(covered, mask[i] > 0)  # every foreground pixel lies in a box of its class


def test_a_lone_digit_gets_the_tight_box_of_its_ink(digits):
    d, l = digits
    s = ds.generate_scenes(d, l, 100, max_digits=1, seed=4)
    ink = s["x"][:, 0] >= ds.FOREGROUND
    ys, xs = ink.any(2), ink.any(1)
    for i in range(100):
        y, x = ys[i].nonzero().squeeze(1), xs[i].nonzero().squeeze(1)
        assert s["boxes"][i, 0].tolist() == [x[0], y[0], x[-1] + 1, y[-1] + 1, l[s["source"][i, 0]]]


def test_scaling_keeps_flat_ink_flat_and_size_follows_scale():
    d = np.zeros((2, 28, 28), np.uint8)
    d[:, 4:24, 8:20] = 200
    out = ds.scale_digits(d, np.array([0.5, 1.5]), 42)
    box = ds.tight_boxes(out >= ds.FOREGROUND)  # y0, x0, y1, x1
    assert out[0, 5, 7] == 200 and out[1, 15, 20] == 200  # interiors keep their level
    assert (box[0, 2:] - box[0, :2]).tolist() == [10, 6]  # 20 x 12 px halved
    assert (box[1, 2:] - box[1, :2]).tolist() == [30, 18]  # and enlarged 1.5 x
    assert out[0, 16:].max() == 0 and out[0, :, 16:].max() == 0  # nothing past the scaled digit


def test_bad_options_are_refused():
    d, l = fake_digits()
    with pytest.raises(ValueError, match="scale"):
        ds.generate_scenes(d, l, 5, canvas=32, scale=(1.0, 1.5))
    with pytest.raises(ValueError, match="min_digits"):
        ds.generate_scenes(d, l, 5, min_digits=3, max_digits=2)
    with pytest.raises(ValueError, match="28, 28"):
        ds.generate_scenes(d[:, :20], l, 5)


# ---- the source split ------------------------------------------------------------------------------
def test_source_sets_are_disjoint_stratified_and_test_scenes_use_only_test_sources():
    labels = np.repeat(np.arange(10), 100)
    sets = ds.split_sources(labels, test_fraction=0.2, seed=0)
    assert sorted(sets) == sorted(ds.SETS)
    everything = np.concatenate(list(sets.values()))
    assert len(everything) == len(set(everything.tolist())) == 1000  # a partition: no index in two sets
    assert [len(sets[k]) for k in ds.SETS] == [400, 400, 100, 100]
    assert all((np.bincount(labels[sets[k]]) == len(sets[k]) // 10).all() for k in ds.SETS)
    assert np.array_equal(sets["det_test"], ds.split_sources(labels, test_fraction=0.2, seed=0)["det_test"])
    d, _ = fake_digits(1000)
    test = sets["det_test"]
    scenes = ds.generate_scenes(d[test], labels[test], 200, seed=0, stream=1)
    used = test[scenes["source"][scenes["source"] >= 0].numpy()]  # back to indices of the source pool
    assert set(used.tolist()) <= set(test.tolist())
    assert not set(used.tolist()) & set(np.concatenate([sets["seg_train"], sets["det_train"]]).tolist())


def test_load_sources_from_the_test_set_alone_and_from_full_mnist(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("test", 200), ("train", 400)):
        folder = tmp_path / ("only-test" if split == "test" else "full") / "mnist"
        write_idx(folder / f"{FILES[f'{split}_x']}.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / FILES[f"{split}_y"], (np.arange(n) % 10).astype(np.uint8))
    sets, notes = ds.load_sources(tmp_path / "only-test")
    assert [len(sets[k][0]) for k in ds.SETS] == [80, 80, 20, 20] and "test set" in notes[0]
    (tmp_path / "full" / "mnist" / f"{FILES['test_x']}.gz").write_bytes(
        (tmp_path / "only-test" / "mnist" / f"{FILES['test_x']}.gz").read_bytes())
    (tmp_path / "full" / "mnist" / FILES["test_y"]).write_bytes((tmp_path / "only-test" / "mnist" / FILES["test_y"]).read_bytes())
    sets, notes = ds.load_sources(tmp_path / "full")
    assert [len(sets[k][0]) for k in ds.SETS] == [200, 200, 100, 100] and notes == []
    with pytest.raises(FileNotFoundError, match="mnist-test"):
        ds.load_sources(tmp_path / "empty")


# ---- Fashion-MNIST ---------------------------------------------------------------------------------
def fake_fashion(folder: Path, gz: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {"train_x": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), "train_y": np.arange(30, dtype=np.uint8) % 10,
              "test_x": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), "test_y": np.arange(20, dtype=np.uint8) % 10}
    for role, a in arrays.items():
        write_idx(folder / (FILES[role] + (".gz" if gz else "")), a)
    return arrays


@pytest.mark.parametrize("layout,gz", [("fashion-mnist", True), ("FashionMNIST/raw", False), (".", True)])
def test_fashion_reader_finds_plain_and_gzipped_files(tmp_path, layout, gz):
    arrays = fake_fashion(tmp_path / layout, gz)
    got = fm.load(tmp_path)
    assert torch.equal(got["train_x"], torch.from_numpy(arrays["train_x"])[:, None])
    assert got["test_y"].dtype == torch.int64 and got["test_y"].tolist() == arrays["test_y"].tolist()


def test_fashion_missing_files_name_every_folder_and_download_uses_torchvision(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        fm.load(tmp_path)
    for folder in fm.folders(tmp_path):
        assert str(folder) in str(err.value)
    import torchvision

    calls = []

    class FakeFashionMNIST:  # what torchvision's download leaves: all four files in root/FashionMNIST/raw
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            fake_fashion(Path(root) / "FashionMNIST" / "raw", gz=False)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    assert len(fm.load(tmp_path, download=True)["train_x"]) == 30 and calls == [(str(tmp_path), True, True)]


def test_real_fashion_mnist():
    if not (REAL / "fashion-mnist" / f"{FILES['train_x']}.gz").exists():
        pytest.skip("the real Fashion-MNIST is not under BENCH_DATA_DIR/fashion-mnist")
    a = fm.load(REAL)
    assert a["train_x"].shape == (60000, 1, 28, 28) and a["test_x"].shape == (10000, 1, 28, 28)
    assert a["train_y"][:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the dataset's well-known first labels
    assert a["train_y"].bincount().tolist() == [6000] * 10 and a["test_y"].bincount().tolist() == [1000] * 10
    assert 65 < a["train_x"].float().mean() < 80  # Fashion-MNIST's mean intensity is about 73 / 255


def test_placement_on_the_canvas():
    images = torch.randint(1, 256, (50, 1, 28, 28), dtype=torch.uint8)
    centred = fm.place_on_canvas(images, 64, seed=None)
    assert torch.equal(centred[:, :, 18:46, 18:46], images) and centred.sum() == images.sum()
    placed = fm.place_on_canvas(images, 64, seed=5)
    assert torch.equal(placed, fm.place_on_canvas(images, 64, seed=5))
    for img, out in zip(images, placed):  # every pixel > 0, so the non-zero region is the image
        ys, xs = (out[0] > 0).any(1).nonzero().squeeze(1), (out[0] > 0).any(0).nonzero().squeeze(1)
        assert torch.equal(out[:, ys[0]:ys[0] + 28, xs[0]:xs[0] + 28], img)
    assert len({tuple((p[0] > 0).nonzero()[0].tolist()) for p in placed}) > 10  # positions vary
    with pytest.raises(ValueError, match="fit"):
        fm.place_on_canvas(images, 20)


# ---- the registered datasets -------------------------------------------------------------------------
def write_fake_sources(root: Path, digits: int = 200, fashion: tuple[int, int] = (60, 20)) -> None:
    """A data root with a fake MNIST test set (blob digits) in mnist-test/ and a fake Fashion-MNIST."""
    d, labels = fake_digits(digits)
    write_idx(root / "mnist-test" / f"{FILES['test_x']}.gz", d)
    write_idx(root / "mnist-test" / f"{FILES['test_y']}.gz", labels.astype(np.uint8))
    rng = np.random.default_rng(2)
    for split, n in zip(("train", "test"), fashion):
        write_idx(root / "fashion-mnist" / f"{FILES[f'{split}_x']}.gz", rng.integers(1, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / "fashion-mnist" / f"{FILES[f'{split}_y']}.gz", (np.arange(n) % 10).astype(np.uint8))


def test_digit_scenes_dataset_labels_each_task_on_scenes_of_its_own_digits(tmp_path, monkeypatch):
    from bench.config import DatasetConfig
    from bench.data import load_taskset

    write_fake_sources(tmp_path)
    calls, real = {}, ds.generate_scenes  # calls: stream -> the source digits the generator drew from

    def recording(digits, labels, n, **options):
        calls[options["stream"]] = digits
        return real(digits, labels, n, **options)

    monkeypatch.setattr(ds, "generate_scenes", recording)
    cfg = DatasetConfig(name="digit_scenes", tasks=("seg", "det"), val_size=10,
                        options={"n_train": 30, "n_test": 12, "canvas": 48})
    data = load_taskset(cfg, root=tmp_path)
    rows = {s: {r.tobytes() for r in d} for s, d in calls.items()}  # fake digits are all distinct
    assert sorted(rows) == [0, 1, 2, 3] and sum(map(len, rows.values())) == len(set.union(*rows.values())) == 200
    assert [len(rows[k]) for k in range(4)] == [80, 80, 20, 20]  # seg / det train, seg / det test (test_fraction 0.2)
    seg, det = (data.train.labelled[t] for t in ("seg", "det"))
    assert len(data.train) == 50 and seg.sum() == det.sum() == 25 and not (seg & det).any() and (seg | det).all()
    assert data.val.labelled["seg"].sum() == 5 and len(data.test) == 24 and data.test.labelled["det"].sum() == 12
    x, masks, boxes = data.train.x[:, 0], data.train.y["seg"], data.train.y["det"]
    assert masks.dtype == torch.int64 and masks.shape == (50, 48, 48) and boxes.shape == (50, 4, 5)
    assert torch.equal(masks[seg] > 0, x[seg] >= ds.FOREGROUND) and (masks[det] == 0).all()  # placeholders
    assert (boxes[seg][..., 4] == -1).all() and (boxes[det][:, 0, 4] >= 0).all()
    assert data.specs["det"].image_size == 48 and data.specs["seg"].classes == 11
    assert "scenes composed from real MNIST digits" in data.notes[0] and "not COCO or VOC" in data.notes[0]
    assert cfg.options["n_train"] == 30 and len(load_taskset(cfg, root=tmp_path).train) == 50  # the cached copy


def test_fashion_mnist_dataset_and_the_union_of_seed_003(tmp_path):
    from bench.config import DatasetConfig
    from bench.data import load_taskset

    write_fake_sources(tmp_path)
    fashion = DatasetConfig(name="fashion_mnist", tasks=("clothing",), val_size=10, options={"canvas": 48})
    data = load_taskset(fashion, root=tmp_path)
    assert data.train.x.shape == (50, 1, 48, 48) and len(data.test) == 20 and data.specs["clothing"].kind == "multiclass"
    assert data.val.y["clothing"].bincount().tolist() == [1] * 10  # stratified by class
    assert "real Fashion-MNIST" in data.notes[0]
    scenes = DatasetConfig(name="digit_scenes", tasks=("seg", "det"), val_size=10, options={"n_train": 20, "n_test": 8, "canvas": 48})
    both = load_taskset(DatasetConfig(name="seed003", tasks=("seg", "det", "clothing"), parts=(scenes, fashion)), root=tmp_path)
    labelled = torch.stack([both.train.labelled[t] for t in ("seg", "det", "clothing")])
    assert len(both.train) == 30 + 50 and (labelled.sum(0) == 1).all()  # every image labelled for one task
    assert labelled.sum(1).tolist() == [15, 15, 50]
