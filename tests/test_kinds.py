"""Task kinds as plug-ins: the registry, masked (partial-label) losses against the loss on the
labelled items alone, placeholders, target checks, and the clear error of a missing behaviour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from bench.kinds import KINDS, TaskSpec, make_spec, register

SPECS = [make_spec("multiclass", name="m", classes=4), make_spec("binary", name="b"),
         make_spec("regression", name="r", dim=3), make_spec("segmentation", name="s", classes=3),
         make_spec("detection", name="d", classes=2, image_size=16)]


def _boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, 5): one or two boxes per image on a 16 px image (a padding row otherwise)."""
    lo = torch.randint(0, 8, (n, 3, 2), generator=gen).float()
    rows = torch.cat([lo, lo + torch.randint(2, 8, (n, 3, 2), generator=gen), torch.randint(0, 2, (n, 3, 1), generator=gen)], 2)
    rows[torch.arange(n) % 2 == 0, 2] = torch.tensor([0, 0, 0, 0, -1.0])
    return rows


# per kind: (head output, targets) for n items
BATCHES = {
    "multiclass": lambda s, n, g: (torch.randn(n, s.out_channels, generator=g), torch.randint(0, s.classes, (n,), generator=g)),
    "binary": lambda s, n, g: (torch.randn(n, 1, generator=g), torch.randint(0, 2, (n,), generator=g)),
    "regression": lambda s, n, g: (torch.randn(n, s.dim, generator=g), torch.randn(n, s.dim, generator=g)),
    "segmentation": lambda s, n, g: (torch.randn(n, s.classes, 16, 16, generator=g),
                                     torch.randint(0, s.classes, (n, 16, 16), generator=g)),
    "detection": lambda s, n, g: (torch.randn(n, s.out_channels, 4, 4, generator=g), _boxes(n, g)),
}


def test_specs_cover_every_kind():
    assert {s.kind for s in SPECS} == set(KINDS.names()) == set(BATCHES)


def _batch(spec: TaskSpec, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return BATCHES[spec.kind](spec, n, gen)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_masked_loss_is_the_loss_on_the_labelled_items_alone(spec, smoothing):
    gen = torch.Generator().manual_seed(0)
    out, target = _batch(spec, 10, gen)
    labelled = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1, 1], dtype=torch.bool)
    masked = spec.loss(out, target, label_smoothing=smoothing, labelled=labelled)
    alone = spec.loss(out[labelled], target[labelled], label_smoothing=smoothing)
    assert masked.item() == pytest.approx(alone.item(), rel=1e-6)
    everything = spec.loss(out, target, label_smoothing=smoothing, labelled=torch.ones(10, dtype=torch.bool))
    assert everything.item() == pytest.approx(spec.loss(out, target, label_smoothing=smoothing).item(), rel=1e-6)
    nothing = spec.loss(out, target, labelled=torch.zeros(10, dtype=torch.bool))
    assert nothing.item() == 0.0  # a batch without this task's labels contributes no loss and no NaN


def test_registry_and_round_trip_through_a_stored_record():
    assert {"multiclass", "binary", "regression", "segmentation", "detection"} <= set(KINDS.names())
    for spec in SPECS:
        again = TaskSpec.from_dict(spec.to_dict())
        assert again == spec and type(again) is type(spec)
    # a record written before kinds were classes stored the same fields (kind among them)
    legacy = {"name": "digit", "kind": "multiclass", "classes": 10, "dim": 1, "class_names": list("0123456789")}
    assert TaskSpec.from_dict(legacy).label(3) == "3"


def test_directions_come_from_the_kind():
    m, _, r, seg, det = SPECS
    assert m.primary == "accuracy" and m.higher_is_better and not m.better_high("ece")
    assert r.primary == "mae" and not r.higher_is_better and not r.better_high("rmse")
    assert m.unit == "accuracy %" and r.unit == "MAE (lower is better)"
    assert (seg.primary, seg.unit, det.primary, det.unit) == ("miou", "mIoU %", "map_50", "mAP@0.5 %")
    assert seg.higher_is_better and det.higher_is_better and det.better_high("map") and not det.better_high("loss")


def test_placeholder_has_the_layout_of_the_targets():
    target = torch.randn(5, 3)
    ph = SPECS[2].placeholder(target, 7)
    assert ph.shape == (7, 3) and ph.dtype == target.dtype
    assert SPECS[0].placeholder(torch.tensor([1, 2]), 4).tolist() == [0, 0, 0, 0]


def test_out_of_range_class_is_refused_with_index_and_value():
    with pytest.raises(ValueError, match=r"dataset x \(train\): task m, item 2: class 7 outside 0..3"):
        SPECS[0].check_targets(torch.tensor([0, 3, 7, -1]), image_size=8, where="dataset x (train)")


def test_a_kind_that_lacks_a_behaviour_says_so():
    @dataclass(frozen=True, kw_only=True)
    class Ordinal(TaskSpec):
        primary = "accuracy"

    spec = Ordinal(name="grade", classes=5)
    with pytest.raises(NotImplementedError, match="task grade: kind '' does not implement loss"):
        spec.loss(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(NotImplementedError, match="does not implement metrics"):
        spec.metrics(np.zeros((2, 5)), np.zeros(2))


def test_registering_a_kind_twice_is_refused():
    with pytest.raises(ValueError, match="task kind 'binary' is registered twice"):
        register("binary")(type("Again", (TaskSpec,), {}))
