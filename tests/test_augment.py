"""The augmentation pipeline: labels, masks and boxes follow the pixels through every op (checked by
re-detecting shapes, re-rendering freq3 scenes and measuring drawn objects), orientation ops are
refused where a dataset declares no label map, bad parameters are refused by name, and a seed fixes
the output without touching the caller's RNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import augment as A
from bench.data import DATASETS
from bench.data import freq3 as F
from bench.data import shapes as S
from bench.data import synthetic as Y
from bench.registry import declared_params
from test_shapes import detect_counts  # tests/ is on sys.path (no __init__.py)

ALL_KEEP = {op: A.keep for op in A.ORIENTATION_OPS}


def drawn_batch(n: int = 8, size: int = 32, seed: int = 0):
    """Images with one bright rectangle each, its mask (class 2) and its box, plus a padding box row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    masks = torch.zeros(n, size, size, dtype=torch.int64)
    boxes = torch.zeros(n, 2, 5)
    boxes[:, 1, 4] = -1
    for i in range(n):
        h, w = torch.randint(6, 12, (2,), generator=g).tolist()
        top, left = torch.randint(4, size - 4 - 12, (2,), generator=g).tolist()
        x[i, :, top:top + h, left:left + w] = 255
        masks[i, top:top + h, left:left + w] = 2
        boxes[i, 0] = torch.tensor([left, top, left + w, top + h, 7.0])
    return x, masks, boxes


def run(ops, x, targets, kinds, maps=None, seed=0, dataset="test"):
    return A.Pipeline(ops, dataset=dataset, label_maps=maps)(x, targets, kinds, seed=seed)


# ---- every op -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", A.OPS.names())
def test_every_op_keeps_layouts_and_dtypes(name):
    x, masks, boxes = drawn_batch()
    y = {"c": torch.arange(8), "r": torch.rand(8, 2), "m": masks, "b": boxes, "m2": masks.flip(2), "b2": boxes}
    kinds = {"c": "multiclass", "r": "regression", "m": "segmentation", "b": "detection",
             "m2": "segmentation", "b2": "detection"}
    out, ny = run([{"op": name, "p": 1.0}], x, y, kinds, maps={"c": ALL_KEEP, "r": ALL_KEEP})
    if name in ("hflip", "vflip", "rot90"):  # exact ops: the second mask and box sets moved the same way
        assert torch.equal(ny["b2"], ny["b"]) and not torch.equal(ny["m2"], ny["m"])
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert ny["m"].dtype == torch.int64 and ny["m"].shape == masks.shape
    assert set(ny["m"].unique().tolist()) <= {0, 2}  # nearest: never a blended class
    assert ny["b"].shape == boxes.shape and set(ny["b"][..., 4].unique().tolist()) <= {7.0, -1.0}
    assert torch.equal(ny["c"], y["c"]) and torch.equal(ny["r"], y["r"])
    assert (ny["b"][:, 1] == torch.tensor([0, 0, 0, 0, -1.0])).all()  # padding rows stay padding
    assert not torch.equal(out, x)  # p = 1: every op changes these images


@pytest.mark.parametrize("name", A.OPS.names())
def test_every_op_at_p_zero_is_the_identity(name):
    x, masks, boxes = drawn_batch()
    x = x // 2 + torch.randint(0, 100, x.shape, dtype=torch.uint8)  # every grey level in play
    y = {"m": masks, "b": boxes}
    out, ny = run([{"op": name, "p": 0.0}], x, y, {"m": "segmentation", "b": "detection"})
    assert torch.equal(out, x) and torch.equal(ny["m"], masks)
    torch.testing.assert_close(ny["b"], boxes)


def test_every_op_declares_p_and_suite_parameters_with_defaults():
    for name in A.OPS.names():
        params = declared_params(A.OPS.get(name))
        assert "p" in params, name
        A.build_op({"op": name})  # the defaults are valid


