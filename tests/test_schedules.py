"""Schedules and early stopping follow their definitions: the trainer is driven by a hand-made
validation curve (its evaluation replaced by the curve), and the learning rates it records are
compared with hand-worked values and with torch's ReduceLROnPlateau fed the same numbers."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bench.config import DatasetConfig, SuiteError, TrainConfig, load_suite
from bench.data import load_taskset
from bench.grid import expand
from bench.models import BACKBONES, BackboneContext, MultiHeadNet
from bench.schedules import EarlyStopping, LrSchedule
from bench.trainer import Trainer

BASE = TrainConfig(epochs=10, batch_size=16, optimizer="sgd", lr=0.1, weight_decay=0.0, warmup_epochs=0,
                   crop_pad=0, flip=False)


@pytest.fixture(scope="module")
def tiny_data():
    cfg = DatasetConfig(name="synthetic", tasks=("quadrant",), val_size=16,
                        options={"n_train": 48, "n_test": 16, "image_size": 8})
    return load_taskset(cfg)  # 32 train images: 2 steps per epoch at batch 16


def fit_on_curve(data, cfg: TrainConfig, curve: list[float], monkeypatch):
    """Train with validation losses taken from `curve`, one per epoch; return the FitResult."""
    specs = {"quadrant": data.specs["quadrant"]}
    torch.manual_seed(0)
    ctx = BackboneContext(in_channels=3, image_size=8)
    model = MultiHeadNet(BACKBONES.get("convnet")(ctx, widths=[4], hidden=8), specs)
    trainer = Trainer(cfg, torch.device("cpu"), seed=0)
    values = iter(curve)
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: {"quadrant": {"loss": next(values), "accuracy": 0.0}})
    return trainer.fit(model, data, specs)


def lrs(result) -> list[float]:
    return [round(row["lr"], 10) for row in result.history]


def torch_plateau_lrs(curve: list[float], lr: float, **kw) -> list[float]:
    """The rate each epoch trains with under torch's ReduceLROnPlateau stepped after it on `curve`."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
    out = []
    for value in curve:
        out.append(round(opt.param_groups[0]["lr"], 10))
        sched.step(value)
    return out


CURVE = [1.0, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7]


def test_plateau_halves_the_rate_after_patience_epochs_without_improvement(tiny_data, monkeypatch):
    cfg = dataclasses.replace(BASE, schedule="plateau", plateau={"factor": 0.5, "patience": 2, "threshold": 0.0})
    result = fit_on_curve(tiny_data, cfg, CURVE, monkeypatch)
    # By hand: best 0.8 at epoch 2; epochs 3, 4, 5 do not improve, so after epoch 5 (the third, > patience
    # 2) the rate halves; best 0.7 at epoch 6; after epochs 7, 8, 9 it halves again.
    assert lrs(result) == [0.1] * 5 + [0.05] * 4 + [0.025]
    assert lrs(result) == torch_plateau_lrs(CURVE, 0.1, factor=0.5, patience=2, threshold=0.0)


def test_plateau_min_lr_and_score_selection_follow_torch(tiny_data, monkeypatch):
    # select: score maximises the mean primary metric; here the evaluation's accuracy is 0 each epoch, so
    # the score never improves after epoch 1: from epoch 2 on the rate halves after every epoch
    # (patience 0), but never below min_lr.
    cfg = dataclasses.replace(BASE, epochs=5, select="score", schedule="plateau",
                              plateau={"factor": 0.5, "patience": 0, "min_lr": 0.03})
    result = fit_on_curve(tiny_data, cfg, [1.0] * 5, monkeypatch)
    assert lrs(result) == [0.1, 0.1, 0.05, 0.03, 0.03]
    assert lrs(result) == torch_plateau_lrs([0.0] * 5, 0.1, mode="max", factor=0.5, patience=0, min_lr=0.03)


def test_plateau_waits_for_the_warmup(tiny_data, monkeypatch):
    cfg = dataclasses.replace(BASE, epochs=5, warmup_epochs=2, schedule="plateau",
                              plateau={"factor": 0.5, "patience": 0})
    result = fit_on_curve(tiny_data, cfg, [1.0] * 5, monkeypatch)
    # 2 steps per epoch, 4 warmup steps: the last step of epoch 1 runs at 2/4 of the rate, of epoch 2 at
    # 4/4. The plateau starts counting after epoch 2: epoch 2's loss is its first best, epoch 3 does not
    # improve (patience 0), so epoch 4 runs at half, epoch 5 at a quarter.
    assert lrs(result) == [0.05, 0.1, 0.1, 0.05, 0.025]


