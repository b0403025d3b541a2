"""Augmentation as the trainer runs it: the built-in flip and the kornia pipeline keep each label with
its pixels through the dataset's label maps (synthetic's quadrant used to be corrupted by `flip: true`),
an epoch's augmentation is fixed by the cell's seed, and an op without a label map stops a fit before
its first step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.config import DatasetConfig, TrainConfig
from bench.data import DATASETS, load_taskset
from bench.models import BACKBONES, BackboneContext, MultiHeadNet
from bench.trainer import Trainer

CPU = torch.device("cpu")
CFG = TrainConfig(epochs=1, batch_size=16, optimizer="adam", lr=1e-3, weight_decay=0.0, warmup_epochs=0,
                  crop_pad=0, flip=False)


@pytest.fixture(scope="module")
def data():
    cfg = DatasetConfig(name="synthetic", tasks=("quadrant", "top", "brightness"), val_size=16,
                        options={"n_train": 272, "n_test": 16, "image_size": 16, "channels": 1})
    return load_taskset(cfg)


def seen_quadrant(x: torch.Tensor) -> torch.Tensor:
    """The quadrant (0 TL, 1 TR, 2 BL, 3 BR) holding the bright square of each (B, 1, 16, 16) image."""
    return x.float().view(len(x), 1, 2, 8, 2, 8).mean((1, 3, 5)).flatten(1).argmax(1)


def augmented(data, cfg: TrainConfig, seed: int = 0):
    specs = {t: data.specs[t] for t in data.specs}
    augment = Trainer(cfg, CPU, seed)._augmentation(data, specs)
    return augment(data.train.x, dict(data.train.y))


def test_the_built_in_flip_keeps_synthetic_labels_with_their_pixels(data):
    assert torch.equal(seen_quadrant(data.train.x), data.train.y["quadrant"])  # the check itself holds
    x, y = augmented(data, dataclasses.replace(CFG, flip=True))
    assert torch.equal(seen_quadrant(x), y["quadrant"])
    changed = y["quadrant"] != data.train.y["quadrant"]
    assert 0.3 < changed.float().mean() < 0.7  # about half mirrored, and those changed quadrant
    assert torch.equal(y["top"], data.train.y["top"]) and torch.equal(y["brightness"], data.train.y["brightness"])


def test_the_pipeline_keeps_labels_with_pixels_and_is_fixed_by_the_seed(data):
    cfg = dataclasses.replace(CFG, flip=True, augment=[{"op": "vflip"}, {"op": "noise", "std": 0.02}])
    x, y = augmented(data, cfg)
    assert torch.equal(seen_quadrant(x), y["quadrant"])
    assert torch.equal(y["top"], (y["quadrant"] < 2).long())  # `top` follows the vertical flips
    again, _ = augmented(data, cfg)
    other, _ = augmented(data, cfg, seed=1)
    assert torch.equal(x, again) and not torch.equal(x, other)


def test_an_op_without_a_label_map_stops_the_fit_before_any_step(data):
    cfg = dataclasses.replace(CFG, augment=[{"op": "rot90"}])  # `top` declares no quarter turn
    specs = {t: data.specs[t] for t in ("quadrant", "top")}
    model = MultiHeadNet(BACKBONES.get("convnet")(BackboneContext(1, 16), widths=[4], hidden=8), specs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"augment\[0\] \(rot90\): dataset 'synthetic' declares no label map for "
                                         r"rot90 on task 'top'"):
        Trainer(cfg, CPU, 0).fit(model, data, specs)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_flip_tta_only_where_every_label_keeps_under_a_mirror(data):
    keeps = Trainer._flip_keeps_labels
    assert not keeps(data, data.specs)  # quadrant changes under a mirror
    assert keeps(data, {t: data.specs[t] for t in ("top", "brightness")})
    cifar = DATASETS.get("cifar10").declare({})
    assert set(cifar.label_maps["class10"]) == {"hflip", "rotate"}
