"""Augmentation on the device: an ordered list of random operations applied per sample to a whole
uint8 batch and its targets at once, on the batch's device (GPU in training, CPU in tests).

The operations are kornia's (`kornia.augmentation`), run through one `AugmentationSequential`, so
segmentation masks and detection boxes move with the pixels. Class and regression labels do not
move by themselves: an op that changes orientation (hflip, vflip, rot90, rotate) changes them only
through the dataset's declared label maps (`LabelMaps`), and the pipeline refuses such an op on a
task that declares nothing for it. A suite declares a pipeline as a list of op configs:

    train: {augment: [{op: rot90, turns: [1, 3], p: 0.5}, {op: noise, std: 0.05, p: 0.2}]}

Each op is a function in the `OPS` registry (bench/augment/ops.py); its keyword-only parameters with
defaults are the suite parameters (checked by name and type with `bench.registry.check_params`, values
by the op). Datasets declare their label maps where they register (bench/data); the trainer runs the
pipeline on each epoch's batches when a cell's `train.augment` is set (bench/trainer.py).
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
from typing import Any, Callable, Iterator, Mapping, Sequence

import kornia.augmentation as K
import torch

from bench.augment.ops import OPS, ORIENTATION_OPS, Op, build_op, shorthand_ops  # noqa: F401  (the package's API)

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

    def check(self, kinds: Mapping[str, str], where: Sequence[str] | None = None) -> None:
        """Refuse (ValueError) an orientation op on a label task that declares no map for it.

        `where[i]` names op i in the message (default `augment[i]`), e.g. the suite key it came from."""
        for task, kind in kinds.items():
            if kind not in KINDS:
                raise ValueError(f"task {task!r}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
        for i, op in enumerate(self.ops):
            if op.did is None or op.label_invariant:
                continue
            for task, kind in kinds.items():
                if kind in LABEL_KINDS and op.name not in self.label_maps.get(task, {}):
                    hint = ", or set label_invariant: true if these angles keep its labels" if op.name == "rotate" else ""
                    name = where[i] if where else f"augment[{i}]"
                    raise ValueError(
                        f"{name} ({op.name}): dataset {self.dataset!r} declares no label map for {op.name} "
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
