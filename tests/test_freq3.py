"""The `freq3` generator: determinism, balanced labels, `b` and `c` readable from the image's
frequency content alone (the claim the dual-stream question rests on), and a label-aware flip."""

from __future__ import annotations

import numpy as np
import torch

from bench.data import DATASETS
from bench.data import freq3 as F

N = 640  # 20 per `b` class, 64 per glyph


def band_energy(x: torch.Tensor) -> np.ndarray:
    """(N, 1, 32, 32) uint8 -> (N, 32): spectral energy near each `b` class's frequency vector."""
    img = x[:, 0].numpy() / 255.0
    power = np.abs(np.fft.fft2(img - img.mean((1, 2), keepdims=True))) ** 2
    k = np.fft.fftfreq(32, 1 / 32)  # cycles per image
    ky, kx = np.meshgrid(k, k, indexing="ij")
    out = []
    for o in range(8):  # the docstring's b = orientation * 4 + frequency index
        for f in (5, 7, 9, 11):
            fx, fy = f * np.cos(o * np.pi / 8), f * np.sin(o * np.pi / 8)
            near = (np.hypot(kx - fx, ky - fy) < 1.5) | (np.hypot(kx + fx, ky + fy) < 1.5)
            out.append(power[:, near].sum(1))
    return np.array(out).T


def test_label_distributions():
    d = F.generate(N, seed=0, stream=0)
    assert d["x"].shape == (N, 1, 32, 32) and d["x"].dtype == torch.uint8
    assert d["b"].bincount(minlength=32).tolist() == [N // 32] * 32
    assert d["a"].bincount(minlength=10).tolist() == [N // 10] * 10
    c = d["c"]
    assert c.shape == (N, 1) and c.dtype == torch.float32
    assert 0 <= c.min() and c.max() <= 1 and c.std() > 0.25  # uniform on [0, 1]: std 0.29


def test_b_and_c_live_in_the_spectrum():
    d = F.generate(N, seed=0, stream=0, noise=0.08)  # at the default 0.2 the same reader gets b ~97%
    energy = band_energy(d["x"])
    assert (energy.argmax(1) == d["b"].numpy()).mean() > 0.97  # where the energy is names `b`
    at_b = np.sqrt(energy[np.arange(N), d["b"].numpy()])
    assert np.corrcoef(at_b, d["c"][:, 0].numpy())[0, 1] > 0.95  # and how much of it there is, `c`


def test_glyphs_are_distinct_and_mirror_symmetric():
    c = (np.arange(32) - 15.5) / 12
    v, u = np.meshgrid(c, c, indexing="ij")
    masks = np.array([F.glyph_mask(k, u, v) for k in range(len(F.GLYPHS))])
    assert (masks == masks[:, :, ::-1]).all()  # a flip never changes `a`
    flat = masks.reshape(len(masks), -1)
    differ = (flat[:, None] != flat[None]).sum(-1)
    assert differ[~np.eye(len(masks), dtype=bool)].min() > 30  # pixels between any two glyphs


def test_flipped_orientation_label_follows_the_flipped_pixels():
    scene = F.sample_scenes(64, np.random.default_rng(0))
    x = torch.from_numpy(F.render(scene))
    b = torch.from_numpy(scene["orientation"] * 4 + scene["frequency"])
    mask = torch.ones(64, dtype=torch.bool)
    fx = x.flip(3)  # the trainer mirrors the pixels; the dataset says what happens to labels
    maps = F.LABEL_MAPS  # what the dataset declares for a horizontal flip
    fy = {t: maps[t]["hflip"](y, mask) for t, y in {"a": torch.zeros(64, dtype=torch.long), "b": b}.items()}
    assert (fy["a"] == 0).all()
    # Re-render the mirrored scene with every orientation; the closest one must be the flipped label.
    mirrored = {**scene, "centre": scene["centre"] * [-1, 1], "noise": scene["noise"][:, :, ::-1],
                "jitter": -scene["jitter"]}
    # Orientations 1..8: theta = 180 deg is the label of 0 deg, but with the same phase only as 180.
    dist = []
    for o in range(1, F.ORIENTATIONS + 1):
        candidate = F.render({**mirrored, "orientation": np.full(64, o)})
        dist.append(np.abs(candidate.astype(int) - fx.numpy().astype(int)).mean((1, 2, 3)))
    dist = np.array(dist)  # (orientations, N)
    assert ((dist.argmin(0) + 1) % F.ORIENTATIONS == (fy["b"] // 4).numpy()).all()
    assert dist.min(0).max() < 0.01  # a pixel-exact match, up to float rounding
    assert not torch.equal(fy["b"], b)


def test_loader_pool(tmp_path):
    pool = DATASETS.get("freq3")(tmp_path, False, n=64, n_test=32, seed=1)
    assert len(pool.train) == 64 and len(pool.test) == 32
    assert pool.stratify == "b" and DATASETS.get("freq3").declare({}).label_maps == F.LABEL_MAPS
    assert [pool.specs[t].kind for t in "abc"] == ["multiclass", "multiclass", "regression"]
    assert pool.specs["b"].classes == 32 and pool.specs["b"].class_names[5] == "22.5deg f7"


def test_smoke_suite_runs_end_to_end(run_suite):
    records, report = run_suite("smoke_freq3")
    # stl (one cell per task), hard_share and the dual-stream hard_share (all three tasks)
    assert sorted(tuple(r["tasks"]) for r in records) == [("a",), ("a", "b", "c"), ("a", "b", "c"), ("b",), ("c",)]
    assert all(r["status"] == "done" for r in records)
    assert "### freq3" in report
