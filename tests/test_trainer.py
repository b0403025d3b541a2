"""The trainer's selection, restore and schedule, by their behaviour on tiny data built so that the
validation and test splits disagree: validation carries the train images with their binary labels
flipped, test the same images with the true ones. Learning the train labels then makes the
validation loss rise and the test loss fall, so an epoch picked on validation is early and one
picked on test is late."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from bench.config import DatasetConfig, TrainConfig
from bench.data import Split, load_taskset
from bench.models import Backbone, MultiHeadNet
from bench.strategies import SequentialFinetune
from bench.trainer import Trainer

TASK = "top"  # binary


@pytest.fixture(scope="module")
def data():
    cfg = DatasetConfig(name="synthetic", tasks=("quadrant", TASK), val_size=16,
                        options={"n_train": 64, "n_test": 32, "image_size": 8})
    base = load_taskset(cfg)
    train = base.train
    flipped = Split(train.x, {t: (1 - v if t == TASK else v) for t, v in train.y.items()})
    return dataclasses.replace(base, val=flipped, test=train)


def model(data) -> MultiHeadNet:
    torch.manual_seed(0)
    backbone = Backbone([nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU())], image_size=8,
                        channels=32, stride=8, trunk=nn.Identity(), vector_dim=32)
    return MultiHeadNet(backbone, data.specs)


def trainer(**train) -> Trainer:
    cfg = TrainConfig(**{"epochs": 6, "batch_size": 16, "optimizer": "adam", "lr": 3e-2, "weight_decay": 0.0,
                         "warmup_epochs": 0, "crop_pad": 0, "flip": False, "schedule": "constant", **train})
    return Trainer(cfg, torch.device("cpu"), seed=0)


def _loss(tr: Trainer, net, data, split) -> float:
    return tr.evaluate(net, data, split, {TASK: data.specs[TASK]})[TASK]["loss"]


def test_best_epoch_is_chosen_on_validation_and_its_weights_restored(data):
    tr, net, test = trainer(), model(data), []
    tr.on_epoch = lambda row: test.append(_loss(tr, net, data, data.test))  # the model as each epoch left it
    result = tr.fit(net, data, {TASK: data.specs[TASK]})
    val = [row["val_loss"] for row in result.history]
    assert result.best_epoch == 1 + val.index(min(val))
    assert 1 + test.index(min(test)) > result.best_epoch  # picked on test, a later epoch would win
    # the history's validation numbers are the validation split's, and the model is the best epoch's
    assert _loss(tr, net, data, data.val) == pytest.approx(val[result.best_epoch - 1], rel=1e-6)
    assert result.val_metrics[TASK]["loss"] == pytest.approx(val[result.best_epoch - 1], rel=1e-6)
    assert _loss(tr, net, data, data.test) == pytest.approx(test[result.best_epoch - 1], rel=1e-6)


def test_ties_go_to_the_earliest_epoch(data):
    # lr 0: every epoch leaves the weights as they were, so every epoch scores the same
    for select in ("loss", "score"):
        result = trainer(lr=0.0, epochs=3, select=select).fit(model(data), data, {TASK: data.specs[TASK]})
        assert len({row["val_loss"] for row in result.history}) == 1
        assert result.best_epoch == 1, select


@pytest.mark.parametrize("schedule, warmup, factors", [
    # 3 steps per epoch (48 train images, batch 16), 12 in all; the history logs each epoch's last rate.
    # onecycle: warm up linearly over 3 steps ((s + 1) / 3), then 1 - (s - 3) / 9 down to 0 at step 12
    ("onecycle", 1.0, [1.0, 1 - 2 / 9, 1 - 5 / 9, 1 - 8 / 9]),
    ("cosine", 0.0, [0.5 * (1 + math.cos(math.pi * s / 12)) for s in (2, 5, 8, 11)]),
    ("constant", 1.0, [1.0, 1.0, 1.0, 1.0]),
])
def test_learning_rate_schedules(data, schedule, warmup, factors):
    result = trainer(epochs=4, schedule=schedule, warmup_epochs=warmup, lr=0.01).fit(
        model(data), data, {TASK: data.specs[TASK]})
    assert [row["lr"] for row in result.history] == pytest.approx([0.01 * f for f in factors])


def test_sequential_stages_monitor_earlier_tasks_without_selecting_on_them(data):
    tr = trainer(epochs=2)
    result = SequentialFinetune(order=["quadrant", TASK]).fit(model(data), data, data.specs, tr)
    first, second = result.history[:2], result.history[2:]
    assert all("val_top_loss" not in row or math.isnan(row["val_top_loss"]) for row in first)
    assert all(row["val_quadrant_accuracy"] >= 0 for row in second)  # the earlier task, still scored
    for row in second:  # selection (val_loss) counts the stage's own task only
        assert row["val_loss"] == pytest.approx(row["val_top_loss"])


@pytest.fixture(scope="module")
def mixed():
    """A classification task (accuracy: higher is better) and a regression task (MAE: lower is better)."""
    return load_taskset(DatasetConfig(name="synthetic", tasks=("quadrant", "brightness"), val_size=16,
                                      options={"n_train": 64, "n_test": 32, "image_size": 8}))


def test_score_selection_follows_each_tasks_direction(mixed, monkeypatch):
    # Validation as scripted per epoch. select: score is the mean of +accuracy and -MAE:
    # (0.50 - 0.10) / 2 = 0.20, (0.90 - 0.30) / 2 = 0.30, (0.80 - 0.60) / 2 = 0.10: epoch 2. Ignoring
    # accuracy would pick epoch 1 (lowest MAE); MAE counted as higher-is-better, epoch 3; loss, epoch 3.
    script = [(0.50, 0.10, 1.0), (0.90, 0.30, 0.9), (0.80, 0.60, 0.5)]  # accuracy, MAE, each task's loss
    for select, best in (("score", 2), ("loss", 3)):
        vals = iter([{"quadrant": {"accuracy": acc, "loss": loss}, "brightness": {"mae": mae, "loss": loss}}
                     for acc, mae, loss in script])
        tr = trainer(epochs=3, select=select)
        monkeypatch.setattr(tr, "evaluate", lambda *args: next(vals))
        result = tr.fit(model(mixed), mixed, mixed.specs)
        assert result.best_epoch == best, select
        acc, mae, _ = script[best - 1]
        assert (result.val_metrics["quadrant"]["accuracy"], result.val_metrics["brightness"]["mae"]) == (acc, mae)


def test_step_time_and_throughput_follow_their_definitions(data):
    # 48 training images in batches of 16: 3 steps and 48 images per epoch
    result = trainer(epochs=2).fit(model(data), data, {TASK: data.specs[TASK]})
    for row in result.history:
        assert row["step_ms"] == pytest.approx(1000 * row["train_seconds"] / 3)
        assert row["images_per_second"] == pytest.approx(48 / row["train_seconds"])
    assert result.train_seconds == pytest.approx(sum(row["train_seconds"] for row in result.history))
    assert result.images == 2 * 48


def test_the_gradient_probe_counts_steps_over_the_whole_fit(data, monkeypatch):
    # CosineProbe measures when its step, counted from 0 over the fit, is a multiple of `every`; with
    # every = 1 it sees each of the 2 x 3 steps once, in order.
    from bench import trainer as trainer_module

    seen = []

    class Spy(trainer_module.CosineProbe):
        def __call__(self, step, *batch):
            seen.append(step)
            return super().__call__(step, *batch)

    monkeypatch.setattr(trainer_module, "CosineProbe", Spy)
    result = trainer(epochs=2, grad_cosine_every=1).fit(model(data), data, data.specs)
    assert seen == list(range(6))
    assert all(-1 <= row["grad_cos_quadrant_vs_top"] <= 1 for row in result.history)


def test_the_weighting_gets_each_epochs_mean_task_losses(data, monkeypatch):
    # bench/weighting's seam: method.end_epoch((T,) the epoch's mean unweighted training losses), the
    # history's train_loss_<task> (DWA's loss ratios read them)
    calls, method = [], Trainer.method

    def spied(self, tasks):
        m = method(self, tasks)
        m.end_epoch = lambda losses: calls.append(losses.tolist())
        return m

    monkeypatch.setattr(Trainer, "method", spied)
    result = trainer(epochs=2).fit(model(data), data, data.specs)
    assert len(calls) == 2
    for row, losses in zip(result.history, calls):
        assert losses == pytest.approx([row["train_loss_quadrant"], row["train_loss_top"]], rel=1e-6)
