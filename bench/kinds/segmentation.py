"""The `segmentation` kind: a class for every pixel. The kind class, and plain functions it wraps:
loss, the pixel confusion matrix, mIoU / pixel accuracy / per-class IoU through torchmetrics,
per-image IoU, validation, and how crop and flip move masks.

Targets are (N, H, W) int64 class maps (class 0 = background in digit scenes); the head (a 1x1
conv on the feature map, upsampled bilinearly to the input, as seed 003) predicts logits
(N, C, H, W). A prediction is the argmax map (N, H, W). What a run stores is the (C, C) pixel
confusion matrix (rows truth, columns prediction), per-class and per-image IoU and a few example
maps, never N x C x H x W probabilities; every metric below is computed from the confusion matrix.

Classes absent from both truth and prediction: torchmetrics' MulticlassJaccardIndex (macro) gives
them weight 0 in the mean, so they do not count, while its per-class output (average=None) reports
0.0 for them (its zero_division); `metrics` reports None for them instead, so a report can tell
"absent" from "always wrong".

Torch and torchmetrics are imported inside the functions: the kinds package is imported by the
report, which must not pay for them (torchmetrics alone takes over a second to import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bench.kinds import PERCENT, Drawing, FeatureInfo, TaskSpec, nan_for_none, register

if TYPE_CHECKING:
    import torch

EXAMPLES = 6  # test images whose predicted and true maps a cell stores (the first ones: the same in every cell)


def loss(logits: torch.Tensor, mask: torch.Tensor, labelled: torch.Tensor, *, ignore_index: int | None = None,
         label_smoothing: float = 0.0) -> torch.Tensor:
    """Pixel cross-entropy of logits (N, C, H, W) against mask (N, H, W), averaged over the pixels of
    images whose `labelled` (N,) bool is True (others contribute nothing); static shapes only."""
    import torch
    import torch.nn.functional as F

    keep = labelled[:, None, None].expand_as(mask)
    if ignore_index is not None:
        keep = keep & (mask != ignore_index)
    ce = F.cross_entropy(logits.float(), torch.where(keep, mask, 0).long(), reduction="none",
                         label_smoothing=label_smoothing)  # (N, H, W)
    return (ce * keep).sum() / keep.sum().clamp(min=1)


def confusion(pred: torch.Tensor, target: torch.Tensor, classes: int, *, ignore_index: int | None = None) -> torch.Tensor:
    """(C, C) int64 pixel counts, rows truth, columns prediction, of argmax predictions (N, H, W)
    against targets (N, H, W); pixels whose target is ignore_index are left out. Sum over batches."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    return multiclass_confusion_matrix(pred, target, classes, ignore_index=ignore_index, validate_args=False).long()


def metrics(cm: torch.Tensor, *, ignore_index: int | None = None) -> dict:
    """From a (C, C) confusion matrix: miou (mean IoU over the classes present in truth or
    prediction, the ignore class excluded), pixel_accuracy, iou_per_class (C floats, None where a
    class is absent from both or is the ignore class).

    IoU goes through torchmetrics' MulticlassJaccardIndex, whose state is exactly this matrix.
    Pixel accuracy is trace / total, which is torchmetrics' MulticlassAccuracy(average="micro")
    on the same pixels (tests pin the equality); that metric keeps other state, not a matrix.
    """
    import torch
    from torchmetrics.classification import MulticlassJaccardIndex

    cm = cm.long().cpu()
    classes = len(cm)
    out = {}
    for average in ("macro", None):
        jaccard = MulticlassJaccardIndex(classes, average=average, ignore_index=ignore_index)
        empty = torch.zeros(0, dtype=torch.long)
        jaccard.update(empty, empty)  # an update of no pixels, so compute() sees an updated metric
        jaccard.merge_state({"confmat": cm})
        out[average] = jaccard.compute()
    present = (cm.sum(0) + cm.sum(1)) > 0
    if ignore_index is not None and 0 <= ignore_index < classes:
        present[ignore_index] = False
    total = cm.sum()
    return {"miou": float(out["macro"]) if present.any() else float("nan"),
            "pixel_accuracy": float(cm.diag().sum() / total) if total else float("nan"),
            "iou_per_class": [float(v) if p else None for v, p in zip(out[None].tolist(), present.tolist())]}


def per_image_iou(pred: torch.Tensor, target: torch.Tensor, classes: int, *,
                  ignore_index: int | None = None) -> torch.Tensor:
    """(N,) float32 mean IoU of each image over the classes present in its truth or prediction
    (for galleries of best and worst images).

    One bincount of per-image confusion matrices (N, C, C): torchmetrics' samplewise stat scores
    give the same numbers but took 7 s for 2,000 64x64 images here (this: 0.2 s).
    """
    import torch

    n = len(pred)
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    cell = (torch.arange(n, device=pred.device)[:, None, None] * classes + target) * classes + pred
    cm = torch.bincount(cell[keep], minlength=n * classes * classes).view(n, classes, classes)
    tp = cm.diagonal(dim1=1, dim2=2).float()
    union = cm.sum(1) + cm.sum(2) - tp  # (N, C): truth + prediction - both
    present = union > 0
    if ignore_index is not None and 0 <= ignore_index < classes:
        present[:, ignore_index] = False
    iou = torch.where(present, tp / union.clamp(min=1), 0.0)
    return iou.sum(1) / present.sum(1)  # nan for an image with every pixel ignored


