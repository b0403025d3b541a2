"""The augmentation ops: a registry of functions, one per op, each returning a configured `Op`.

An op's keyword-only parameters with defaults are its suite parameters (checked by name and type with
`bench.registry.check_params`, values by the op, whose ValueError starts with the parameter's name).
Each builds a kornia augmentation (`kornia.augmentation`) with its per-sample gate `p`; orientation
ops (hflip, vflip, rot90, rotate) also say what they did to each image, for the label maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import kornia.augmentation as K
import torch
from torch import nn

from bench.registry import Registry, check_params

OPS = Registry("augmentation op")
ORIENTATION_OPS = ("hflip", "vflip", "rot90", "rotate")  # ops that can change class / regression labels


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


FILLS = ("zeros", "border", "reflection")  # what rotate / zoom put where no source pixel lands


def _fill(fill: str) -> None:
    if fill not in FILLS:
        raise ValueError(f"fill: must be one of {', '.join(FILLS)}, got {fill!r}")


@OPS.register("rotate")
def rotate(*, degrees: float = 10.0, p: float = 0.5, label_invariant: bool = False, fill: str = "zeros") -> Op:
    """Rotate by an angle drawn uniformly from [-degrees, degrees] (bilinear) about the image centre.

    `fill`: zeros (black corners), border (the nearest edge pixel) or reflection (mirrored content,
    as Keras' RandomRotation's default `reflect`). On a task whose labels depend on orientation and
    that declares no `rotate` map, the suite must set `label_invariant: true` to say the labels
    survive these angles (e.g. small rotations of digits).
    """
    _probability(p)
    _at_least("degrees", degrees, 0, 180)
    _fill(fill)

    def did(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return -params["angle"].float() * _applied(params)  # kornia's affine angle turns clockwise

    return Op("rotate", lambda h, w: K.RandomAffine(degrees=(-degrees, degrees), p=p, align_corners=True,
                                                    padding_mode=fill),
              did=did, label_invariant=label_invariant)


@OPS.register("zoom")
def zoom(*, scale: tuple[float, float] = (0.9, 1.1), p: float = 0.5, fill: str = "zeros") -> Op:
    """Scale the content about the image centre by a factor drawn from `scale` (> 1 enlarges);
    `fill` as rotate's, for the border a factor < 1 uncovers."""
    _probability(p)
    lo, hi = _interval("scale", scale, 1e-3)
    _fill(fill)
    return Op("zoom", lambda h, w: K.RandomAffine(degrees=0.0, scale=(lo, hi), p=p, align_corners=True,
                                                  padding_mode=fill))


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


