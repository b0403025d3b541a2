"""Augmentation on the device: an ordered list of random operations applied per sample to a whole
uint8 batch and its targets at once, on the batch's device (GPU in training, CPU in tests).

The operations are kornia's (`kornia.augmentation`), run through one `AugmentationSequential`, so
segmentation masks and detection boxes move with the pixels. Class and regression labels do not
move by themselves: an op that changes orientation (hflip, vflip, rot90, rotate) changes them only
through the dataset's declared label maps (`LabelMaps`), and the pipeline refuses such an op on a
task that declares nothing for it. A suite declares a pipeline as a list of op configs:

    train: {augment: [{op: rot90, turns: [1, 3], p: 0.5}, {op: noise, std: 0.05, p: 0.2}]}

Each op is a function in the `OPS` registry; its keyword-only parameters with defaults are the
suite parameters (checked by name and type with `bench.registry.check_params`, values by the op).
Randomness: each call runs under its own seed in a forked torch RNG, so the same seed gives the
same output on one device and the caller's RNG state is left as it was.

Precision: the batch goes to float32 in [0, 1] once, every op runs in float, and it comes back to
uint8 once (rounded, clamped to 0..255). So ops compound no quantisation; what is lost is the final
rounding (<= 0.5 grey level), values that noise / brightness / erase push outside [0, 1] (clamped;
brightness and the jitters also clamp internally), and bilinear resampling in rotate and zoom.
Flips, rot90 (on square images) and crop are exact pixel moves.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import kornia.augmentation as K
import torch
from torch import nn

from bench.registry import Registry, check_params

OPS = Registry("augmentation op")
ORIENTATION_OPS = ("hflip", "vflip", "rot90", "rotate")  # ops that can change class / regression labels
LABEL_KINDS = ("multiclass", "binary", "regression")  # moved by label maps
MASK_KINDS = ("segmentation",)  # (B, H, W) int64, 0 = background: moved by kornia, nearest
BOX_KINDS = ("detection",)  # (B, M, 5) float32 [x1, y1, x2, y2, class], class -1 = padding row
KINDS = LABEL_KINDS + MASK_KINDS + BOX_KINDS

# How one task's labels change under one orientation op: (targets (B,) or (B, dim), what the op did
# to each image (B,)) -> targets. What it did: hflip / vflip: bool, flipped or not; rot90: int64
# counter-clockwise quarter turns in 0..3 (0: not turned); rotate: float32 counter-clockwise degrees
# (0: not rotated).
LabelMap = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# A dataset's declaration: task -> op name -> its label map. An orientation op missing for a class or
# regression task in play is refused. `keep` declares that the labels do not change.
LabelMaps = Mapping[str, Mapping[str, LabelMap]]


def keep(y: torch.Tensor, did: torch.Tensor) -> torch.Tensor:
    """The label map of an op that leaves this task's labels as they are."""
    return y


@dataclass(frozen=True, eq=False)
class Op:
    """One configured operation: how to build its kornia module for an image size, and what it did."""

    name: str
    make: Callable[[int, int], nn.Module]  # (H, W) -> a kornia augmentation with its per-sample gate
    did: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None  # orientation ops: its sampled params -> (B,)
    redraw: Callable[[dict[str, torch.Tensor]], None] | None = None  # edits kornia's draw in place before applying
    label_invariant: bool = False  # the suite asserts labels do not change (rotate only)
    channels: int | None = None  # the image channels the op needs, if it needs a number
    channels_hint: str = ""


# ---- the ops ------------------------------------------------------------------------------------
def _probability(p: float) -> None:
    if not 0 <= p <= 1:
        raise ValueError(f"p: must be in [0, 1], got {p}")


def _interval(name: str, value: Sequence[float], lo: float, hi: float | None = None) -> tuple[float, float]:
    """A [low, high] range parameter, checked: two numbers, low <= high, both within [lo, hi]."""
    if len(value) != 2:
        raise ValueError(f"{name}: must be [low, high], got {list(value)}")
    a, b = float(value[0]), float(value[1])
    if a > b or a < lo or (hi is not None and b > hi):
        bounds = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}: must be [low, high] with low <= high, both {bounds}; got {list(value)}")
    return a, b