def validate(mask: torch.Tensor, *, classes: int, where: str, ignore_index: int | None = None) -> None:
    """Refuse masks (N, H, W) with a value outside 0..classes-1 (other than ignore_index): ValueError
    starting with `where` (e.g. "dataset digit_scenes (train), task seg") and naming the image
    index, the pixel and the value."""
    import torch

    if mask.ndim != 3 or mask.dtype.is_floating_point or mask.dtype == torch.bool:
        raise ValueError(f"{where}: segmentation targets must be (N, H, W) integers, "
                         f"got {tuple(mask.shape)} {mask.dtype}")
    bad = (mask < 0) | (mask >= classes)
    if ignore_index is not None:
        bad &= mask != ignore_index
    if bad.any():
        i, y, x = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"{where}: segmentation target of image {i} has class {int(mask[i, y, x])} "
                         f"at pixel (y={y}, x={x}); valid: 0..{classes - 1}"
                         + (f" or {ignore_index} (ignored)" if ignore_index is not None else ""))


def flip(mask: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """Masks (B, H, W) mirrored left-right where `flipped` (B,) bool, as the images are."""
    import torch

    return torch.where(flipped[:, None, None], mask.flip(-1), mask)


def crop(mask: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int, *, fill: int = 0) -> torch.Tensor:
    """Masks (B, H, W) after the trainer's random crop: padded by `pad` with `fill` (background),
    then the (H, W) window at per-image offsets dy, dx (B,) in [0, 2 pad], as the images."""
    import torch
    import torch.nn.functional as F

    b, h, w = mask.shape
    padded = F.pad(mask, (pad, pad, pad, pad), value=fill)
    rows = (dy[:, None] + torch.arange(h, device=mask.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=mask.device))[:, None, :]  # (B, 1, W)
    return padded[torch.arange(b, device=mask.device)[:, None, None], rows, cols]


# ---- the kind ------------------------------------------------------------------------------------
@register("segmentation")
@dataclass(frozen=True, kw_only=True)
class Segmentation(TaskSpec):
    """`classes` per-pixel classes (background included); primary metric mIoU (higher is better).

    Loss: pixel cross-entropy over the labelled images. Prediction: the argmax map (N, H, W).
    Distillation: per-pixel T^2 * KL(teacher || student) of temperature-softened class distributions
    (Hinton et al. 2015 per pixel, as seed 003), averaged over pixels. Ensembles: none (an average
    of stored argmax maps is not a sound combination), so the grid refuses them for this kind.
    """

    ignore_index: int | None = None  # a target value that no loss or metric counts (None: every pixel counts)

    primary = "miou"
    columns = (("miou", "mIoU %"), ("pixel_accuracy", "pixel acc %"))
    display = PERCENT
    panels = frozenset({"dense_per_class", "dense_examples"})
    per_class = ("iou_per_class", "IoU %")
    required_arrays = ("confusion", "iou_per_class", "image_iou", "example_index")

    @property
    def unit(self) -> str:
        return "mIoU %"

    @property
    def out_channels(self) -> int:
        return self.classes

    def head(self, features: FeatureInfo, **cfg):
        from bench.kinds.heads import pixel_head

        return pixel_head(features, self.classes, task=self.name, **cfg)

    def loss(self, out, target, *, label_smoothing=0.0, labelled=None):
        import torch

        if labelled is None:
            labelled = torch.ones(len(target), dtype=torch.bool, device=target.device)
        return loss(out, target, labelled, ignore_index=self.ignore_index, label_smoothing=label_smoothing)

    def to_prediction(self, out):
        return out.argmax(1)  # (N, H, W) class map

    def distill(self, student, teacher, temperature=2.0):
        import torch.nn.functional as F

        log_s = F.log_softmax(student.float() / temperature, 1)
        log_t = F.log_softmax(teacher.float().detach() / temperature, 1)
        return (log_t.exp() * (log_t - log_s)).sum(1).mean() * temperature**2  # KL per pixel, mean over pixels

    def unflip_output(self, out):
        return out.flip(-1)

    def flip_target(self, target, flipped, width):
        return flip(target, flipped)

    def crop_target(self, target, dy, dx, pad):
        # the padding is black, which is background (class 0) in digit scenes
        return crop(target, dy, dx, pad, fill=0)

    def check_targets(self, target, *, image_size, where):
        validate(target, classes=self.classes, where=f"{where}, task {self.name}", ignore_index=self.ignore_index)

    def metrics(self, pred, target):
        r = metrics(self._confusion(pred, target), ignore_index=self.ignore_index)
        return {"miou": r["miou"], "pixel_accuracy": r["pixel_accuracy"]}

    def stored_arrays(self, pred, target, images):
        """The pixel confusion matrix (C, C), IoU per class (C,) (NaN: absent from truth and prediction),
        IoU per image (N,), and the first EXAMPLES test images with their predicted and true maps."""
        import torch

        cm = self._confusion(pred, target)
        r = metrics(cm, ignore_index=self.ignore_index)
        idx = np.arange(min(EXAMPLES, len(pred)))
        iou = per_image_iou(torch.from_numpy(pred).long(), torch.from_numpy(target).long(), self.classes,
                            ignore_index=self.ignore_index)
        dtype = np.uint8 if self.classes <= 256 else np.int64
        return {"confusion": cm.numpy(), "iou_per_class": nan_for_none(r["iou_per_class"]),
                "image_iou": iou.numpy().astype(np.float32), "example_index": idx, "example_x": images(idx),
                "example_pred": pred[idx].astype(dtype), "example_target": target[idx].astype(dtype)}

    def example_drawings(self, arrays, task):
        truths = [Drawing(mask=m) for m in arrays[f"example_target__{task}"]]
        return arrays[f"example_x__{task}"], truths, [Drawing(mask=m) for m in arrays[f"example_pred__{task}"]]

    def _confusion(self, pred: np.ndarray, target: np.ndarray) -> torch.Tensor:
        import torch

        return confusion(torch.from_numpy(pred).long(), torch.from_numpy(target).long(), self.classes,
                         ignore_index=self.ignore_index)
