"""The `shapes` generator: determinism, the label distribution it claims, labels that match the
pixels (found again by connected components and exact template lookup), and a label-aware flip."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from bench.data import DATASETS
from bench.data import shapes as S


def templates() -> dict[tuple, int]:
    """(shape, mask bytes) -> type index, for every type at every size."""
    out = {(m.shape, m.tobytes()): t for s in S.SIZES for t, m in enumerate(S.masks(s))}
    assert len(out) == len(S.TYPES) * len(S.SIZES), "two types share a mask: detection would be ambiguous"
    return out


def detect_counts(x: torch.Tensor) -> np.ndarray:
    """(N, 1, 28, 28) uint8 -> (N, 6) counts, by finding each shape and looking its mask up."""
    table, out = templates(), np.zeros((len(x), len(S.TYPES)), np.int64)
    for i, img in enumerate(x[:, 0].numpy()):
        labels, _ = ndimage.label(img > 0, structure=np.ones((3, 3)))
        for k, box in enumerate(ndimage.find_objects(labels), 1):
            mask = labels[box] == k
            out[i, table[(mask.shape, mask.tobytes())]] += 1
    return out


def test_type_names_match_their_pixels():
    for s in S.SIZES:
        m = dict(zip(S.TYPES, S.masks(s)))
        # A triangle is narrow at its apex: the side it points to has fewer pixels.
        assert m["triangle_up"][0].sum() < m["triangle_up"][-1].sum()
        assert m["triangle_down"][-1].sum() < m["triangle_down"][0].sum()
        assert m["triangle_right"][:, -1].sum() < m["triangle_right"][:, 0].sum()
        assert m["triangle_left"][:, 0].sum() < m["triangle_left"][:, -1].sum()
        assert m["square"].all() and not m["circle"].all()
        for name, mirror in (("triangle_left", "triangle_right"), ("square", "square"), ("circle", "circle"),
                             ("triangle_up", "triangle_up"), ("triangle_down", "triangle_down")):
            assert (m[name][:, ::-1] == m[mirror]).all(), name
            assert S.MIRROR[S.TYPES.index(name)] == S.TYPES.index(mirror)


def test_labels_are_what_the_module_claims_and_match_the_pixels():
    d = S.generate(400, seed=0, stream=0)
    counts = d["counts"].numpy()
    assert d["x"].shape == (400, 1, 28, 28) and d["x"].dtype == torch.uint8
    assert (counts.sum(1) == 10).all()
    assert ((counts > 0).sum(1) == 2).all()  # exactly two types per image
    first = counts[np.arange(400), (counts > 0).argmax(1)]
    assert first.min() >= 1 and first.max() <= 9
    assert ((d["pair"] >= 0) & (d["pair"] < S.CLASSES)).all()
    np.testing.assert_array_equal(S.pair_to_counts(d["pair"].numpy()), counts)
    np.testing.assert_array_equal(S.counts_to_pair(counts.astype(np.int64)), d["pair"].numpy())
    np.testing.assert_array_equal(detect_counts(d["x"]), counts)
    assert len(np.unique(d["pair"].numpy())) > 100  # 400 draws over 135 classes cover most of them


def test_flipped_labels_follow_the_flipped_pixels():
    d = S.generate(300, seed=1, stream=0)
    mask = torch.arange(300) % 2 == 0
    x = torch.where(mask[:, None, None, None], d["x"].flip(3), d["x"])  # as the trainer mirrors pixels
    y = {t: S.LABEL_MAPS[t]["hflip"](d[t], mask) for t in ("pair", "counts")}
    seen = detect_counts(x)
    np.testing.assert_array_equal(y["counts"].numpy(), seen)
    np.testing.assert_array_equal(y["pair"].numpy(), S.counts_to_pair(seen))
    assert not torch.equal(y["pair"], d["pair"])  # the flip did change labels (left/right triangles)


def test_mirrored_pair_of_a_known_scene():
    # 3 triangle_right + 7 circle, mirrored: 7 circle + 3 triangle_left (circle is now the first type).
    label = torch.tensor(S.counts_to_pair(np.array([[0, 7, 0, 3, 0, 0]])))
    y = S.LABEL_MAPS["pair"]["hflip"](label, torch.tensor([True]))
    assert S.class_name(int(y)) == "7 circle + 3 triangle_left"


def test_loader_caches_and_reloads_the_same_pool(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    pool = DATASETS.get("shapes")(tmp_path, False, n=64, n_test=16, seed=2)
    assert len(list(cache.glob("shapes-*.pt"))) == 1
    again = DATASETS.get("shapes")(tmp_path, False, n=64, n_test=16, seed=2)
    assert torch.equal(pool.train.x, again.train.x) and torch.equal(pool.test.y["pair"], again.test.y["pair"])
    assert len(pool.train) == 64 and len(pool.test) == 16
    assert pool.specs["counts"].dim == 6 and pool.specs["pair"].classes == 135
    assert pool.stratify == "pair" and DATASETS.get("shapes").declare({}).label_maps == S.LABEL_MAPS


def test_smoke_suite_runs_end_to_end(run_suite):
    records, report = run_suite("smoke_shapes")
    assert {r["strategy"]: r["tasks"] for r in records} == {
        "cls_only": ["pair"], "reg_only": ["counts"], "joint": ["pair", "counts"]}
    assert all(r["status"] == "done" for r in records)
    joint = next(r for r in records if r["strategy"] == "joint")
    assert set(joint["test"]) == {"pair", "counts"} and "mae" in joint["test"]["counts"]
    assert "### shapes" in report
