"""The `detection` kind: boxes with classes. The kind class, and the plain functions it wraps:
CenterNet-style target encoding, loss and decoding, mAP, validation, and how crop and flip move boxes.

Targets are (N, M, 5) float32 rows [x1, y1, x2, y2, class] in pixels (x right, y down; x2, y2
exclusive pixel edges), class 0..C-1, padded with rows whose class is -1 (anywhere in the M axis).

The head (Zhou et al. 2019, "Objects as Points") predicts at output stride s a map (N, C + 4, H/s, W/s):
- channels 0..C-1: class heatmap logits (sigmoid gives the centre probability); initialise their
  bias to HEATMAP_BIAS (prior 0.1), as CenterNet does, or the focal loss starts huge;
- channels C, C+1: box width and height, in output cells (pixels / s), read at the centre cell;
- channels C+2, C+3: the centre's sub-cell offset x, y in [0, 1), read at the centre cell.
Training targets: each object's centre cell (floor of centre / s) holds a 1 in its class's heatmap,
surrounded by a Gaussian of CenterNet's size-adaptive radius (min IoU 0.7, sigma = (2r + 1) / 6,
cut at r cells; overlapping objects take the maximum). Loss: the penalty-reduced focal loss
(alpha 2, beta 4) on the heatmaps plus L1 on size (weight 0.1) and offset (weight 1), each summed
over objects and divided by their number.
Decoding: sigmoid, 3x3 max-pool peak picking, the top `candidates` peaks over all classes, boxes
from size and offset, then torchvision.ops.batched_nms per image and class.

Torch, torchvision and torchmetrics are imported inside the functions: the kinds package is imported
by the report, which must not pay for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bench.kinds import PERCENT, Drawing, FeatureInfo, TaskSpec, nan_for_none, register

if TYPE_CHECKING:
    import torch

EXTRA_CHANNELS = 4  # size (w, h) + offset (x, y) after the C heatmap channels
HEATMAP_BIAS = -math.log((1 - 0.1) / 0.1)  # -2.19: initial heatmap logit bias (CenterNet's prior 0.1)
MIN_OVERLAP = 0.7  # CenterNet's Gaussian radius: a corner shifted by r keeps IoU >= 0.7
SIZE_WEIGHT, OFFSET_WEIGHT = 0.1, 1.0  # CenterNet's loss weights (size in output cells)
NMS_CHUNK = 1000  # boxes per batched_nms call (torchvision's CPU fast path holds up to 4,000 coordinates)


def out_channels(classes: int) -> int:
    return classes + EXTRA_CHANNELS


# ---- targets -------------------------------------------------------------------------------------
def gaussian_radius(h: torch.Tensor, w: torch.Tensor, min_overlap: float = MIN_OVERLAP) -> torch.Tensor:
    """CenterNet's `gaussian_radius` (from CornerNet), box sizes in output cells -> radius in cells.

    The smallest of three quadratic roots; like the reference code it halves the roots (rather
    than dividing by 2a), a known quirk every CenterNet reimplementation keeps for comparability.
    """
    import torch

    b1, c1 = h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt((b1**2 - 4 * c1).clamp(min=0))) / 2
    b2, c2 = 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt((b2**2 - 16 * c2).clamp(min=0))) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt((b3**2 - 4 * a3 * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def encode(boxes: torch.Tensor, *, classes: int, out_size: tuple[int, int], stride: int) -> dict[str, torch.Tensor]:
    """Targets (N, M, 5) -> CenterNet training targets at `stride` on an (h, w) = out_size grid.

    heatmap (N, C, h, w) float32 in [0, 1], exactly 1 at each object's centre cell;
    index (N, M) int64 flat centre cell (iy * w + ix); size (N, M, 2) w, h in cells;
    offset (N, M, 2) centre / stride - centre cell, in [0, 1); valid (N, M) bool (the centres' mask).
    Static shapes and no host synchronisation, so it should run inside a captured CUDA graph
    (not yet tried on a GPU).
    """
    import torch

    h, w = out_size
    valid = boxes[..., 4] >= 0
    cls = boxes[..., 4].long().clamp(min=0)
    x1, y1, x2, y2 = (boxes[..., :4].float() / stride).unbind(-1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    ix, iy = cx.floor().clamp(0, w - 1), cy.floor().clamp(0, h - 1)
    radius = gaussian_radius(y2 - y1, x2 - x1).floor().clamp(min=0)  # (N, M) cells
    sigma = (2 * radius + 1) / 6
    dx = torch.arange(w, device=boxes.device) - ix[..., None]  # (N, M, w)
    dy = torch.arange(h, device=boxes.device) - iy[..., None]  # (N, M, h)
    gx = torch.exp(-dx**2 / (2 * sigma[..., None] ** 2)) * (dx.abs() <= radius[..., None])
    gy = torch.exp(-dy**2 / (2 * sigma[..., None] ** 2)) * (dy.abs() <= radius[..., None])
    g = gy[..., :, None] * gx[..., None, :] * valid[..., None, None]  # (N, M, h, w)
    heatmap = torch.zeros(len(boxes), classes, h, w, device=boxes.device)
    heatmap.scatter_reduce_(1, cls[..., None, None].expand_as(g), g, "amax")
    return {"heatmap": heatmap, "index": (iy * w + ix).long() * valid, "valid": valid,
            "size": torch.stack([x2 - x1, y2 - y1], -1) * valid[..., None],
            "offset": torch.stack([cx - ix, cy - iy], -1) * valid[..., None]}


# ---- loss ----------------------------------------------------------------------------------------
def loss_terms(out: torch.Tensor, boxes: torch.Tensor, labelled: torch.Tensor, *, stride: int) -> dict[str, torch.Tensor]:
    """Scalar heatmap (focal), size and offset (L1) losses of head output `out` (N, C + 4, h, w)
    against targets `boxes` (N, M, 5); images whose `labelled` (N,) bool is False contribute nothing.
    Each is normalised by the number of objects in labelled images (at least 1)."""
    import torch
    import torch.nn.functional as F

    out = out.float()
    classes = out.shape[1] - EXTRA_CHANNELS
    t = encode(boxes, classes=classes, out_size=out.shape[-2:], stride=stride)
    keep = labelled.float()
    valid = t["valid"] & labelled[:, None]
    n_obj = valid.sum().clamp(min=1)
    logits, gt = out[:, :classes], t["heatmap"]
    pos = (gt == 1).float()
    p = torch.sigmoid(logits)
    focal = (pos * (1 - p) ** 2 * F.logsigmoid(logits)
             + (1 - pos) * (1 - gt) ** 4 * p**2 * F.logsigmoid(-logits))  # (N, C, h, w)
    heat = -(focal.sum((1, 2, 3)) * keep).sum() / n_obj
    at_centres = out[:, classes:].flatten(2).gather(2, t["index"][:, None].expand(-1, EXTRA_CHANNELS, -1))
    at_centres = at_centres.transpose(1, 2)  # (N, M, 4): w, h, offset x, offset y
    l1 = (at_centres - torch.cat([t["size"], t["offset"]], -1)).abs() * valid[..., None]
    return {"heatmap": heat, "size": l1[..., :2].sum() / n_obj, "offset": l1[..., 2:].sum() / n_obj}


def loss(out: torch.Tensor, boxes: torch.Tensor, labelled: torch.Tensor, *, stride: int,
         size_weight: float = SIZE_WEIGHT, offset_weight: float = OFFSET_WEIGHT) -> torch.Tensor:
    """CenterNet's total loss: focal heatmap + size_weight * L1 size + offset_weight * L1 offset."""
    terms = loss_terms(out, boxes, labelled, stride=stride)
    return terms["heatmap"] + size_weight * terms["size"] + offset_weight * terms["offset"]


# ---- decoding ------------------------------------------------------------------------------------
def decode(out: torch.Tensor, *, stride: int, image_size: tuple[int, int], max_dets: int = 20,
           candidates: int = 100, nms_iou: float = 0.5) -> torch.Tensor:
    """Head output (N, C + 4, h, w) -> detections (N, max_dets, 6) [x1, y1, x2, y2, score, class],
    best first, boxes in pixels clipped to image_size (H, W); padding rows [0, 0, 0, 0, 0, -1]."""
    import torch
    import torch.nn.functional as F

    out = out.float()
    n, classes, (h, w) = len(out), out.shape[1] - EXTRA_CHANNELS, out.shape[-2:]
    heat = torch.sigmoid(out[:, :classes])
    heat = heat * (heat == F.max_pool2d(heat, 3, stride=1, padding=1))  # keep local peaks only
    scores, idx = heat.flatten(1).topk(min(candidates, heat[0].numel()))  # (N, k) over classes x cells
    cls, cell = idx // (h * w), idx % (h * w)
    extra = out[:, classes:].flatten(2).gather(2, cell[:, None].expand(-1, EXTRA_CHANNELS, -1))  # (N, 4, k)
    size = extra[:, :2].clamp(min=0) * stride
    cx = ((cell % w).float() + extra[:, 2]) * stride
    cy = ((cell // w).float() + extra[:, 3]) * stride
    boxes = torch.stack([cx - size[:, 0] / 2, cy - size[:, 1] / 2, cx + size[:, 0] / 2, cy + size[:, 1] / 2], -1)
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, image_size[1])
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, image_size[0])
    return _nms_padded(boxes, scores, cls, classes, max_dets, nms_iou)


def _nms_padded(boxes, scores, cls, classes: int, max_dets: int, nms_iou: float) -> torch.Tensor:
    """batched_nms over chunks of whole images (grouped by image and class), then the best max_dets per image."""
    import torch
    import torchvision

    n, k = scores.shape
    image = torch.arange(n, device=boxes.device)[:, None].expand(n, k).reshape(-1)
    flat_boxes, flat_scores, group = boxes.reshape(-1, 4), scores.reshape(-1), image * classes + cls.reshape(-1)
    # Chunks of whole images under NMS_CHUNK boxes: above 1,000 boxes torchvision's CPU batched_nms
    # loops over groups in Python (measured on 2 busy cores: 57 s for 500 images x 100 boxes; 0.2 s chunked).
    step = max(1, NMS_CHUNK // k) * k
    keep = torch.cat([torchvision.ops.batched_nms(flat_boxes[s:s + step], flat_scores[s:s + step],
                                                  group[s:s + step], nms_iou) + s for s in range(0, n * k, step)])
    keep = keep[torch.argsort(image[keep], stable=True)]  # grouped by image, best first within each
    img = image[keep]
    per_image = torch.bincount(img, minlength=n)
    start = torch.cumsum(per_image, 0) - per_image
    rank = torch.arange(len(keep), device=boxes.device) - start[img]
    keep, img, rank = keep[rank < max_dets], img[rank < max_dets], rank[rank < max_dets]
    result = torch.zeros(n, max_dets, 6, device=boxes.device)
    result[..., 5] = -1
    rows = torch.cat([boxes.reshape(-1, 4)[keep], scores.reshape(-1, 1)[keep], cls.reshape(-1, 1)[keep].float()], 1)
    result[img, rank] = rows
    return result


# ---- metrics -------------------------------------------------------------------------------------
def metrics(pred: torch.Tensor, target: torch.Tensor, *, classes: int) -> dict:
    """COCO box mAP of stored detections (N, K, 6) against targets (N, M, 5), via torchmetrics'
    MeanAveragePrecision on the faster-coco-eval backend (101-point interpolated precision).

    Returns map_50 (AP at IoU 0.5), map (AP averaged over IoU 0.50:0.05:0.95), both over the
    classes that have ground truth (nan if none has), and ap50_per_class: a list of `classes`
    floats, AP@0.5 of each class, None for a class with no ground-truth box. COCO (and so
    torchmetrics) sets -1 for such a class, even when it was predicted (its false positives then
    count nowhere), and leaves it out of the mean; a class absent from both never appears.
    """
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    m = MeanAveragePrecision(backend="faster_coco_eval", box_format="xyxy", iou_type="bbox",
                             class_metrics=True, extended_summary=True)
    m.update(as_coco_dicts(pred, is_target=False), as_coco_dicts(target, is_target=True))
    r = m.compute()
    # precision: (IoU thresholds 10, recall points 101, classes seen K, area ranges 4, max dets 3);
    # [0, :, k, 0, -1] is IoU 0.5, all areas, 100 detections; -1 marks a class without ground truth.
    p50 = r["precision"][0, :, :, 0, -1]
    per_class: list[float | None] = [None] * classes
    for k, c in enumerate(torch.atleast_1d(r["classes"]).tolist()):
        if 0 <= c < classes and (p50[:, k] > -1).any():
            per_class[c] = float(p50[:, k][p50[:, k] > -1].mean())
    undefined = lambda v: float("nan") if float(v) < 0 else float(v)  # noqa: E731  (-1: no ground truth)
    return {"map_50": undefined(r["map_50"]), "map": undefined(r["map"]), "ap50_per_class": per_class}


def as_coco_dicts(rows: torch.Tensor, *, is_target: bool) -> list[dict[str, torch.Tensor]]:
    """(N, K, 6) detections or (N, M, 5) targets -> torchmetrics' per-image dicts, padding dropped."""
    rows = rows.detach().float().cpu()
    out = []
    for r in rows:
        r = r[r[:, -1] >= 0]
        d = {"boxes": r[:, :4], "labels": r[:, -1].long()}
        if not is_target:
            d["scores"] = r[:, 4]
        out.append(d)
    return out


# ---- validation and geometry ---------------------------------------------------------------------
def validate(boxes: torch.Tensor, *, image_size: tuple[int, int], classes: int, where: str) -> None:
    """Refuse bad targets (N, M, 5): ValueError starting with `where` (e.g. "dataset digit_scenes
    (train), task det") and naming the image index, the row and its values.

    Bad: a non-finite value; x2 <= x1 or y2 <= y1; a box outside the (H, W) image; a class that is
    not an integer in 0..classes-1 (padding rows, class -1, are skipped).
    """
    import torch

    if boxes.ndim != 3 or boxes.shape[-1] != 5:
        raise ValueError(f"{where}: detection targets must be (N, M, 5), got {tuple(boxes.shape)}")
    h, w = image_size
    x1, y1, x2, y2, c = boxes.float().unbind(-1)
    real = c != -1
    checks = (
        (~torch.isfinite(boxes.float()).all(-1), "has a non-finite value"),
        (real & ((c != c.round()) | (c < 0) | (c >= classes)), f"has class outside 0..{classes - 1}"),
        (real & (x2 <= x1), "has x2 <= x1"),
        (real & (y2 <= y1), "has y2 <= y1"),
        (real & ((x1 < 0) | (y1 < 0) | (x2 > w) | (y2 > h)), f"lies outside the {w}x{h} image"),
    )
    for bad, what in checks:
        if bad.any():
            i, j = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"{where}: detection target of image {i}, box {j} {what}: "
                             f"[x1, y1, x2, y2, class] = {boxes[i, j].tolist()}")


def flip(boxes: torch.Tensor, flipped: torch.Tensor, width: int) -> torch.Tensor:
    """Boxes (B, M, 5) of images mirrored left-right where `flipped` (B,) bool: x -> width - x."""
    import torch

    mirrored = torch.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3], boxes[..., 4]], -1)
    move = flipped[:, None, None] & (boxes[..., 4:] >= 0)
    return torch.where(move, mirrored, boxes)