def _at_least(name: str, value: float, lo: float, hi: float | None = None) -> None:
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name}: must be >= {lo}" + (f" and <= {hi}" if hi is not None else "") + f", got {value}")


def _applied(params: dict[str, torch.Tensor]) -> torch.Tensor:
    return params["batch_prob"] > 0.5  # kornia's per-sample gate, 1.0 / 0.0


@OPS.register("hflip")
def hflip(*, p: float = 0.5) -> Op:
    """Mirror left-right."""
    _probability(p)
    return Op("hflip", lambda h, w: K.RandomHorizontalFlip(p=p), did=_applied)


@OPS.register("vflip")
def vflip(*, p: float = 0.5) -> Op:
    """Mirror top-bottom."""
    _probability(p)
    return Op("vflip", lambda h, w: K.RandomVerticalFlip(p=p), did=_applied)


@OPS.register("rot90")
def rot90(*, turns: tuple[int, ...] = (1, 2, 3), p: float = 0.5) -> Op:
    """Turn by a quarter-turn count drawn uniformly from `turns` (counter-clockwise; 3 = -1 = clockwise).

    Exact on square images (a pixel permutation); a non-square image keeps its shape (corners cut).
    """
    _probability(p)
    if not turns or any(t not in range(-3, 4) for t in turns):
        raise ValueError(f"turns: must be a non-empty list of quarter turns in -3..3, got {list(turns)}")
    choices = tuple(int(t) for t in turns)

    def redraw(params: dict[str, torch.Tensor]) -> None:
        # kornia draws `times` from a continuous range and rounds it; draw from the discrete set instead
        times = params["times"]
        pick = torch.randint(len(choices), times.shape, device=times.device)
        params["times"] = torch.tensor(choices, device=times.device, dtype=times.dtype)[pick]

    def did(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return params["times"].round().long().remainder(4) * _applied(params)

    return Op("rot90", lambda h, w: K.RandomRotation90(times=(-1, 1), p=p, align_corners=True),
              did=did, redraw=redraw)


@OPS.register("rotate")
def rotate(*, degrees: float = 10.0, p: float = 0.5, label_invariant: bool = False) -> Op:
    """Rotate by an angle drawn uniformly from [-degrees, degrees] (bilinear, zero fill).

    On a task whose labels depend on orientation and that declares no `rotate` map, the suite must set
    `label_invariant: true` to say the labels survive these angles (e.g. small rotations of digits).
    """
    _probability(p)
    _at_least("degrees", degrees, 0, 180)

    def did(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return params["degrees"].float() * _applied(params)

    return Op("rotate", lambda h, w: K.RandomRotation(degrees=(-degrees, degrees), p=p, align_corners=True),
              did=did, label_invariant=label_invariant)


@OPS.register("zoom")
def zoom(*, scale: tuple[float, float] = (0.9, 1.1), p: float = 0.5) -> Op:
    """Scale the content about the image centre by a factor drawn from `scale` (> 1 enlarges; zero fill)."""
    _probability(p)
    lo, hi = _interval("scale", scale, 1e-3)
    return Op("zoom", lambda h, w: K.RandomAffine(degrees=0.0, scale=(lo, hi), p=p, align_corners=True))


@OPS.register("crop")
def crop(*, pad: int = 4, p: float = 1.0) -> Op:
    """Zero-pad by `pad` pixels on every side and crop back to the image size at a uniform offset.

    The same distribution as the trainer's built-in `random_crop` (offsets 0..2 pad on each axis).
    """
    _probability(p)
    _at_least("pad", pad, 0)

    def redraw(params: dict[str, torch.Tensor]) -> None:
        # kornia's crop gate is per batch, not per sample: crop every image, and move the window of the
        # images the per-sample gate skips back to the centre (the identity).
        if p < 1:
            src = params["src"]  # (B, 4, 2) window corners (x, y) on the padded canvas
            skip = torch.rand(len(src), device=src.device) >= p
            shift = pad - src[:, :1, :]  # to the centred window
            params["src"] = torch.where(skip[:, None, None], src + shift, src)

    # `resample` mode warps by an integer translation (exact) on the whole batch; the default `slice`
    # mode reads every window back to the host and crops image by image.
    return Op("crop", lambda h, w: K.RandomCrop((h, w), padding=pad, p=1.0, cropping_mode="resample",
                                                align_corners=True), redraw=redraw)


@OPS.register("noise")
def noise(*, std: float = 0.05, p: float = 0.5) -> Op:
    """Add Gaussian noise of this std, in [0, 1] intensity units (255 = 1), independently per pixel."""
    _probability(p)
    _at_least("std", std, 0, 1)
    return Op("noise", lambda h, w: K.RandomGaussianNoise(mean=0.0, std=std, p=p))


@OPS.register("brightness")
def brightness(*, delta: float = 0.2, p: float = 0.5) -> Op:
    """Add an intensity shift drawn from [-delta, delta] (in [0, 1] units) to the whole image."""
    _probability(p)
    _at_least("delta", delta, 0, 1)
    return Op("brightness", lambda h, w: K.RandomBrightness(brightness=(1 - delta, 1 + delta), p=p))


@OPS.register("contrast")
def contrast(*, factor: float = 0.2, p: float = 0.5) -> Op:
    """Blend with the image's mean grey by a factor drawn from [max(0, 1 - factor), 1 + factor] (torchvision's)."""
    _probability(p)
    _at_least("factor", factor, 0)
    return Op("contrast", lambda h, w: K.ColorJitter(contrast=factor, p=p))


@OPS.register("color_jitter")
def color_jitter(*, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.0,
                 p: float = 0.5) -> Op:
    """torchvision's ColorJitter: factors drawn from [max(0, 1 - v), 1 + v], hue shift from [-hue, hue]
    (in turns, at most 0.5), applied in a random order. Saturation and hue need 3-channel images."""
    _probability(p)
    for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        _at_least(name, value, 0)
    _at_least("hue", hue, 0, 0.5)
    rgb = saturation > 0 or hue > 0
    return Op("color_jitter", lambda h, w: K.ColorJitter(brightness, contrast, saturation, hue, p=p),
              channels=3 if rgb else None, channels_hint="set saturation and hue to 0 for grey images")


@OPS.register("erase")
def erase(*, scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
          value: float = 0.0, p: float = 0.5) -> Op:
    """Random erasing: fill one rectangle of `scale` x the image area and aspect `ratio` (height / width)
    with `value` (in [0, 1] units). Masks are erased to background in the same rectangle; boxes and
    labels stay as they are."""
    _probability(p)
    lo, hi = _interval("scale", scale, 0, 1)
    r_lo, r_hi = _interval("ratio", ratio, 1e-3)
    _at_least("value", value, 0, 1)
    return Op("erase", lambda h, w: K.RandomErasing(scale=(lo, hi), ratio=(r_lo, r_hi), value=value, p=p))


def build_op(config: Mapping[str, Any], where: str = "augment") -> Op:
    """One suite entry, e.g. {"op": "rotate", "degrees": 5, "p": 0.5} -> Op; ValueError names `where`."""
    if "op" not in config:
        raise ValueError(f"{where}.op: missing; valid: {', '.join(OPS.names())}")
    name, params = config["op"], {k: v for k, v in config.items() if k != "op"}
    if name not in OPS:
        raise ValueError(f"{where}.op: unknown augmentation op {name!r}; valid: {', '.join(OPS.names())}")
    fn = OPS.get(name)
    check_params(fn, params, where)
    try:
        return fn(**params)
    except ValueError as e:
        raise ValueError(f"{where}.{e}") from None


def shorthand_ops(crop_pad: int, flip: bool) -> list[dict[str, Any]]:
    """Today's `crop_pad: N` / `flip: true` train settings as pipeline op configs, in the trainer's order."""
    ops: list[dict[str, Any]] = []
    if crop_pad:
        ops.append({"op": "crop", "pad": crop_pad})
    if flip:
        ops.append({"op": "hflip", "p": 0.5})
    return ops


# ---- the pipeline -------------------------------------------------------------------------------
class Pipeline:
    """An ordered list of ops applied per sample to a uint8 batch and its targets.

    `dataset` names the dataset in errors; `label_maps` is its declaration (see `LabelMaps`).
    """

    def __init__(self, ops: Sequence[Mapping[str, Any]], *, dataset: str = "", label_maps: LabelMaps | None = None):
        self.ops = [build_op(cfg, f"augment[{i}]") for i, cfg in enumerate(ops)]
        self.dataset = dataset
        self.label_maps = label_maps or {}
        self._containers: dict[tuple, K.AugmentationSequential] = {}

    def check(self, kinds: Mapping[str, str]) -> None:
        """Refuse (ValueError) an orientation op on a label task that declares no map for it."""
        for task, kind in kinds.items():
            if kind not in KINDS:
                raise ValueError(f"task {task!r}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
        for i, op in enumerate(self.ops):
            if op.did is None or op.label_invariant:
                continue
            for task, kind in kinds.items():
                if kind in LABEL_KINDS and op.name not in self.label_maps.get(task, {}):
                    hint = ", or set label_invariant: true if these angles keep its labels" if op.name == "rotate" else ""
                    raise ValueError(
                        f"augment[{i}] ({op.name}): dataset {self.dataset!r} declares no label map for {op.name} "
                        f"on task {task!r} ({kind}), whose labels may change with orientation; declare one in the "
                        f"dataset or remove the op{hint}")

    def __call__(self, x: torch.Tensor, targets: Mapping[str, torch.Tensor], kinds: Mapping[str, str], *,
                 seed: int | None = None, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x: (B, C, H, W) uint8 on any device; targets: task -> tensor in its kind's layout (see KINDS).

        Exactly one of `seed` (an int) or `generator` (a seed is drawn from it) fixes the randomness.
        Returns the augmented uint8 batch and new targets (the inputs are not modified).
        """
        _check_batch(x, targets, kinds)
        self.check(kinds)
        if not self.ops:
            return x, dict(targets)
        masks = [t for t in targets if kinds[t] in MASK_KINDS]
        boxes = [t for t in targets if kinds[t] in BOX_KINDS]
        self._check_channels(x)
        seq = self._container(x, len(masks), len(boxes))
        with _seeded(_seed(seed, generator), x.device):
            params = seq.forward_parameters(x.shape)
            for op, item in zip(self.ops, params):
                if op.redraw is not None:
                    op.redraw(item.data)
            out = seq(x.float() / 255, *(targets[t][:, None] for t in masks),  # masks (B, 1, H, W)
                      *(_boxes_in(targets[t]) for t in boxes), params=params)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        y = dict(targets)
        for t, m in zip(masks, out[1:1 + len(masks)]):
            y[t] = m[:, 0]
        for t, b in zip(boxes, out[1 + len(masks):]):
            y[t] = _boxes_out(b, targets[t], x.shape[-2:])
        self._move_labels(y, [t for t in targets if kinds[t] in LABEL_KINDS], params)
        # The one rounding of the pipeline: ops run in float32 on [0, 1], so they compound no quantisation.
        return (out[0] * 255).round_().clamp_(0, 255).to(torch.uint8), y

    def _move_labels(self, y: dict[str, torch.Tensor], tasks: list[str], params: list) -> None:
        for op, item in zip(self.ops, params):  # in op order: label maps compose like the ops
            if op.did is None or op.label_invariant:
                continue
            did = op.did(item.data)
            for task in tasks:
                y[task] = self.label_maps[task][op.name](y[task], did)

    def _container(self, x: torch.Tensor, n_masks: int, n_boxes: int) -> K.AugmentationSequential:
        key = (*x.shape[-2:], str(x.device), n_masks, n_boxes)
        if key not in self._containers:
            h, w = x.shape[-2:]
            self._containers[key] = K.AugmentationSequential(
                *(op.make(h, w) for op in self.ops),
                data_keys=["input"] + ["mask"] * n_masks + ["bbox_xyxy"] * n_boxes,
            ).to(x.device)  # kornia then draws its parameters on x's device
        return self._containers[key]

    def _check_channels(self, x: torch.Tensor) -> None:
        for i, op in enumerate(self.ops):
            if op.channels is not None and x.shape[1] != op.channels:
                raise ValueError(f"augment[{i}] ({op.name}): needs {op.channels}-channel images, got {x.shape[1]}"
                                 + (op.channels_hint and f"; {op.channels_hint}"))

    def __repr__(self) -> str:
        return f"Pipeline({[op.name for op in self.ops]}, dataset={self.dataset!r})"


def _check_batch(x: torch.Tensor, targets: Mapping[str, torch.Tensor], kinds: Mapping[str, str]) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"images: expected uint8 (B, C, H, W), got {x.dtype} {tuple(x.shape)}")
    for task, t in targets.items():
        if task not in kinds:
            raise ValueError(f"task {task!r}: no kind given; kinds has {', '.join(kinds) or '(none)'}")
        if len(t) != len(x):
            raise ValueError(f"task {task!r}: {len(t)} targets for {len(x)} images")
        if kinds[task] in MASK_KINDS and tuple(t.shape[1:]) != tuple(x.shape[-2:]):
            raise ValueError(f"task {task!r}: expected masks (B, {x.shape[-2]}, {x.shape[-1]}), got {tuple(t.shape)}")
        if kinds[task] in BOX_KINDS and (t.ndim != 3 or t.shape[-1] != 5):
            raise ValueError(f"task {task!r}: expected boxes (B, M, 5), got {tuple(t.shape)}")


def _boxes_in(b: torch.Tensor) -> torch.Tensor:
    """(B, M, 5) pixel-edge boxes -> (B, M, 4) corners in kornia's frame, inclusive xyxy (`xyxy_plus`).

    Our x1..x2 are pixel edges (a box over pixel columns 3..7 is x1 = 3, x2 = 8); kornia puts pixel
    i's centre at i, so edge e is kornia's e - 0.5. Passing the true corners as inclusive corners makes
    every affine op move them exactly. Padding rows become a unit box so kornia's checks pass.
    """
    corners = b[..., :4].float() - 0.5
    return torch.where(b[..., 4:5] >= 0, corners, torch.zeros_like(corners))


def _boxes_out(out: torch.Tensor, before: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """kornia's (B, M, 4) axis-aligned enclosures -> (B, M, 5) pixel-edge boxes, clipped to the image;
    boxes pushed wholly out, and padding rows, become [0, 0, 0, 0, -1]."""
    h, w = size
    xyxy = out + 0.5
    limit = torch.tensor([w, h, w, h], device=out.device, dtype=out.dtype)
    xyxy = torch.minimum(xyxy.clamp(min=0), limit)
    keep_row = (before[..., 4] >= 0) & (xyxy[..., 2] > xyxy[..., 0]) & (xyxy[..., 3] > xyxy[..., 1])
    rows = torch.cat([xyxy, before[..., 4:5].to(xyxy.dtype)], -1)
    padding = torch.tensor([0, 0, 0, 0, -1], device=out.device, dtype=rows.dtype)
    return torch.where(keep_row[..., None], rows, padding).to(before.dtype)


def _seed(seed: int | None, generator: torch.Generator | None) -> int:
    if (seed is None) == (generator is None):
        raise ValueError("pass exactly one of seed= or generator=")
    if generator is not None:
        return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    return int(seed)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run under `seed` on the CPU RNG and x's accelerator RNG; both are restored afterwards.

    kornia draws from torch's global RNG (it takes no generator), so it is forked rather than shared.
    """
    accel = device.type != "cpu"
    with torch.random.fork_rng(devices=[device] if accel else [], device_type=device.type if accel else "cuda"):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        elif accel:
            torch.get_device_module(device.type).manual_seed(seed)
        yield
