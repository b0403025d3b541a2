"""Sequential strategies (LwF, fine-tuning): teacher, replay, slices, R matrix, and the report section."""

import json
import re

import pytest
import torch
from torch import nn

from bench.config import DatasetConfig, SuiteError, TrainConfig, load_suite
from bench.data import load_taskset
from bench.grid import expand
from bench.models import Backbone, MultiHeadNet
from bench.registry import check_params
from bench.strategies import SequentialFinetune, SequentialLwF, disjoint_indices, replay_buffer
from bench.trainer import Trainer

TASKS = ("quadrant", "top", "brightness")


@pytest.fixture(scope="module")
def data():
    cfg = DatasetConfig(name="synthetic", tasks=TASKS, val_size=16,
                        options={"n_train": 64, "n_test": 32, "image_size": 8})
    return load_taskset(cfg)


def tiny_model(data) -> MultiHeadNet:
    torch.manual_seed(0)
    backbone = Backbone([nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU())], image_size=8,
                        channels=16, stride=8, trunk=nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 16), nn.ReLU()),
                        vector_dim=16)
    return MultiHeadNet(backbone, data.specs)


def trainer() -> Trainer:
    cfg = TrainConfig(epochs=1, batch_size=16, optimizer="adam", lr=1e-2, weight_decay=0.0,
                      warmup_epochs=0, crop_pad=1)
    return Trainer(cfg, torch.device("cpu"), seed=0)


def test_teacher_is_frozen_copy_while_student_learns(data):
    model, tr = tiny_model(data), trainer()
    tr.fit(model, data, {"quadrant": data.specs["quadrant"]})
    distiller = SequentialLwF().distiller(model, ["quadrant"], data.specs, {}, tr, data)
    before = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    result = tr.fit(model, data, {"top": data.specs["top"]}, extra_loss=distiller, stage="2:top")
    teacher = distiller.teacher
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    student = dict(model.named_parameters())
    assert any(not torch.equal(student[n], p) for n, p in teacher.named_parameters())  # a copy, not the model
    assert all(row["train_loss_extra"] > 0 and row["stage"] == "2:top" for row in result.history)


def test_finetune_never_builds_a_teacher_and_has_no_distillation(data, monkeypatch):
    model = tiny_model(data)
    assert SequentialFinetune().distiller(model, ["quadrant", "top"], data.specs, {}, trainer(), data) is None
    with pytest.raises(ValueError, match="distill_weight: unknown parameter"):
        check_params(SequentialFinetune, {"distill_weight": 1.0}, "strategies[0]")

    def no_teacher(*args, **kwargs):
        raise AssertionError("fine-tuning built a teacher")

    monkeypatch.setattr("bench.strategies.Distiller", no_teacher)
    result = SequentialFinetune().fit(model, data, data.specs, trainer())
    assert [r["stage"] for r in result.history] == ["1:quadrant", "2:top", "3:brightness"]
    assert all(r["train_loss_extra"] == 0 for r in result.history)


def test_lwf_fit_records_r_and_ends_in_final_stage_state(data):
    strategy = SequentialLwF(order=["top", "brightness", "quadrant"], replay=8, disjoint=True, stage_epochs=2,
                             lr_old_heads=0.5)
    model, tr = tiny_model(data), trainer()
    result = strategy.fit(model, data, data.specs, tr)
    R = result.extra["R"]
    assert result.extra["stages"] == ["top", "brightness", "quadrant"] and len(R) == 3 and all(len(r) == 3 for r in R)
    assert [r["stage"] for r in result.history] == ["1:top"] * 2 + ["2:brightness"] * 2 + ["3:quadrant"] * 2
    assert all(r["train_loss_extra"] > 0 for r in result.history[2:])
    final = tr.evaluate(model, data, data.test, data.specs)  # what the runner's test predictions will score
    assert [final[t][data.specs[t].primary] for t in result.extra["stages"]] == pytest.approx(R[-1])
    assert set(result.val_metrics) == set(TASKS)


def test_lr_factors_freeze_unlearned_heads():
    f = SequentialLwF(lr_backbone=0.1, lr_old_heads=0.2).lr_factors(["a", "b", "c"], 1)
    assert f == {"backbone": 0.1, "shared": 1.0, "head/a": 0.2, "head/b": 1.0, "head/c": 0.0}


def test_disjoint_slices_are_disjoint_cover_and_do_not_depend_on_seed():
    torch.manual_seed(123)
    parts = disjoint_indices(10, 3)
    assert sorted(len(p) for p in parts) == [3, 3, 4]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    assert all(torch.equal(a, b) for a, b in zip(parts, disjoint_indices(10, 3)))


def test_replay_buffer_holds_n_inputs_per_earlier_task(data):
    buf = replay_buffer(data.train, 5, seed=0)
    assert buf.shape == (5, *data.train.x.shape[1:]) and buf.dtype == torch.uint8
    rows = {tuple(x.flatten().tolist()) for x in data.train.x}
    assert all(tuple(x.flatten().tolist()) in rows for x in buf)
    assert len(replay_buffer(data.train, 10_000, seed=0)) == len(data.train)
    buffers = {"quadrant": buf, "top": replay_buffer(data.train, 5, seed=1)}
    model = tiny_model(data)
    distiller = SequentialLwF(replay=5).distiller(model, ["quadrant", "top"], data.specs, buffers, trainer(), data)
    assert len(distiller.replay) == 10 and distiller.batch_size == 10


def test_bad_values_name_the_suite_entry(tiny_suite, write_suite):
    bad_order = tiny_suite(strategies=[{"name": "sequential_lwf", "id": "lwf", "order": ["top", "brightness"]}])
    with pytest.raises(SuiteError, match=r"strategies\.lwf \(dataset synthetic\): order"):
        expand(load_suite(write_suite(bad_order)))
    bad_temperature = tiny_suite(strategies=[{"name": "sequential_lwf", "temperature": {"top": 0}}])
    with pytest.raises(SuiteError, match=r"strategies\[0\]\.temperature\.top: 0 is out of range; valid: > 0"):
        load_suite(write_suite(bad_temperature))


def test_smoke_report_has_forgetting_section_and_figure(smoke_run):
    reports, results = smoke_run["reports"], smoke_run["results"] / "smoke"
    report = (reports / "smoke.md").read_text()
    start = report.index("## Forgetting")
    section = report[start:report.index("\n## ", start)]
    for text in ("### synthetic / sequential_lwf", "### synthetic / sequential_finetune", "| after stage",
                 "drop ≤ 5%", "BWT", "average final", "n = 2 seeds",
                 "![forgetting synthetic](smoke/forgetting_synthetic.png)"):
        assert text in section, text
    assert len(re.findall(r"\| (pass|FAIL) +\|", section)) == 6  # three tasks per strategy
    assert (reports / "smoke" / "forgetting_synthetic.png").read_bytes().startswith(b"\x89PNG")
    records = [json.loads(p.read_text()) for p in results.glob("synthetic__sequential_*/record.json")]
    assert len(records) == 4
    for m in records:  # the runner's test metrics are the final model's: R's last row
        final = [m["test"][t]["accuracy" if t != "brightness" else "mae"] for t in m["extra"]["stages"]]
        assert m["extra"]["R"][-1] == pytest.approx(final)