def test_early_stopping_stops_after_patience_epochs_and_keeps_the_best_epoch(tiny_data, monkeypatch):
    curve = [1.0, 0.9, 0.85, 0.86, 0.84, 0.88, 0.87, 0.86, 0.9, 0.5]
    cfg = dataclasses.replace(BASE, early_stopping={"patience": 3, "min_delta": 0.02})
    result = fit_on_curve(tiny_data, cfg, curve, monkeypatch)
    # By hand: improvements (by more than 0.02) at epochs 1, 2, 3 (best 0.85); 0.86 and 0.88 do not
    # improve, nor 0.84 (by 0.01 only): three epochs without improvement, so it stops after epoch 6.
    assert len(result.history) == 6 and result.images == 6 * 32
    assert result.best_epoch == 5  # the best epoch is still the lowest loss trained (0.84), no min_delta


def test_early_stopping_unit():
    stop = EarlyStopping(patience=2, higher_is_better=True)
    assert [stop.update(v) for v in (0.5, 0.6, 0.6, 0.55)] == [False, False, False, True]


def test_warmup_then_cosine_and_onecycle_factors():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    cosine = LrSchedule(opt, schedule="cosine", warmup_epochs=1, epochs=5, steps_per_epoch=2)
    onecycle = LrSchedule(opt, schedule="onecycle", warmup_epochs=1, epochs=5, steps_per_epoch=2)
    # 10 steps, 2 of warmup: (i + 1) / 2, then over the 8 remaining steps half a cosine, or a line, to 0
    assert [cosine.factor(i) for i in (0, 1, 2, 6)] == pytest.approx([0.5, 1.0, 1.0, 0.5])
    assert cosine.factor(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert [onecycle.factor(i) for i in (2, 6, 9)] == pytest.approx([1.0, 0.5, 1 / 8])
    no_warmup = LrSchedule(opt, schedule="cosine", warmup_epochs=0, epochs=5, steps_per_epoch=2)
    assert no_warmup.factor(0) == 1.0 and no_warmup.factor(5) == pytest.approx(0.5)
    # 0.1 epoch is a fifth of a step, still a warmup (only 0 means none): one step, after which the cosine
    # runs over the 9 steps left
    short = LrSchedule(opt, schedule="cosine", warmup_epochs=0.1, epochs=5, steps_per_epoch=2)
    assert [short.factor(i) for i in (0, 1)] == [1.0, 1.0]
    assert short.factor(4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 9)))


@pytest.mark.parametrize("train, message", [
    ({"schedule": "plateau", "plateau": {"factor": 2}}, r"train\.plateau\.factor: must be in \(0, 1\), got 2"),
    ({"schedule": "plateau", "plateau": {"patience": 1.5}}, r"train\.plateau\.patience: must be a whole number"),
    ({"schedule": "plateau", "plateau": {"mode": "min"}}, r"train\.plateau\.mode: unknown key; valid: factor, patience"),
    ({"schedule": "plateau", "plateau": {"threshold_mode": "max"}}, r"train\.plateau\.threshold_mode: must be rel or abs"),
    ({"early_stopping": {"min_delta": 0.1}}, r"train\.early_stopping\.patience: expected a whole number of epochs >= 1"),
    ({"early_stopping": {"patience": 3, "delta": 0.1}}, r"train\.early_stopping\.delta: unknown key; valid: patience, min_delta"),
    ({"precision": "fp8"}, r"train\.precision: 'fp8' unknown; valid: auto, fp32, bf16, fp16"),
])
def test_bad_schedule_settings_are_refused_with_their_key_path(tiny_suite, write_suite, train, message):
    raw = tiny_suite()
    raw["train"].update(train)
    with pytest.raises(SuiteError, match=message):
        load_suite(write_suite(raw))


def test_plateau_settings_without_the_plateau_schedule_are_refused(tiny_suite, write_suite):
    raw = tiny_suite(strategies=[{"name": "hard_share", "train": {"plateau": {"factor": 0.2}}}])
    with pytest.raises(SuiteError, match=r"strategies\.hard_share on dataset synthetic: train\.plateau: set, "
                                         r"but schedule is 'onecycle'; set schedule: plateau too"):
        expand(load_suite(write_suite(raw)))
