"""Seed 003 for real: the `onehead` model, LwF's per-stage settings and feature distillation, the
parameter-group learning rates, ensembles refused for dense tasks, and the smoke suite end to end
(segmentation -> detection -> classification, through store and report) on fake source files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from bench import cli
from bench.config import DatasetConfig, SuiteError, TrainConfig, load_suite
from bench.grid import expand
from bench.kinds import make_spec
from bench.models import BACKBONES, BackboneContext, MultiHeadNet, count_params
from bench.strategies import Distiller, SequentialLwF
from bench.trainer import Trainer, group_factor
from conftest import SUITES
from test_scenes import write_fake_sources

SEED003 = {"seg": make_spec("segmentation", name="seg", classes=11),
           "det": make_spec("detection", name="det", classes=10, image_size=64),
           "clothing": make_spec("multiclass", name="clothing", classes=10)}


def onehead_model(**params) -> MultiHeadNet:
    torch.manual_seed(0)
    return MultiHeadNet(BACKBONES.get("onehead")(BackboneContext(in_channels=1, image_size=64), **params), SEED003)


# ---- the model ---------------------------------------------------------------------------------------
def test_onehead_parameter_count_and_groups():
    model = onehead_model()
    sizes = {name: sum(p.numel() for p in ps) for name, ps in model.param_groups().items()}
    # By hand (convs without bias before BN; BN: 2 per channel). Backbone: stem 1*16*9 + 32 = 176;
    # BasicBlock 16->32: 16*32*9 + 32*32*9 + 16*32 (projection) + 3 BN * 64 = 14,528; the neck's deeper
    # BasicBlock 32->64: 32*64*9 + 64*64*9 + 32*64 + 3 * 128 = 57,728.
    assert sizes["backbone"] == 176 + 14_528 + 57_728
    assert sizes["shared/neck"] == 96 * 64 + 128 + 64 * 64 * 9 + 128  # conv1x1 on 32 + 64 channels, conv3x3
    assert sizes["shared/early"] == sizes["shared/mid"] == sizes["shared/late"] == 64 * 64 * 9 + 128
    assert sizes["head/seg"] == 64 * 11 + 11  # conv1x1 with bias
    assert sizes["head/det"] == 64 * 32 + 64 + 32 * 14 + 14  # conv1x1, BN, conv1x1 to 10 heatmaps + 4
    assert sizes["head/clothing"] == 64 * 10 + 10
    assert count_params(model) == sum(sizes.values()) == 230_611 < 8_000_000  # seed 003's cap


def test_onehead_fuses_strides_4_and_8_into_a_stride_4_map():
    model = onehead_model().eval()
    x = torch.randn(2, 1, 64, 64)
    shapes = [tuple(o.shape[1:]) for o in model.backbone.forward_stages(x)]
    assert shapes == [(16, 32, 32), (32, 16, 16)] + [(64, 16, 16)] * 4  # stem, stage, neck, shared head x 3
    out, features = model.forward_features(x)
    assert features["map"].shape == (2, 64, 16, 16) and model.backbone.features().stride == 4
    assert out["seg"].shape == (2, 11, 64, 64) and out["det"].shape == (2, 14, 16, 16) and out["clothing"].shape == (2, 10)
    with pytest.raises(ValueError, match="divisible by 16"):
        BACKBONES.get("onehead")(BackboneContext(in_channels=1, image_size=40), widths=[8, 16, 32, 64])


def test_group_factors_match_names_then_prefixes():
    factors = {"backbone": 0.005, "shared": 0.01, "shared/mid": 0.05, "shared/late": 1.0}
    assert [group_factor(n, factors) for n in ("backbone", "shared/neck", "shared/mid", "shared/late", "head/det",
                                               "shared_other")] == [0.005, 0.01, 0.05, 1.0, 1.0, 1.0]


def test_lwf_stage_learning_rates_reach_the_optimizer_per_group():
    lwf = SequentialLwF(lr_backbone=0.005, lr_shared=0.01, lr_groups={"shared/mid": 0.05, "shared/late": 1.0},
                        lr_old_heads=0.2)
    order = ["seg", "det", "clothing"]
    assert lwf.lr_factors(order, 0) == {"head/seg": 1.0, "head/det": 0.0, "head/clothing": 0.0}  # from scratch: all
    trainer = Trainer(TrainConfig(optimizer="adamw", lr=1e-3), torch.device("cpu"), seed=0)
    opt = trainer._optimizer(onehead_model(), lwf.lr_factors(order, 1), lr=2e-3)  # stage 2's peak lr
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"backbone": 1e-5, "shared/neck": 2e-5, "shared/early": 2e-5, "shared/mid": 1e-4,
                                 "shared/late": 2e-3, "head/seg": 4e-4, "head/det": 2e-3})  # clothing: not yet
    with pytest.raises(ValueError, match=r"lr_groups: \['shared/lat'\] name no parameter group.*shared/late"):
        SequentialLwF(lr_groups={"shared/lat": 1.0})._check_groups(onehead_model())


def test_feature_distillation_is_the_mse_of_the_shared_map():
    model = onehead_model().eval()  # eval: the student's BN uses running statistics, as the teacher's does
    x = torch.randn(4, 1, 64, 64)
    distiller = Distiller(model, {}, {}, {}, feature_weight=2.5, replay=None, norm=lambda v: v, batch_size=4, seed=0)
    assert distiller(model, x, model(x)).item() == 0.0  # the student starts as the teacher
    with torch.no_grad():
        model.backbone.stages[-1][0].weight.mul_(1.1)  # the shared head's last conv
    expected = 2.5 * ((model.forward_features(x)[1]["map"] - distiller.teacher.forward_features(x)[1]["map"]) ** 2).mean()
    assert distiller(model, x, model(x)).item() == pytest.approx(expected.item(), rel=1e-5) and expected.item() > 0


# ---- suites ------------------------------------------------------------------------------------------
def test_ensembles_of_dense_tasks_are_refused_before_training(tiny_suite, write_suite, capsys):
    raw = tiny_suite(datasets={"digit_scenes": {"tasks": ["seg", "det"]}},
                     strategies=["hard_share", {"name": "ensemble", "of": "hard_share", "seeds": [0]}])
    with pytest.raises(SuiteError, match=r"strategies.ensemble .*cannot be combined: seg \(segmentation\), det \(detection\)"):
        expand(load_suite(write_suite(raw)))
    assert cli.main(["validate", str(write_suite(raw))]) == 2


@pytest.mark.parametrize("edit, message", [
    ({"stage_epochs": [1, 2]}, r"stage_epochs: 2 values for 3 stages"),
    ({"stage_lr": [0.1, 0.1, 0.0]}, r"stage_lr: .* out of range"),
    ({"lr_groups": {"head/seg": 0.1}}, r"lr_groups: .* out of range"),
])
def test_bad_stage_settings_name_the_suite_entry(tiny_suite, write_suite, edit, message):
    raw = tiny_suite(strategies=[{"name": "sequential_lwf", "id": "lwf", **edit}])
    with pytest.raises(SuiteError, match=message):
        expand(load_suite(write_suite(raw)))


def test_the_real_suite_validates_into_its_grid():
    suite = load_suite(SUITES / "onehead_sequential.yaml")
    cells = expand(suite)
    per_seed = {"stl": 3, "joint": 1, "finetune": 1, "lwf": 1}
    assert len(cells) == sum(per_seed.values()) * 3 and {c.strategy.id for c in cells} == set(per_seed)
    assert all(len(c.name) < 200 for c in cells)  # folder names stay well under the file system's 255
    lwf = next(c for c in cells if c.strategy.id == "lwf")
    assert lwf.tasks == ("seg", "det", "clothing") and lwf.backbone.name == "onehead"


# ---- the smoke suite end to end ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def onehead_run(tmp_path_factory):
    """suites/smoke_onehead.yaml through `bench run` on CPU, on fake MNIST and Fashion-MNIST files."""
    root = tmp_path_factory.mktemp("onehead")
    write_fake_sources(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_DATA_DIR", str(root / "data"))
        mp.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        code = cli.main(["run", str(SUITES / "smoke_onehead.yaml"), "--device", "cpu",
                         "--results", str(root / "results"), "--reports", str(root / "reports")])
    records = {p.parent.name: json.loads(p.read_text()) for p in (root / "results" / "smoke_onehead").glob("*/record.json")}
    return {"code": code, "records": records, "results": root / "results" / "smoke_onehead",
            "report": (root / "reports" / "smoke_onehead.md").read_text(), "reports": root / "reports"}


def test_smoke_onehead_trains_every_cell(onehead_run):
    records = onehead_run["records"]
    assert onehead_run["code"] == 0, {n: r["reason"] for n, r in records.items()}
    assert len(records) == 6 and all(r["status"] == "done" for r in records.values())
    shared = {r["params"] for n, r in records.items() if "__stl" not in n}
    assert len(shared) == 1  # joint, fine-tuning and LwF train the same one-head model
    for name, r in records.items():
        preds = np.load(onehead_run["results"] / name / "predictions.npz")
        assert set(r["test"]) == set(r["tasks"])
        if "seg" in r["tasks"]:  # a confusion matrix, never N x C x H x W probabilities
            assert "pred__seg" not in preds and preds["confusion__seg"].shape == (11, 11)
            assert preds["confusion__seg"].sum() == 8 * 32 * 32  # every pixel of the 8 test scenes
        if "det" in r["tasks"]:
            assert preds["pred__det"].shape[1:] == (20, 6) and len(preds["target__det"]) == 8


def test_smoke_onehead_sequential_cells_record_three_stages(onehead_run):
    for name, r in onehead_run["records"].items():
        if "sequential" not in name:
            continue
        assert r["extra"]["stages"] == ["seg", "det", "clothing"] and np.asarray(r["extra"]["R"]).shape == (3, 3)
        history = (onehead_run["results"] / name / "history.csv").read_text().splitlines()
        assert [line.split(",")[0] for line in history[1:]] == ["1:seg", "2:det", "3:clothing"]
        extra = [float(line.split(",")[history[0].split(",").index("train_loss_extra")]) for line in history[1:]]
        assert (extra[0] == 0) and ((extra[1] > 0 and extra[2] > 0) if "lwf" in name else extra == [0, 0, 0])


def test_smoke_onehead_report_has_dense_tables_examples_and_forgetting(onehead_run):
    report = onehead_run["report"]
    dense = report[report.index("## Dense tasks"):report.index("\n## ", report.index("## Dense tasks") + 5)]
    for text in ("### scenes_fashion / seg", "IoU % per class", "| background", "### scenes_fashion / det",
                 "AP@0.5 % per class", "![examples scenes_fashion seg]", "![examples scenes_fashion det]"):
        assert text in dense, text
    forgetting = report[report.index("## Forgetting"):]
    assert len(re.findall(r"^\| (seg|det|clothing) +\| (mIoU|mAP@0.5|accuracy) %", forgetting, flags=re.M)) == 6
    assert "scenes composed from real MNIST digits" in report and "| seg mIoU %" in report
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (onehead_run["reports"] / link).read_bytes().startswith(b"\x89PNG"), link


def test_freeze_norm_keeps_batch_norm_statistics_while_the_rest_learns():
    from bench.data import Split, TaskSet

    torch.manual_seed(0)
    x = torch.randint(0, 256, (32, 1, 64, 64), dtype=torch.uint8)
    split = Split(x, {"clothing": torch.arange(32) % 10})
    data = TaskSet(name="t", train=split, val=split, test=split, specs={"clothing": SEED003["clothing"]},
                   mean=(0.5,), std=(0.25,))
    model = MultiHeadNet(BACKBONES.get("onehead")(BackboneContext(in_channels=1, image_size=64)),
                         {"clothing": SEED003["clothing"]})
    trainer = Trainer(TrainConfig(epochs=1, batch_size=16, optimizer="adamw", lr=1e-2, crop_pad=0, flip=False),
                      torch.device("cpu"), seed=0)
    bn = model.backbone.stages[0][1]  # the stem's BatchNorm2d
    before = (bn.running_mean.clone(), bn.weight.detach().clone())
    trainer.fit(model, data, {"clothing": SEED003["clothing"]}, freeze_norm=True)
    assert torch.equal(bn.running_mean, before[0]) and bn.num_batches_tracked == 0  # never updated
    assert not torch.equal(bn.weight, before[1])  # its affine weight trained
    trainer.fit(model, data, {"clothing": SEED003["clothing"]})
    assert not torch.equal(bn.running_mean, before[0]) and bn.num_batches_tracked == 2
