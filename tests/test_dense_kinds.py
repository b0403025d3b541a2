"""Detection and segmentation (bench/kinds/detection.py, segmentation.py): metrics pinned on hand-made
cases with known answers, the CenterNet encode -> decode round trip, the loss's per-image mask,
validation messages, crop / flip moving targets with the pixels as the trainer moves them, and the
kind classes: distillation, flip TTA, placeholders and what a cell stores."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from scipy.special import rel_entr, softmax

from bench.config import TrainConfig
from bench.data import digit_scenes as ds
from bench.kinds import KINDS, TaskSpec, make_spec
from bench.kinds import detection as det
from bench.kinds import segmentation as seg
from bench.trainer import Trainer, random_crop


def preds(*images: list[list[float]], k: int = 5) -> torch.Tensor:
    """Detections [x1, y1, x2, y2, score, class] per image -> (N, k, 6), padded with class -1."""
    out = torch.zeros(len(images), k, 6)
    out[..., 5] = -1
    for i, rows in enumerate(images):
        out[i, :len(rows)] = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
    return out


def truth(*images: list[list[float]], m: int = 4) -> torch.Tensor:
    """Boxes [x1, y1, x2, y2, class] per image -> (N, m, 5), padded with class -1."""
    out = torch.zeros(len(images), m, 5)
    out[..., 4] = -1
    for i, rows in enumerate(images):
        out[i, :len(rows)] = torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)
    return out


# ---- detection metrics -----------------------------------------------------------------------------
def test_perfect_detections_score_one_and_absent_classes_do_not_count():
    t = truth([[2, 3, 12, 15, 0], [30, 30, 50, 52, 3]], [[5, 5, 20, 25, 1]])
    p = preds([[2, 3, 12, 15, 0.9, 0], [30, 30, 50, 52, 0.8, 3]], [[5, 5, 20, 25, 0.7, 1]])
    r = det.metrics(p, t, classes=10)
    assert r["map_50"] == 1.0 and r["map"] == 1.0  # not 3/10: the 7 classes seen nowhere do not count
    assert r["ap50_per_class"] == [1.0, 1.0, None, 1.0] + [None] * 6


@pytest.mark.parametrize("x2,hit", [(4.9, False), (5.1, True)])
def test_iou_just_under_half_is_a_miss_and_just_over_is_a_hit(x2, hit):
    t = truth([[0, 0, 10, 10, 0]])
    p = preds([[0, 0, x2, 10, 0.9, 0]])  # IoU = x2 / 10: 0.49 or 0.51
    r = det.metrics(p, t, classes=10)
    assert r["map_50"] == pytest.approx(1.0 if hit else 0.0)
    assert r["map"] == pytest.approx(0.1 if hit else 0.0)  # a hit only at the first of the 10 IoU thresholds


def test_a_duplicate_detection_is_a_false_positive():
    t = truth([[0, 0, 10, 10, 0], [30, 30, 40, 40, 0]])
    clean = preds([[0, 0, 10, 10, 0.9, 0], [30, 30, 40, 40, 0.7, 0]])
    dup = preds([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 11, 0.8, 0], [30, 30, 40, 40, 0.7, 0]])
    assert det.metrics(clean, t, classes=10)["map_50"] == 1.0
    # precision 1 up to recall 0.5 (51 of COCO's 101 recall points), then 2/3 once the duplicate is counted
    assert det.metrics(dup, t, classes=10)["map_50"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-6)


def test_a_class_predicted_but_absent_from_truth_is_ignored_as_coco_does():
    t = truth([[0, 0, 10, 10, 0]])
    p = preds([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.95, 4]])
    r = det.metrics(p, t, classes=10)
    assert r["map_50"] == 1.0 and r["ap50_per_class"][4] is None


def test_map_without_any_truth_is_nan():
    r = det.metrics(preds([[0, 0, 10, 10, 0.9, 0]]), truth([]), classes=10)
    assert np.isnan(r["map_50"]) and np.isnan(r["map"]) and r["ap50_per_class"] == [None] * 10


# ---- CenterNet targets, loss, decoding --------------------------------------------------------------
def test_encode_puts_peaks_sizes_and_offsets_at_centres():
    t = det.encode(truth([[8, 12, 24, 20, 2], [3, 5, 10, 14, 7]]), classes=10, out_size=(8, 8), stride=4)
    assert t["heatmap"].shape == (1, 10, 8, 8) and t["heatmap"].max() == 1
    assert t["heatmap"][0, 2, 4, 4] == 1 and t["heatmap"][0, 7, 2, 1] == 1  # centres (16, 16) and (6.5, 9.5) px
    assert (t["heatmap"] == 1).sum() == 2 and t["heatmap"][0, [0, 1, 3, 4, 5, 6, 8, 9]].max() == 0
    assert t["index"][0, :2].tolist() == [4 * 8 + 4, 2 * 8 + 1] and t["valid"][0].tolist() == [True, True, False, False]
    assert t["size"][0, :2].tolist() == [[4, 2], [1.75, 2.25]]  # w, h in cells
    assert t["offset"][0, :2].tolist() == [[0, 0], [0.625, 0.375]]


def ideal_output(boxes: torch.Tensor, classes: int, size: int, stride: int) -> torch.Tensor:
    """What a perfect head would output: the heatmap as logits, sizes and offsets at the centres."""
    h = size // stride
    t = det.encode(boxes, classes=classes, out_size=(h, h), stride=stride)
    extra = torch.zeros(len(boxes), det.EXTRA_CHANNELS, h * h)
    n, m = t["valid"].nonzero(as_tuple=True)
    extra[n, :, t["index"][n, m]] = torch.cat([t["size"], t["offset"]], -1)[n, m]
    return torch.cat([torch.logit(t["heatmap"].clamp(1e-4, 1 - 1e-4)), extra.view(-1, det.EXTRA_CHANNELS, h, h)], 1)


def scenes(n: int = 120, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    digits = np.zeros((40, 28, 28), np.uint8)
    for i in range(40):  # solid rectangles of random size, as stand-in digits
        y, x = rng.integers(2, 10, 2)
        digits[i, y:y + rng.integers(6, 16), x:x + rng.integers(4, 16)] = 255
    return ds.generate_scenes(digits, np.arange(40) % 10, n, seed=seed)


def test_encode_decode_round_trip_recovers_boxes_and_scores_map_one():
    s = scenes()
    dets = det.decode(ideal_output(s["boxes"], 10, 64, 4), stride=4, image_size=(64, 64))
    assert dets.shape == (120, 20, 6)
    for d, t in zip(dets, s["boxes"]):
        t = t[t[:, 4] >= 0]
        iou = torchvision.ops.box_iou(t[:, :4], d[:len(t), :4])  # the best len(t) detections are the objects
        assert (iou.max(1).values > 0.9).all() and torch.equal(d[:len(t), 5].sort().values, t[:, 4].sort().values)
    assert det.metrics(dets, s["boxes"], classes=10)["map_50"] == 1.0


def test_loss_ignores_unlabelled_images_and_rewards_the_ideal_output():
    s = scenes(8)
    good = ideal_output(s["boxes"], 10, 64, 4)
    bad = torch.randn_like(good)
    labelled = torch.tensor([True, False] * 4)
    mixed = torch.where(labelled[:, None, None, None], good, bad)
    assert det.loss(mixed, s["boxes"], labelled, stride=4) == det.loss(good, s["boxes"], labelled, stride=4)
    assert det.loss(good, s["boxes"], labelled, stride=4) < 0.1 < det.loss(bad, s["boxes"], labelled, stride=4)
    out = bad.clone().requires_grad_()
    total = det.loss(out, s["boxes"], torch.zeros(8, dtype=torch.bool), stride=4)
    total.backward()
    assert total == 0 and out.grad.abs().max() == 0
    terms = det.loss_terms(good, s["boxes"], labelled, stride=4)
    assert terms["size"] == 0 and terms["offset"] == 0


def test_decode_keeps_peaks_applies_nms_per_class_and_pads():
    out = torch.full((1, 10 + 4, 8, 8), -10.0)  # stride 4: a 32 x 32 px image
    out[0, 10:12], out[0, 12:14] = 6.0, 0.0  # every cell predicts a 24 x 24 px box centred on its corner
    out[0, 3, 2, 2], out[0, 3, 2, 4] = 5.0, 4.0  # class 3, 8 px apart: boxes (clipped) overlap at IoU 0.57
    out[0, 6, 2, 4] = 4.5  # class 6 on the same box as the second: NMS is per class, so it stays
    out[0, 3, 5, 5], out[0, 3, 5, 6] = 4.8, 4.6  # adjacent cells: 3x3 max-pooling keeps only the first
    d = det.decode(out, stride=4, image_size=(32, 32), max_dets=100)
    confident = d[0][d[0, :, 4] > 0.5]
    assert confident[:, 5].tolist() == [3, 3, 6]  # best first
    assert confident[0, :4].tolist() == [0, 0, 20, 20]  # centre (8, 8) px, 24 px wide, clipped at 0
    assert d.shape == (1, 100, 6) and d[0, -1].tolist() == [0, 0, 0, 0, 0, -1]  # NMS left fewer than 100
    d = det.decode(out, stride=4, image_size=(32, 32), max_dets=6, nms_iou=0.6)
    assert d[0][d[0, :, 4] > 0.5][:, 5].tolist() == [3, 3, 6, 3] and d.shape == (1, 6, 6)


# ---- segmentation metrics --------------------------------------------------------------------------
def test_segmentation_metrics_on_a_hand_made_case():
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 0, 0, 1], [0, 0, 1, 1]]])
    perfect = seg.metrics(seg.confusion(target, target, 11))
    assert perfect["miou"] == 1.0 and perfect["pixel_accuracy"] == 1.0
    r = seg.metrics(seg.confusion(pred, target, 11))
    assert r["miou"] == pytest.approx((4 / 5 + 3 / 4) / 2)  # over the 2 classes present, not all 11
    assert r["pixel_accuracy"] == 7 / 8
    assert r["iou_per_class"] == pytest.approx([0.8, 0.75] + [None] * 9)
    pred[0, 0, 0] = 5  # a class predicted but absent from truth counts, with IoU 0
    r = seg.metrics(seg.confusion(pred, target, 11))
    assert r["miou"] == pytest.approx((3 / 5 + 3 / 4 + 0) / 3) and r["iou_per_class"][5] == 0.0
    assert seg.per_image_iou(torch.cat([target, pred]), torch.cat([target, target]), 11).tolist() == \
        pytest.approx([1.0, (3 / 5 + 3 / 4 + 0) / 3])


@pytest.mark.parametrize("ignore_index", [None, 0, 255])
def test_segmentation_metrics_equal_torchmetrics_on_the_pixels(ignore_index):
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_jaccard_index

    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (4, 16, 16), generator=gen)  # classes 6..10 absent everywhere
    pred = torch.where(torch.rand(4, 16, 16, generator=gen) < 0.7, target, torch.randint(0, 7, (4, 16, 16), generator=gen))
    if ignore_index == 255:
        target[:, :2] = 255
    kw = {"ignore_index": ignore_index}
    cm = seg.confusion(pred[:2], target[:2], 11, **kw) + seg.confusion(pred[2:], target[2:], 11, **kw)  # accumulated
    r = seg.metrics(cm, **kw)
    assert r["miou"] == pytest.approx(float(multiclass_jaccard_index(pred, target, 11, average="macro", **kw)))
    assert r["pixel_accuracy"] == pytest.approx(float(multiclass_accuracy(pred, target, 11, average="micro", **kw)))
    assert sum(v is not None for v in r["iou_per_class"]) == (6 if ignore_index == 0 else 7)
    each = [float(multiclass_jaccard_index(p, t, 11, average="macro", **kw)) for p, t in zip(pred, target)]
    assert seg.per_image_iou(pred, target, 11, **kw).tolist() == pytest.approx(each)


def test_segmentation_loss_ignores_unlabelled_images():
    mask = torch.randint(0, 11, (4, 8, 8))
    logits = torch.randn(4, 11, 8, 8)
    labelled = torch.tensor([True, False, True, False])
    other = torch.where(labelled[:, None, None, None], logits, torch.randn_like(logits))
    assert seg.loss(logits, mask, labelled) == seg.loss(other, mask, labelled)
    assert seg.loss(logits, mask, torch.zeros(4, dtype=torch.bool)) == 0


# ---- validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("row,message", [
    ([5, 5, 5, 9, 1], "x2 <= x1"), ([5, 9, 8, 3, 1], "y2 <= y1"), ([-1, 5, 8, 9, 1], "outside the 32x32"),
    ([5, 5, 8, 33, 1], "outside the 32x32"), ([5, 5, 8, 9, 10], "class outside 0..9"), ([5, 5, 8, 9, 2.5], "class"),
])
def test_bad_boxes_are_refused_naming_dataset_image_and_value(row, message):
    boxes = truth([[1, 1, 4, 4, 0]], [[1, 1, 4, 4, 0], [2, 2, 6, 6, 3], row])
    det.validate(boxes[:1], image_size=(32, 32), classes=10, where="dataset scenes")  # the good image passes
    with pytest.raises(ValueError) as err:
        det.validate(boxes, image_size=(32, 32), classes=10, where="dataset scenes")
    text = str(err.value)
    assert "dataset scenes" in text and "image 1, box 2" in text and message in text and str(float(row[0])) in text


def test_bad_masks_are_refused_naming_dataset_image_and_value():
    mask = torch.zeros(3, 8, 8, dtype=torch.long)
    mask[2, 5, 6] = 11
    with pytest.raises(ValueError, match=r"dataset scenes: .* image 2 has class 11 at pixel \(y=5, x=6\)"):
        seg.validate(mask, classes=11, where="dataset scenes")
    mask[2, 5, 6] = 255
    seg.validate(mask, classes=11, where="dataset scenes", ignore_index=255)
    with pytest.raises(ValueError, match="class -1"):
        seg.validate(mask - 1, classes=11, where="dataset scenes")


# ---- crop and flip move targets with the pixels -----------------------------------------------------
def drawn(n: int = 64, size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, size, size) holding two solid rectangles each (pixel values 1 and 2, often at an
    edge), and their boxes (n, 3, 5) with class = value - 1 and one padding row."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    boxes = truth(*[[] for _ in range(n)], m=3)
    for i in range(n):
        for j, (lo, hi) in enumerate(((0, size // 2), (size // 2, size))):
            x1, y1 = (int(v) for v in torch.randint(lo, hi - 2, (2,), generator=gen))
            x2, y2 = x1 + int(torch.randint(1, 4, (), generator=gen)), y1 + int(torch.randint(1, 4, (), generator=gen))
            x[i, 0, y1:y2, x1:x2] = j + 1
            boxes[i, j] = torch.tensor([x1, y1, x2, y2, j], dtype=torch.float32)
    return x, boxes


def assert_boxes_frame_pixels(x: torch.Tensor, boxes: torch.Tensor) -> None:
    for img, rows in zip(x[:, 0], boxes):
        for value in (1, 2):
            ys, xs = (img == value).nonzero(as_tuple=True)
            row = rows[rows[:, 4] == value - 1]
            if len(ys) == 0:
                assert len(row) == 0  # the object left the image: its box became padding
            else:
                assert row.tolist() == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, value - 1]]


def test_crop_and_flip_move_boxes_and_masks_with_the_pixels():
    x, boxes = drawn()
    assert_boxes_frame_pixels(x, boxes)
    pad = 4
    cropped, dy, dx = random_crop(x, pad, torch.Generator().manual_seed(7))  # the trainer's crop and its offsets
    moved = det.crop(boxes, dy, dx, pad, (24, 24))
    assert_boxes_frame_pixels(cropped, moved)
    assert (moved[..., 4] == -1).sum() > (boxes[..., 4] == -1).sum()  # some objects were cropped away
    mask = x[:, 0].long()  # the drawn objects as a class map
    assert torch.equal(seg.crop(mask, dy, dx, pad), cropped[:, 0].long())
    flipped = torch.arange(len(x)) % 3 == 0
    mirrored = torch.where(flipped[:, None, None, None], cropped.flip(3), cropped)
    assert_boxes_frame_pixels(mirrored, det.flip(moved, flipped, 24))
    assert torch.equal(seg.flip(seg.crop(mask, dy, dx, pad), flipped), mirrored[:, 0].long())


def test_the_trainers_augmentation_moves_dense_targets_through_their_kinds():
    x, boxes = drawn()
    specs = {"seg": make_spec("segmentation", name="seg", classes=3),
             "det": make_spec("detection", name="det", classes=2, image_size=24)}
    trainer = Trainer(TrainConfig(crop_pad=4, flip=True), torch.device("cpu"), seed=3)
    out, y = trainer._crop_flip(x, {"seg": x[:, 0].long(), "det": boxes}, specs, SimpleNamespace(label_maps={}))
    assert not torch.equal(out, x) and torch.equal(y["seg"], out[:, 0].long())  # the mask is the drawn objects
    assert_boxes_frame_pixels(out, y["det"])


# ---- the kind classes -------------------------------------------------------------------------------
SEG = make_spec("segmentation", name="seg", classes=11)
DET = make_spec("detection", name="det", classes=10, image_size=64)


def test_segmentation_distillation_is_the_per_pixel_kl_of_softened_distributions():
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 11, 4, 5, generator=gen), torch.randn(2, 11, 4, 5, generator=gen)
    t = 3.0
    p, q = softmax(teacher.numpy() / t, axis=1), softmax(student.numpy() / t, axis=1)
    expected = rel_entr(p, q).sum(1).mean() * t**2  # KL(teacher || student) per pixel, mean over 2 x 4 x 5 pixels
    assert float(SEG.distill(student, teacher, t)) == pytest.approx(expected, rel=1e-5)
    assert float(SEG.distill(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(DET.distill(student, teacher)) == pytest.approx(((student - teacher) ** 2).mean().item())


def test_flip_tta_brings_a_mirrored_images_outputs_back():
    s = scenes(40)
    mirrored = det.flip(s["boxes"], torch.ones(40, dtype=torch.bool), 64)
    back = DET.unflip_output(ideal_output(mirrored, 10, 64, 4))  # a perfect head's output on the mirrored images
    dets = DET.to_prediction(back)
    assert det.metrics(dets, s["boxes"], classes=10)["map_50"] == 1.0
    for d, t in zip(dets, s["boxes"]):
        t = t[t[:, 4] >= 0]
        assert (torchvision.ops.box_iou(t[:, :4], d[:len(t), :4]).max(1).values > 0.8).all()
    logits = torch.randn(3, 11, 8, 8)
    assert torch.equal(SEG.unflip_output(logits.flip(-1)), logits)


def test_detection_placeholder_rows_are_padding_and_never_scored():
    ph = DET.placeholder(torch.zeros(5, 4, 5), 3)
    assert ph.shape == (3, 4, 5) and (ph == torch.tensor([0, 0, 0, 0, -1.0])).all()
    DET.check_targets(ph, image_size=64, where="dataset x (train)")  # padding is valid
    assert float(DET.loss(torch.randn(3, 14, 16, 16), ph)) > 0  # only the heatmap's negatives: no object
    assert (det.crop(ph, torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), 2, (64, 64))[..., 4] == -1).all()


def test_kinds_name_dataset_task_image_and_value_of_a_bad_target():
    boxes = truth([[1, 1, 4, 4, 0]], [[1, 1, 4, 4, 0], [9, 2, 6, 6, 3]])
    with pytest.raises(ValueError, match=r"^dataset digit_scenes \(train\), task det: detection target of image 1, "
                                         r"box 1 has x2 <= x1: \[x1, y1, x2, y2, class\] = \[9.0, 2.0, 6.0, 6.0, 3.0\]"):
        DET.check_targets(boxes, image_size=64, where="dataset digit_scenes (train)")
    mask = torch.zeros(2, 4, 4, dtype=torch.uint8)
    mask[1, 2, 3] = 12
    with pytest.raises(ValueError, match=r"^dataset d \(test\), task seg: .* image 1 has class 12 at pixel \(y=2, x=3\)"):
        SEG.check_targets(mask, image_size=4, where="dataset d (test)")


def test_what_a_segmentation_cell_stores():
    target = torch.zeros(8, 16, 16, dtype=torch.uint8)
    target[:, 4:8, 4:8] = 3  # digit 2 in every image; digit 4 (class 5) only in the last, predicted nowhere
    target[7, 10:12, 10:12] = 5
    pred = target.long().clone()
    pred[:, 4, 4:8] = 0  # 4 of digit 2's 16 pixels missed in every image
    pred[7, 10:12, 10:12] = 0
    take = lambda idx: np.full((len(idx), 1, 16, 16), 7, np.uint8)  # noqa: E731
    stored = SEG.stored_arrays(pred.numpy(), target.numpy(), take)
    assert set(SEG.required_arrays) <= set(stored)
    assert stored["confusion"].shape == (11, 11) and stored["confusion"].sum() == 8 * 16 * 16
    assert max(a.size for a in stored.values()) < 8 * 11 * 16 * 16 / 4  # nothing like N x C x H x W
    # by hand: background 1,916 true pixels, all predicted, plus 36 predicted wrongly (32 of digit 2, 4 of digit 4)
    bg, digit2 = 1916 / 1952, 96 / 128
    iou = stored["iou_per_class"]
    assert iou[0] == pytest.approx(bg) and iou[3] == pytest.approx(digit2) and iou[5] == 0
    assert np.isnan(iou[[1, 2, 4, 6, 7, 8, 9, 10]]).all()  # absent from truth and prediction: no score
    assert SEG.metrics(pred.numpy(), target.numpy())["miou"] == pytest.approx((bg + digit2 + 0) / 3)
    assert stored["image_iou"][[0, 7]] == pytest.approx([(240 / 244 + 0.75) / 2, (236 / 244 + 0.75 + 0) / 3])
    assert stored["example_index"].tolist() == list(range(seg.EXAMPLES)) and stored["example_x"].shape == (6, 1, 16, 16)
    assert np.array_equal(stored["example_target"], target[:6].numpy())


def test_what_a_detection_cell_stores():
    t = truth([[2, 3, 12, 15, 0], [30, 30, 50, 52, 3]], [[5, 5, 20, 25, 1]])
    p = preds([[2, 3, 12, 15, 0.9, 0], [30, 30, 50, 52, 0.8, 3]], [[5, 5, 20, 25, 0.2, 1]])
    stored = DET.stored_arrays(p.numpy(), t.numpy(), lambda idx: np.zeros((len(idx), 1, 64, 64), np.uint8))
    assert set(DET.required_arrays) <= set(stored)
    assert np.array_equal(stored["pred"], p.numpy()) and stored["pred"].dtype == np.float32
    ap = stored["ap50_per_class"]
    assert ap[[0, 1, 3]].tolist() == [1.0, 1.0, 1.0] and np.isnan(ap[[2, 4, 5, 6, 7, 8, 9]]).all()
    images, truths, predicted = DET.example_drawings({f"{k}__det": v for k, v in stored.items()}, "det")
    assert len(images) == 2 and [len(d.boxes) for d in truths] == [2, 1]
    assert [len(d.boxes) for d in predicted] == [2, 0]  # the 0.2-score box is under the drawn threshold


def test_dense_kinds_cannot_be_ensembled_and_the_others_can():
    combinable = {k for k in KINDS.names() if KINDS.get(k).combine is not TaskSpec.combine}
    assert combinable == {"multiclass", "binary", "regression"}
