"""`digit_scenes`: canvases of 1 to 4 real MNIST digits, with detection boxes and segmentation masks (seed 003).

The registered dataset (`digit_scenes`, tasks `seg`: segmentation into background + 10 digits, and
`det`: detection of the 10 digits), built from a pure generator (`generate_scenes`), the split of
the source digits (`split_sources`) and a reader of those sources (`load_sources`). The two tasks
come from disjoint halves of the source digits and are labelled on separate scenes: a `seg` scene
carries only its mask, a `det` scene only its boxes (partial labels, `Split.labelled`), and test
scenes are built only from digits no training scene uses. Generated scenes are cached per options.
A mirrored digit is not a digit: suites on these scenes set `flip: false` (masks and boxes would
move with the pixels, but no label map can say what a mirrored 7 is).

How a scene is made, from a numpy Generator seeded with (seed, stream):
- draw the number of digits, uniform in [min_digits, max_digits], and that many source digits
  (uniformly, with replacement, from the `digits` given);
- scale each 28x28 digit by s ~ U(scale) with a triangle (bilinear) filter, widened by 1/s when
  shrinking so thin strokes do not alias; round to uint8;
- its foreground is its own scaled pixels >= FOREGROUND; its box is the tight box of those pixels
  (x1, y1 inclusive, x2, y2 exclusive pixel edges), which must lie inside the canvas;
- place the box at a uniform random integer position; up to PLACEMENT_TRIES positions are drawn
  and the first whose overlap with every digit already placed is at most `max_overlap` is taken
  (overlap = intersection area / area of the smaller box). A digit with no such position is left
  out, so a scene may hold fewer digits than drawn, never fewer than one (the first always fits);
- paint the digits in order, later ones on top: a digit's non-zero pixels replace what is below.
Masks then follow the pixels exactly: a pixel is digit d + 1 where the image is >= FOREGROUND and
the digit painted there is a d, else 0 (background). So where digits overlap the top one wins,
and every box still frames its own digit's whole foreground, hidden pixels included.

The source split (`split_sources`) is stratified by digit: a `test_fraction` of each digit's images
is held out for test scenes, and the rest (and the held-out part) are halved, so the segmentation
and detection datasets never share a source digit, and test scenes never reuse a training one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.data import Pool, Split, cached, dataset, files_key, source_digest
from bench.data.mnist import find_files, mnist_files, read_idx
from bench.kinds.detection import Detection
from bench.kinds.segmentation import Segmentation

CANVAS = 64  # px; the default side of a scene (and of the other tasks' images in seed 003)
SCALE = (0.8, 1.3)  # digit scale range: a 28 px MNIST patch becomes 22..36 px, its ink ~16..26 px
MAX_OVERLAP = 0.2  # the most of the smaller of two boxes that their intersection may cover
FOREGROUND = 64  # uint8 level from which a scaled digit pixel is ink (a quarter of full intensity)
PLACEMENT_TRIES = 32  # random positions tried per digit before it is left out
SETS = ("seg_train", "det_train", "seg_test", "det_test")  # also the generator's stream order
DIGITS = tuple("0123456789")
DIGIT = 28  # MNIST's side, px


def generate_scenes(digits: np.ndarray, labels: np.ndarray, n: int, *, canvas: int = CANVAS,
                    min_digits: int = 1, max_digits: int = 4, scale: tuple[float, float] = SCALE,
                    max_overlap: float = MAX_OVERLAP, seed: int = 0, stream: int = 0) -> dict[str, torch.Tensor]:
    """n scenes from `digits` (K, 28, 28) uint8 with `labels` (K,) 0..9; `stream` separates splits of one seed.

    Returns x (n, 1, canvas, canvas) uint8; mask (n, canvas, canvas) int64 (0 background, d + 1 for
    digit d); boxes (n, max_digits, 5) float32 [x1, y1, x2, y2, class] in pixels, valid rows first
    in painting order (bottom to top), padding rows [0, 0, 0, 0, -1]; source (n, max_digits) int64,
    the index into `digits` of each box's digit (-1 for padding).
    """
    _check_options(digits, labels, canvas, min_digits, max_digits, scale, max_overlap)
    rng = np.random.default_rng([seed, stream])
    count = rng.integers(min_digits, max_digits + 1, n)
    pick = rng.integers(0, len(digits), (n, max_digits))
    s = rng.uniform(*scale, (n, max_digits))
    tries = rng.random((n, max_digits, PLACEMENT_TRIES, 2))
    size = _patch_size(scale)
    patches = scale_digits(digits[pick.ravel()], s.ravel(), size).reshape(n, max_digits, size, size)
    ink_box = tight_boxes(patches >= FOREGROUND)  # (n, max_digits, 4) y0, x0, y1, x1 inside each patch
    wanted = np.arange(max_digits) < count[:, None]
    placed, top_left = place(ink_box, wanted, tries, canvas, max_overlap)
    x, mask = paint(patches, ink_box, top_left, placed, labels[pick], canvas)
    return {"x": torch.from_numpy(x[:, None]), "mask": torch.from_numpy(mask),
            **_box_rows(ink_box, top_left, placed, labels[pick], pick)}


def _check_options(digits, labels, canvas, min_digits, max_digits, scale, max_overlap) -> None:
    if digits.ndim != 3 or digits.shape[1:] != (DIGIT, DIGIT) or digits.dtype != np.uint8:
        raise ValueError(f"digit_scenes: digits must be (K, 28, 28) uint8, got {digits.shape} {digits.dtype}")
    if len(labels) != len(digits) or len(digits) == 0:
        raise ValueError(f"digit_scenes: {len(digits)} digits and {len(labels)} labels; need as many, at least one")
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"digit_scenes: need 1 <= min_digits ({min_digits}) <= max_digits ({max_digits})")
    if not 0 < scale[0] <= scale[1] or scale[1] * DIGIT > canvas:
        raise ValueError(f"digit_scenes: scale {scale} must be positive, increasing, and fit a scaled "
                         f"28 px digit on the {canvas} px canvas (max {canvas / DIGIT:.2f})")
    if not 0 <= max_overlap <= 1:
        raise ValueError(f"digit_scenes: max_overlap {max_overlap} must lie in [0, 1]")


def _patch_size(scale: tuple[float, float]) -> int:
    return int(np.ceil(DIGIT * scale[1]))


def resize_matrix(s: np.ndarray, out: int, size: int = DIGIT) -> np.ndarray:
    """(B, out, size) float32 rows that resample a `size` px line by factors s (B,), anchored at 0.

    A triangle filter of half-width max(1, 1/s) source px (bilinear when enlarging, an
    antialiasing tent when shrinking); pixels beyond the source are zeros, and rows are normalised
    over that zero-padded line, so flat ink stays flat and output past the digit's end is 0.
    """
    width = np.maximum(1.0, 1.0 / s)[:, None, None]  # (B, 1, 1)
    src = (np.arange(out) + 0.5)[None, :, None] / s[:, None, None] - 0.5  # (B, out, 1) source coordinate
    reach = int(np.ceil(width.max())) + 1
    taps = np.arange(-reach, size + reach)[None, None, :]  # the line with zero padding either side
    w = np.maximum(0.0, 1.0 - np.abs(src - taps) / width)
    w /= np.maximum(w.sum(2, keepdims=True), 1e-12)
    return w[:, :, reach:reach + size].astype(np.float32)


def scale_digits(digits: np.ndarray, s: np.ndarray, out: int) -> np.ndarray:
    """(B, 28, 28) uint8 digits scaled by s (B,) into the top-left of (B, out, out) uint8 patches."""
    m = torch.from_numpy(resize_matrix(s, out))  # (B, out, 28); the same for rows and columns
    scaled = m @ torch.from_numpy(digits).float() @ m.transpose(1, 2)
    return scaled.round_().clamp_(0, 255).to(torch.uint8).numpy()


def tight_boxes(ink: np.ndarray) -> np.ndarray:
    """(..., H, W) bool -> (..., 4) int64 y0, x0, y1, x1 (exclusive) of the True pixels; zeros if none."""
    rows, cols = ink.any(-1), ink.any(-2)
    h, w = ink.shape[-2:]
    y0, x0 = rows.argmax(-1), cols.argmax(-1)
    y1, x1 = h - rows[..., ::-1].argmax(-1), w - cols[..., ::-1].argmax(-1)
    box = np.stack([y0, x0, y1, x1], -1)
    return np.where(rows.any(-1)[..., None], box, 0)


def place(ink_box: np.ndarray, wanted: np.ndarray, tries: np.ndarray, canvas: int,
          max_overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions for the boxes, slot by slot, vectorised over scenes and tries.

    ink_box (n, D, 4) in patch coordinates; wanted (n, D) bool; tries (n, D, T, 2) uniforms.
    Returns placed (n, D) bool and top_left (n, D, 2) int64 y, x of each box on the canvas.
    """
    n, d = wanted.shape
    hw = ink_box[..., 2:] - ink_box[..., :2]  # (n, D, 2) box height, width
    wanted = wanted & (hw > 0).all(-1)  # a digit with no ink above the threshold has no box
    cand = np.floor(tries * (canvas - hw[:, :, None, :] + 1)).astype(np.int64)  # (n, D, T, 2)
    placed = np.zeros((n, d), bool)
    top_left = np.zeros((n, d, 2), np.int64)
    for j in range(d):
        lo, hi = cand[:, j], cand[:, j] + hw[:, j, None]  # (n, T, 2)
        olo, ohi = top_left[:, None, :j], top_left[:, None, :j] + hw[:, None, :j]  # (n, 1, j, 2)
        inter = np.clip(np.minimum(hi[:, :, None], ohi) - np.maximum(lo[:, :, None], olo), 0, None).prod(-1)
        smaller = np.minimum(hw[:, j].prod(-1)[:, None, None], hw[:, None, :j].prod(-1))  # (n, 1, j)
        ok = ((inter <= max_overlap * smaller) | ~placed[:, None, :j]).all(-1)  # (n, T)
        found = ok.any(1) & wanted[:, j]
        top_left[:, j] = np.where(found[:, None], lo[np.arange(n), ok.argmax(1)], 0)
        placed[:, j] = found
    return placed, top_left