def test_rot90_is_an_exact_pixel_permutation():
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    out, _ = run([{"op": "rot90", "turns": [1, 2, 3], "p": 0.75}], x, {}, {})
    seen = []
    for i in range(len(x)):
        k = next(k for k in range(4) if torch.equal(out[i], x[i].rot90(k, (1, 2))))  # counter-clockwise
        seen.append(k)
    assert set(seen) == {0, 1, 2, 3}


def test_noise_and_brightness_are_clamped_and_rounded_once():
    x = torch.tensor([0, 1, 128, 254, 255], dtype=torch.uint8).view(1, 1, 1, 5).repeat(64, 3, 4, 1)
    out, _ = run([{"op": "noise", "std": 0.0, "p": 1.0}], x, {}, {})
    assert torch.equal(out, x)  # float round trip is exact
    out, _ = run([{"op": "brightness", "delta": 0.5, "p": 1.0}, {"op": "noise", "std": 0.2, "p": 1.0}], x, {}, {})
    assert out.min() == 0 and out.max() == 255  # pushed out of range: clamped, not wrapped


# ---- labels follow the pixels -------------------------------------------------------------------
def test_label_aware_flips_and_turns_of_shapes_count_the_same_shapes():
    d = S.generate(240, seed=3, stream=0)
    ops = [{"op": "hflip"}, {"op": "vflip"}, {"op": "rot90", "turns": [1, 2, 3]}]
    x, y = run(ops, d["x"], {"pair": d["pair"], "counts": d["counts"]},
               {"pair": "multiclass", "counts": "regression"}, maps=S.LABEL_MAPS, dataset="shapes")
    seen = detect_counts(x)  # exact template lookup of every shape in the augmented pixels
    np.testing.assert_array_equal(y["counts"].numpy(), seen)
    np.testing.assert_array_equal(y["pair"].numpy(), S.counts_to_pair(seen))
    assert (y["pair"] != d["pair"]).float().mean() > 0.3  # the ops did change labels


@pytest.mark.parametrize("op, before, after", [
    ("vflip", "triangle_up", "triangle_down"), ("vflip", "triangle_left", "triangle_left"),
    ("hflip", "triangle_right", "triangle_left"), ("rot90", "triangle_up", "triangle_left"),
    ("rot90", "triangle_right", "triangle_up"),
])
def test_shapes_type_maps(op, before, after):
    counts = np.zeros((1, 6), np.int64)
    counts[0, S.TYPES.index(before)], counts[0, S.TYPES.index("circle")] = 3, 7
    did = torch.tensor([1]) if op == "rot90" else torch.tensor([True])
    new = S.LABEL_MAPS["counts"][op](torch.from_numpy(counts).float(), did)
    assert new[0, S.TYPES.index(after)] == 3 and new[0, S.TYPES.index("circle")] == 7
    pair = S.LABEL_MAPS["pair"][op](torch.from_numpy(S.counts_to_pair(counts)), did)
    assert S.pair_to_counts(pair.numpy())[0, S.TYPES.index(after)] == 3


SYMMETRIC_GLYPHS = [k for k, g in enumerate(F.GLYPHS) if g not in ("triangle", "tee", "bar")]  # under quarter turns


def freq3_batch(n: int = 64, glyphs=SYMMETRIC_GLYPHS):
    scene = F.sample_scenes(n, np.random.default_rng(1))
    scene["glyph"] = np.array(glyphs)[np.arange(n) % len(glyphs)]
    b = scene["orientation"] * len(F.FREQUENCIES) + scene["frequency"]
    x = torch.from_numpy(F.render(scene))
    return scene, x, {"a": torch.from_numpy(scene["glyph"]), "b": torch.from_numpy(b),
                      "c": torch.from_numpy(scene["contrast"].astype(np.float32)[:, None])}