def crop(boxes: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int, image_size: tuple[int, int]) -> torch.Tensor:
    """Boxes (B, M, 5) after the trainer's random crop: zero-pad by `pad`, take the (H, W) window at
    per-image offsets dy, dx (B,) in [0, 2 pad]. Content moves by (pad - dy, pad - dx); boxes are
    clipped to the image, and a box left with no area becomes padding (class -1)."""
    import torch

    h, w = image_size
    shift_x = (pad - dx).to(boxes.dtype)[:, None]
    shift_y = (pad - dy).to(boxes.dtype)[:, None]
    x1, x2 = (boxes[..., 0] + shift_x).clamp(0, w), (boxes[..., 2] + shift_x).clamp(0, w)
    y1, y2 = (boxes[..., 1] + shift_y).clamp(0, h), (boxes[..., 3] + shift_y).clamp(0, h)
    alive = (boxes[..., 4] >= 0) & (x2 > x1) & (y2 > y1)
    moved = torch.stack([x1, y1, x2, y2, boxes[..., 4]], -1)
    return torch.where(alive[..., None], moved, torch.tensor([0, 0, 0, 0, -1], dtype=boxes.dtype, device=boxes.device))


# ---- the kind ------------------------------------------------------------------------------------
MAX_DETS = 20  # detections kept per image (digit scenes hold at most 4 objects)
EXAMPLES = 6  # test images whose boxes the report draws (the first ones: the same in every cell)
SHOWN_SCORE = 0.3  # detections drawn in the report's examples: score at least this