def paint(patches: np.ndarray, ink_box: np.ndarray, top_left: np.ndarray, placed: np.ndarray,
          classes: np.ndarray, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint each scene's placed patches in slot order, later on top -> x (n, H, W) uint8, mask (n, H, W) int64."""
    n, d, p = patches.shape[:3]
    x = np.zeros((n, canvas, canvas), np.uint8)
    mask = np.zeros((n, canvas, canvas), np.int64)
    offset = top_left - ink_box[..., :2]  # (n, D, 2) canvas position of each patch's corner (may be < 0)
    line = np.arange(canvas)
    for j in range(d):
        ys, xs = line - offset[:, j, :1], line - offset[:, j, 1:]  # (n, canvas) patch row / column
        inside = ((ys >= 0) & (ys < p))[:, :, None] & ((xs >= 0) & (xs < p))[:, None, :]
        layer = patches[np.arange(n)[:, None, None], j, ys.clip(0, p - 1)[:, :, None], xs.clip(0, p - 1)[:, None, :]]
        layer = np.where(inside & placed[:, j, None, None], layer, 0)
        drawn = layer > 0
        x = np.where(drawn, layer, x)
        mask = np.where(drawn, np.where(layer >= FOREGROUND, classes[:, j, None, None] + 1, 0), mask)
    return x, mask


def _box_rows(ink_box, top_left, placed, classes, pick) -> dict[str, torch.Tensor]:
    """Valid rows first (painting order kept), then padding: boxes (n, D, 5) float32, source (n, D) int64."""
    hw = ink_box[..., 2:] - ink_box[..., :2]
    rows = np.concatenate([top_left[..., ::-1], (top_left + hw)[..., ::-1], classes[..., None]], -1)  # x1 y1 x2 y2 c
    rows = np.where(placed[..., None], rows, [0, 0, 0, 0, -1]).astype(np.float32)
    order = np.argsort(~placed, axis=1, kind="stable")
    source = np.where(placed, pick, -1)
    return {"boxes": torch.from_numpy(np.take_along_axis(rows, order[..., None], 1)),
            "source": torch.from_numpy(np.take_along_axis(source, order, 1).astype(np.int64))}


def split_sources(labels: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """Sorted indices of four disjoint sets of the source digits, stratified by label.

    Per digit class (shuffled with `seed`): round(test_fraction * count) images are held out for
    test scenes, the rest for training; each part is halved alternately, the first half for
    segmentation, the second for detection. Keys: seg_train, det_train, seg_test, det_test.
    test_fraction 0 or 1 puts everything in the train or the test halves (used when MNIST's own
    train and test files are both there).
    """
    if not 0 <= test_fraction <= 1:
        raise ValueError(f"digit_scenes: test_fraction {test_fraction} must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SETS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(idx)))
        for split, part in (("test", idx[:n_test]), ("train", idx[n_test:])):
            parts[f"seg_{split}"].append(part[0::2])
            parts[f"det_{split}"].append(part[1::2])
    return {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}


def load_sources(root: Path, download: bool = False, *, test_fraction: float = 0.2,
                 seed: int = 0) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """The four source sets as name -> (digits (K, 28, 28) uint8, labels (K,) int64), and notes for the report.

    With MNIST's training files present, they give the two training halves and the test files the
    two test halves; otherwise the 10,000-image test set alone is split by `test_fraction`. Files
    are found as the `mnist` dataset finds them; `download` uses torchvision's MNIST download.
    """
    paths = mnist_files(root, download, needed_by="digit_scenes")
    test = read_idx(paths["test_x"]), read_idx(paths["test_y"]).astype(np.int64)
    if "train_x" in paths and "train_y" in paths:
        train = read_idx(paths["train_x"]), read_idx(paths["train_y"]).astype(np.int64)
        halves = {**_take(train, split_sources(train[1], test_fraction=0.0, seed=seed), "train"),
                  **_take(test, split_sources(test[1], test_fraction=1.0, seed=seed), "test")}
        return halves, []
    if not 0 < test_fraction < 1:
        raise ValueError(f"digit_scenes: test_fraction {test_fraction} must lie strictly between 0 and 1")
    sets = _take(test, split_sources(test[1], test_fraction=test_fraction, seed=seed), "")
    note = (f"MNIST training files not found under {root}: digit scenes are built from the 10,000-image MNIST "
            f"test set, split into disjoint sources (segmentation / detection train {len(sets['seg_train'][0]):,} / "
            f"{len(sets['det_train'][0]):,} digits, test {len(sets['seg_test'][0]):,} / {len(sets['det_test'][0]):,}).")
    return sets, [note]


def _take(arrays: tuple[np.ndarray, np.ndarray], sets: dict[str, np.ndarray], part: str):
    return {k: (arrays[0][idx], arrays[1][idx]) for k, idx in sets.items() if k.endswith(part)}


@dataset("digit_scenes", tasks={"seg": "segmentation", "det": "detection"})
def digit_scenes(root: Path, download: bool, *, canvas: int = CANVAS, n_train: int = 2000, n_test: int = 500,
                 min_digits: int = 1, max_digits: int = 4, scale: tuple[float, float] = SCALE,
                 max_overlap: float = MAX_OVERLAP, test_fraction: float = 0.2, seed: int = 0) -> Pool:
    """n_train training and n_test test scenes per task (seg, det), each task from its own source digits.

    Masks are (N, canvas, canvas) int64 (0 background, d + 1 for digit d); boxes (N, max_digits, 5)
    float32 as `generate_scenes` gives them. The rest of the options go to `generate_scenes` and
    `load_sources`; `seed` draws the source split and every scene.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"datasets.digit_scenes.options: n_train ({n_train}) and n_test ({n_test}) must be >= 1")
    sources, notes = load_sources(root, download, test_fraction=test_fraction, seed=seed)
    options = dict(canvas=canvas, min_digits=min_digits, max_digits=max_digits, scale=tuple(scale),
                   max_overlap=max_overlap, seed=seed)
    key = f"digit_scenes:{source_digest(__file__)}:{files_key(find_files(root).values())}:{n_train}:{n_test}:" \
          f"{test_fraction}:{sorted(options.items())}"
    arrays = cached(root, "digit_scenes", key, lambda: _scenes(sources, n_train, n_test, options))
    seg = Segmentation(name="seg", classes=11, class_names=("background", *DIGITS))
    det = Detection(name="det", classes=10, class_names=DIGITS, image_size=canvas)
    notes = [f"digit_scenes: scenes composed from real MNIST digits (LeCun et al. 1998), not COCO or VOC: "
             f"{min_digits} to {max_digits} handwritten digits, scaled {scale[0]:g}-{scale[1]:g}x, on a black "
             f"{canvas}x{canvas} canvas. Segmentation (`seg`) and detection (`det`) scenes are built from disjoint "
             "halves of the source digits, and test scenes only from digits no training scene uses.", *notes]
    return Pool(train=_split(arrays, "train", seg, det), test=_split(arrays, "test", seg, det),
                specs={"seg": seg, "det": det}, notes=notes)


def _scenes(sources: dict[str, tuple[np.ndarray, np.ndarray]], n_train: int, n_test: int,
            options: dict) -> dict[str, torch.Tensor]:
    """Every set's scenes: <set>_x, and <set>_mask (uint8) for seg_* sets or <set>_boxes for det_* sets."""
    out = {}
    for stream, name in enumerate(SETS):
        digits, labels = sources[name]
        s = generate_scenes(digits, labels, n_train if name.endswith("train") else n_test, stream=stream, **options)
        out[f"{name}_x"] = s["x"]
        if name.startswith("seg"):
            out[f"{name}_mask"] = s["mask"]
        else:
            out[f"{name}_boxes"] = s["boxes"]
    return out


def _split(arrays: dict[str, torch.Tensor], part: str, seg: Segmentation, det: Detection) -> Split:
    """Segmentation scenes then detection scenes, each labelled for its own task only."""
    masks, boxes = arrays[f"seg_{part}_mask"], arrays[f"det_{part}_boxes"]
    n_seg, n_det = len(masks), len(boxes)
    first = torch.arange(n_seg + n_det) < n_seg
    return Split(torch.cat([arrays[f"seg_{part}_x"], arrays[f"det_{part}_x"]]),
                 {"seg": torch.cat([masks, seg.placeholder(masks, n_det)]),
                  "det": torch.cat([det.placeholder(boxes, n_seg), boxes])},
                 {"seg": first, "det": ~first})