def test_vertical_flip_of_a_freq3_grating_changes_its_orientation_as_declared():
    scene, x, y = freq3_batch(glyphs=[k for k, g in enumerate(F.GLYPHS) if g not in ("triangle", "tee")])
    out, ny = run([{"op": "vflip", "p": 1.0}], x, {"b": y["b"], "c": y["c"]},
                  {"b": "multiclass", "c": "regression"}, maps=F.LABEL_MAPS, dataset="freq3")
    # The flipped scene: v -> -v, so theta -> -theta (orientation -k renders it with the same phases).
    flipped = {**scene, "orientation": -scene["orientation"], "jitter": -scene["jitter"],
               "centre": scene["centre"] * [1, -1], "noise": scene["noise"][:, ::-1, :]}
    assert np.abs(F.render(flipped).astype(int) - out.numpy().astype(int)).mean() < 0.01
    assert ((-scene["orientation"]) % 8 == (ny["b"] // 4).numpy()).all()
    assert torch.equal(ny["b"] % 4, y["b"] % 4) and torch.equal(ny["c"], y["c"])
    assert (ny["b"] != y["b"]).any()


def test_quarter_turn_of_a_freq3_grating_adds_90_degrees():
    scene, x, y = freq3_batch()
    out, ny = run([{"op": "rot90", "turns": [1], "p": 1.0}], x, y,
                  {"a": "multiclass", "b": "multiclass", "c": "regression"},
                  maps={**F.LABEL_MAPS, "a": {"rot90": A.keep}}, dataset="freq3")  # `a`: quarter-turn-symmetric glyphs only
    # Counter-clockwise: out(u, v) = in(-v, u), so theta -> theta - 90 deg and the glyph centre (cu, cv) -> (cv, -cu).
    turned = {**scene, "orientation": scene["orientation"] - 4, "centre": scene["centre"][:, ::-1] * [1, -1],
              "noise": np.rot90(scene["noise"], 1, axes=(1, 2))}
    assert np.abs(F.render(turned).astype(int) - out.numpy().astype(int)).mean() < 0.01
    assert ((scene["orientation"] + 4) % 8 == (ny["b"] // 4).numpy()).all()


def test_synthetic_quadrant_follows_flips_and_turns():
    split = Y._make(200, 16, 1, torch.Generator().manual_seed(0))
    ops = [{"op": "hflip"}, {"op": "vflip"}, {"op": "rot90"}]
    maps = {"quadrant": Y.LABEL_MAPS["quadrant"], "brightness": Y.LABEL_MAPS["brightness"]}
    x, y = run(ops, split.x, {"quadrant": split.y["quadrant"], "brightness": split.y["brightness"]},
               {"quadrant": "multiclass", "brightness": "regression"}, maps=maps, dataset="synthetic")
    quads = x.float().view(200, 1, 2, 8, 2, 8).mean((1, 3, 5)).flatten(1)  # mean per quadrant (TL, TR, BL, BR)
    assert torch.equal(quads.argmax(1), y["quadrant"])
    assert (y["quadrant"] != split.y["quadrant"]).any()


# ---- masks and boxes follow the pixels ----------------------------------------------------------
GEOMETRIC = [
    {"op": "rotate", "degrees": 40, "p": 1.0}, {"op": "zoom", "scale": [0.6, 1.4], "p": 1.0},
    {"op": "crop", "pad": 4}, {"op": "hflip", "p": 1.0}, {"op": "vflip", "p": 1.0}, {"op": "rot90", "p": 1.0},
]


@pytest.mark.parametrize("op", GEOMETRIC, ids=lambda o: o["op"])
def test_mask_moved_with_its_image_still_covers_the_object(op):
    x, masks, _ = drawn_batch(16)
    out, y = run([op], x, {"m": masks}, {"m": "segmentation"})
    obj, mask = out[:, 0] > 127, y["m"] == 2
    iou = (obj & mask).sum((1, 2)) / (obj | mask).sum((1, 2))
    assert iou.min() > 0.8, iou
    assert set(y["m"].unique().tolist()) == {0, 2}


@pytest.mark.parametrize("op", GEOMETRIC, ids=lambda o: o["op"])
def test_box_still_frames_the_object(op):
    x, _, boxes = drawn_batch(16)
    out, y = run([op], x, {"b": boxes}, {"b": "detection"})
    for i in range(len(x)):
        rows, cols = torch.nonzero(out[i, 0] > 127, as_tuple=True)
        x1, y1, x2, y2, cls = y["b"][i, 0].tolist()
        assert cls == 7
        # every object pixel (edges c..c+1) lies inside the box, up to the bilinear half pixel
        assert x1 <= cols.min() + 0.5 and cols.max() + 0.5 <= x2 and y1 <= rows.min() + 0.5 and rows.max() + 0.5 <= y2
        tight = (cols.max() + 1 - cols.min()) * (rows.max() + 1 - rows.min())
        slack = 1.6 if op["op"] == "rotate" else 1.25  # a rotated box's enclosure is looser than the pixels'
        assert (x2 - x1) * (y2 - y1) <= slack * tight + 4


def test_boxes_pushed_out_become_padding_and_partial_ones_are_clipped():
    x = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    boxes = torch.tensor([[[0, 0, 3, 3, 1.0], [10, 10, 22, 22, 2.0], [0, 12, 10, 20, 3.0]]]).repeat(2, 1, 1)
    _, y = run([{"op": "zoom", "scale": [2.0, 2.0], "p": 1.0}], x, {"b": boxes}, {"b": "detection"})
    b = y["b"][0]
    assert b[0].tolist() == [0, 0, 0, 0, -1]  # the corner box left the image
    torch.testing.assert_close(b[1], torch.tensor([4, 4, 28, 28, 2.0]))  # about the centre (16, 16), doubled
    torch.testing.assert_close(b[2], torch.tensor([0, 8, 4, 24, 3.0]))  # x from -16..4, clipped at 0


# ---- refusals -----------------------------------------------------------------------------------
def test_orientation_op_without_a_declared_map_is_refused():
    kinds = {"a": "multiclass", "b": "multiclass", "c": "regression"}
    with pytest.raises(ValueError, match=r"vflip.*'freq3'.*task 'a'"):
        A.Pipeline([{"op": "vflip"}], dataset="freq3", label_maps=F.LABEL_MAPS).check(kinds)
    A.Pipeline([{"op": "vflip"}], dataset="freq3", label_maps=F.LABEL_MAPS).check({"b": "multiclass", "c": "regression"})
    with pytest.raises(ValueError, match=r"hflip.*'mnist'.*'digit'"):
        A.Pipeline([{"op": "hflip"}], dataset="mnist", label_maps=DATASETS.get("mnist").declare({}).label_maps).check({"digit": "multiclass"})
    with pytest.raises(ValueError, match=r"rotate.*'shapes'.*label_invariant"):
        A.Pipeline([{"op": "rotate"}], dataset="shapes", label_maps=S.LABEL_MAPS).check({"pair": "multiclass"})
    A.Pipeline([{"op": "rotate", "label_invariant": True}], dataset="shapes", label_maps=S.LABEL_MAPS).check(
        {"pair": "multiclass"})
    A.Pipeline([{"op": "vflip"}], dataset="voc").check({"seg": "segmentation", "det": "detection"})  # they move


def test_refusal_happens_on_call_before_any_work():
    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="rot90"):
        A.Pipeline([{"op": "rot90"}], dataset="mnist")(x, {"digit": torch.zeros(2, dtype=torch.long)},
                                                      {"digit": "multiclass"}, seed=0)


@pytest.mark.parametrize("config, message", [
    ({"op": "rotate", "degrees": -1}, r"augment\[0\]\.degrees: must be >= 0"),
    ({"op": "hflip", "p": 1.5}, r"augment\[0\]\.p: must be in \[0, 1\]"),
    ({"op": "zoom", "scale": [1.2, 0.8]}, r"augment\[0\]\.scale: must be \[low, high\]"),
    ({"op": "zoom", "scale": [1.0]}, r"augment\[0\]\.scale: must be \[low, high\]"),
    ({"op": "rot90", "turns": [5]}, r"augment\[0\]\.turns: must be"),
    ({"op": "noise", "std": 2.0}, r"augment\[0\]\.std: must be >= 0 and <= 1"),
    ({"op": "crop", "pad": -2}, r"augment\[0\]\.pad: must be >= 0"),
    ({"op": "erase", "value": 300}, r"augment\[0\]\.value: must be >= 0 and <= 1"),
    ({"op": "color_jitter", "hue": 0.7}, r"augment\[0\]\.hue"),
    ({"op": "rotate", "degrees": "5"}, r"augment\[0\]\.degrees: expected float"),
    ({"op": "rotate", "angle": 5}, r"augment\[0\]\.angle: unknown parameter; valid: degrees, fill, label_invariant, p"),
    ({"op": "spin"}, r"augment\[0\]\.op: unknown augmentation op 'spin'; valid: brightness"),
])
def test_invalid_parameters_are_refused_by_name(config, message):
    with pytest.raises(ValueError, match=message):
        A.Pipeline([config])


def test_op_functions_name_the_parameter_first():
    with pytest.raises(ValueError, match=r"^degrees: must be >= 0"):
        A.OPS.get("rotate")(degrees=-1)


def test_colour_ops_refuse_grey_images():
    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="color_jitter.*3-channel"):
        run([{"op": "color_jitter"}], x, {}, {})
    run([{"op": "color_jitter", "saturation": 0, "hue": 0}], x, {}, {})  # brightness / contrast work on grey


# ---- randomness ---------------------------------------------------------------------------------
FIVE = [{"op": "crop", "pad": 2, "p": 0.7}, {"op": "hflip"}, {"op": "rotate", "degrees": 20},
        {"op": "noise", "std": 0.1}, {"op": "erase"}]


def test_same_seed_same_output_and_the_callers_rng_is_untouched():
    x, masks, boxes = drawn_batch()
    y, kinds = {"m": masks, "b": boxes}, {"m": "segmentation", "b": "detection"}
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = run(FIVE, x, y, kinds, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = A.Pipeline(FIVE)(x, y, kinds, seed=5)  # a fresh pipeline too
    other = run(FIVE, x, y, kinds, seed=6)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["m"], again[1]["m"])
    assert torch.equal(first[1]["b"], again[1]["b"])
    assert not torch.equal(first[0], other[0])
    a = A.Pipeline(FIVE)(x, y, kinds, generator=torch.Generator().manual_seed(9))
    b = A.Pipeline(FIVE)(x, y, kinds, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0])
    with pytest.raises(ValueError, match="exactly one of seed= or generator="):
        A.Pipeline(FIVE)(x, y, kinds)


# ---- shorthands ---------------------------------------------------------------------------------
def test_shorthands_match_the_built_in_crop_and_flip_distribution():
    assert A.shorthand_ops(4, True) == [{"op": "crop", "pad": 4}, {"op": "hflip", "p": 0.5}]
    assert A.shorthand_ops(0, False) == []
    pad, n = 2, 2000
    x = torch.randint(1, 256, (n, 1, 6, 6), dtype=torch.uint8)
    out, _ = run(A.shorthand_ops(pad, True), x, {}, {})
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    offsets, flips = [], 0
    for i in range(n):  # each output is exactly one window of the zero-padded image, maybe mirrored
        hits = [(dy, dx, f) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for f in (0, 1)
                if torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 6].flip(2) if f else padded[i, :, dy:dy + 6, dx:dx + 6])]
        assert hits, i
        offsets.append(hits[0][:2])
        flips += hits[0][2]
    counts = np.bincount([dy * 5 + dx for dy, dx in offsets], minlength=25)
    assert counts.min() > n / 25 * 0.6 and counts.max() < n / 25 * 1.4  # uniform offsets, as random_crop
    assert 0.45 < flips / n < 0.55