@register("detection")
@dataclass(frozen=True, kw_only=True)
class Detection(TaskSpec):
    """Boxes of `classes` object classes on `image_size` px square images; primary metric mAP@0.5.

    Head: `centre_head` (two 1x1 convs with BN + ReLU between, as seed 003) predicting CenterNet's
    (B, C + 4, h, w) map at the feature map's stride (image_size / h). Prediction: decoded detections
    (N, MAX_DETS, 6) [x1, y1, x2, y2, score, class]. Distillation: MSE between the student's and the
    teacher's raw head outputs (seed 003's logit distillation; its feature term is the strategy's).
    Ensembles: none (averaging box lists needs box fusion, not an average), refused by the grid.
    """

    image_size: int  # px, the side of the square images the boxes lie on

    primary = "map_50"
    columns = (("map_50", "mAP@0.5 %"), ("map", "mAP@[.5:.95] %"))
    display = PERCENT
    panels = frozenset({"dense_per_class", "dense_examples"})
    per_class = ("ap50_per_class", "AP@0.5 %")
    required_arrays = ("pred", "target", "ap50_per_class", "example_index")

    @property
    def unit(self) -> str:
        return "mAP@0.5 %"

    @property
    def out_channels(self) -> int:
        return out_channels(self.classes)

    def head(self, features: FeatureInfo, **cfg):
        from bench.kinds.heads import centre_head

        return centre_head(features, self.out_channels, self.classes, HEATMAP_BIAS, task=self.name, **cfg)

    def loss(self, out, target, *, label_smoothing=0.0, labelled=None):
        import torch

        if labelled is None:
            labelled = torch.ones(len(target), dtype=torch.bool, device=target.device)
        return loss(out, target, labelled, stride=self.stride(out))  # label smoothing does not apply

    def to_prediction(self, out):
        return decode(out, stride=self.stride(out), image_size=(self.image_size, self.image_size), max_dets=MAX_DETS)

    def distill(self, student, teacher, temperature=2.0):
        import torch.nn.functional as F

        return F.mse_loss(student.float(), teacher.float().detach())  # temperature unused

    def unflip_output(self, out):
        """Heatmaps and sizes mirror with the map; a centre at x + o cells mirrors to cell w - 1 - x
        with offset 1 - o (exact unless o = 0, where it lands one cell over)."""
        out = out.flip(-1).clone()
        out[:, self.classes + 2] = 1 - out[:, self.classes + 2]
        return out

    def flip_target(self, target, flipped, width):
        return flip(target, flipped, width)

    def crop_target(self, target, dy, dx, pad):
        return crop(target, dy, dx, pad, (self.image_size, self.image_size))

    def placeholder(self, like, n):
        import torch

        empty = torch.tensor([0, 0, 0, 0, -1], dtype=like.dtype)  # a padding row: no object
        return empty.expand(n, like.shape[1], 5).clone()

    def check_targets(self, target, *, image_size, where):
        validate(target, image_size=(image_size, image_size), classes=self.classes, where=f"{where}, task {self.name}")

    def metrics(self, pred, target):
        r = self._coco(pred, target)
        return {"map_50": r["map_50"], "map": r["map"]}

    def stored_arrays(self, pred, target, images):
        """The detections as box lists (`pred`, (N, MAX_DETS, 6) float32, padding class -1), the targets,
        AP@0.5 per class (C,) (NaN: no ground truth), and the first EXAMPLES test images."""
        idx = np.arange(min(EXAMPLES, len(pred)))
        return {"pred": pred.astype(np.float32), "target": target.astype(np.float32),
                "ap50_per_class": nan_for_none(self._coco(pred, target)["ap50_per_class"]),
                "example_index": idx, "example_x": images(idx)}

    def example_drawings(self, arrays, task):
        idx = arrays[f"example_index__{task}"]
        pred, target = arrays[f"pred__{task}"][idx], arrays[f"target__{task}"][idx]
        truths = [Drawing(boxes=t[t[:, 4] >= 0]) for t in target]
        preds = [Drawing(boxes=p[(p[:, 5] >= 0) & (p[:, 4] >= SHOWN_SCORE)]) for p in pred]
        return arrays[f"example_x__{task}"], truths, preds

    def stride(self, out: torch.Tensor) -> int:
        """Input pixels per cell of the head's output map (B, C + 4, h, w)."""
        h = out.shape[-1]
        if self.image_size % h:
            raise ValueError(f"task {self.name}: a {h}x{h} output map does not divide the {self.image_size} px image")
        return self.image_size // h

    def _coco(self, pred: np.ndarray, target: np.ndarray) -> dict:
        import torch

        return metrics(torch.from_numpy(pred), torch.from_numpy(target), classes=self.classes)
