"""Tasks from different datasets in one cell (a `union:` entry): partial labels from the suite file
through loading, training (each loss on the items carrying its label), evaluation and the store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench import cli
from bench.config import SuiteError, load_suite
from bench.data import Split, load_taskset

PART = {"val_size": 8, "options": {"n_train": 40, "n_test": 16, "image_size": 8}}


def union_suite(tiny_suite, **over):
    parts = [{"name": "synthetic", "tasks": ["quadrant"], **PART},
             {"name": "synthetic", "tasks": ["brightness"], **PART, "options": {**PART["options"], "seed": 1,
                                                                             "n_train": 56}}]
    return tiny_suite(datasets={"both": {"union": parts}}, **over)


def test_union_entry_parses_into_parts(tiny_suite, write_suite):
    suite = load_suite(write_suite(union_suite(tiny_suite)))
    ds = suite.datasets[0]
    assert ds.name == "both" and ds.tasks == ("quadrant", "brightness")
    assert [(p.name, p.tasks, p.options.get("seed")) for p in ds.parts] == [
        ("synthetic", ("quadrant",), None), ("synthetic", ("brightness",), 1)]


@pytest.mark.parametrize("edit, message", [
    (lambda u: u[1].update(tasks=["quadrant"]), r"datasets.both.union\[1\].tasks: task 'quadrant' also comes from part 0"),
    (lambda u: u[0].update(name="nope"), r"datasets.both.union\[0\].name: unknown dataset 'nope'"),
    (lambda u: u[0].update(train={}), r"datasets.both.union\[0\].train: unknown key; valid: name, tasks"),
    (lambda u: u[1]["options"].update(colour=1), r"datasets.both.union\[1\].options.colour: unknown parameter"),
])
def test_malformed_union_is_refused_with_its_key_path(tiny_suite, write_suite, edit, message):
    raw = union_suite(tiny_suite)
    edit(raw["datasets"]["both"]["union"])
    with pytest.raises(SuiteError, match=message):
        load_suite(write_suite(raw))


def test_union_loads_each_task_on_its_own_part_only(tiny_suite, write_suite):
    ds = load_suite(write_suite(union_suite(tiny_suite))).datasets[0]
    data = load_taskset(ds)
    # part 0: 40 - 8 val = 32 train; part 1: 56 - 8 = 48 train
    assert len(data.train) == 32 + 48 and len(data.val) == 16 and len(data.test) == 32
    q, b = data.train.labelled["quadrant"], data.train.labelled["brightness"]
    assert q[:32].all() and not q[32:].any() and b[32:].all() and not b[:32].any()
    assert (data.train.y["brightness"][:32] == 0).all()  # placeholders, never scored
    assert data.train.y["brightness"].shape == (80, 1) and data.train.y["quadrant"].dtype == torch.int64
    assert len(data.test.part("quadrant")) == 16 and len(data.test.part("brightness")) == 16
    groups = data.test.groups(["quadrant", "brightness"])
    assert [(tasks, len(split)) for tasks, split in groups] == [(["quadrant"], 16), (["brightness"], 16)]
    mean = data.train.x.float().div(255).mean().item()
    assert data.mean[0] == pytest.approx(data.train.x[:, 0].float().div(255).mean().item(), rel=1e-5)
    assert 0 < mean < 1


def test_groups_of_a_fully_labelled_split_is_the_split_itself():
    split = Split(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), {"a": torch.zeros(4), "b": torch.ones(4)})
    [(tasks, same)] = split.groups(["a", "b"])
    assert tasks == ["a", "b"] and same is split and split.part("a") is split


def test_parts_of_different_image_sizes_are_refused(tiny_suite, write_suite):
    raw = union_suite(tiny_suite)
    raw["datasets"]["both"]["union"][1]["options"]["image_size"] = 12
    with pytest.raises(ValueError, match=r"dataset both: the union.s parts have different image shapes"):
        load_taskset(load_suite(write_suite(raw)).datasets[0])


def test_union_suite_runs_joint_single_task_and_sequential(tiny_suite, write_suite, tmp_path):
    raw = union_suite(tiny_suite, strategies=["stl", "hard_share", {"name": "sequential_lwf", "stage_epochs": 1,
                                                                    "replay": 8}],
                      backbone={"name": "convnet", "widths": [4], "hidden": 8})
    results = tmp_path / "results"
    code = cli.main(["run", str(write_suite(raw)), "--device", "cpu", "--results", str(results),
                     "--reports", str(tmp_path / "reports")])
    records = {p.parent.name: json.loads(p.read_text()) for p in (results / "tiny").glob("*/record.json")}
    assert code == 0, {n: r.get("reason") for n, r in records.items()}
    assert len(records) == 4  # stl x 2 tasks, hard_share, sequential_lwf
    for name, record in records.items():
        preds = np.load(results / "tiny" / name / "predictions.npz")
        for task in record["tasks"]:
            # scored on that task's own 16 test images, never on the other part's
            assert len(preds[f"target__{task}"]) == 16, (name, task)
        assert set(record["test"]) == set(record["tasks"])
    lwf = next(r for n, r in records.items() if n.startswith("both__sequential_lwf"))
    assert np.asarray(lwf["extra"]["R"]).shape == (2, 2)
