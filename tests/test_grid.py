"""The grid: cells, their readable names, and the keys that decide whether a stored result is reused."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from bench.config import TrainConfig, load_suite
from bench.grid import expand
from conftest import SUITES

# The smoke suite's cells of these entries, in grid order; cells of entries added later are not pinned here.
SMOKE_CELLS = [
    "synthetic__stl(task=quadrant)__seed0", "synthetic__stl(task=top)__seed0",
    "synthetic__stl(task=brightness)__seed0",
    "synthetic__stl(task=quadrant)__seed1", "synthetic__stl(task=top)__seed1",
    "synthetic__stl(task=brightness)__seed1",
    "synthetic__hard_share__seed0", "synthetic__hard_share__seed1",
    "synthetic__cross_stitch__seed0", "synthetic__cross_stitch__seed1",
    "synthetic__ensemble(of=hard_share,seeds=0+1)",
]
SMOKE_IDS = ("stl", "hard_share", "cross_stitch", "ensemble")


def test_smoke_suite_expands_to_named_cells():
    suite = load_suite(SUITES / "smoke.yaml")
    cells = expand(suite)
    assert [c.name for c in cells if c.strategy.id in SMOKE_IDS] == SMOKE_CELLS
    assert {c.strategy.id for c in cells} == {st.id for st in suite.strategies}  # every entry has cells
    assert cells[-1].name == SMOKE_CELLS[-1]  # a combined cell comes after every trained one
    by_name = {c.name: c for c in cells}
    assert by_name["synthetic__stl(task=top)__seed1"].tasks == ("top",)
    assert by_name["synthetic__stl(task=top)__seed1"].seed == 1
    assert by_name["synthetic__cross_stitch__seed0"].tasks == ("quadrant", "top", "brightness")


def test_names_and_keys_are_deterministic_and_unique():
    first = expand(load_suite(SUITES / "smoke.yaml"))
    again = expand(load_suite(SUITES / "smoke.yaml"))
    assert [(c.name, c.key) for c in first] == [(c.name, c.key) for c in again]
    assert len({c.name for c in first}) == len(first)
    assert len({c.key for c in first}) == len(first)  # seed and tasks are part of the key


def test_strategy_params_appear_sorted_in_the_name(tiny_suite, write_suite):
    raw = tiny_suite(strategies=[{"name": "cross_stitch", "stitch_after": [2, 1], "self_weight": 0.8}])
    (cell,) = expand(load_suite(write_suite(raw)))
    assert cell.name == "synthetic__cross_stitch(self_weight=0.8,stitch_after=2+1)__seed0"


# A changed value, valid for the tiny suite, for every TrainConfig field.
CHANGED = {"epochs": 2, "batch_size": 8, "optimizer": "sgd", "lr": 0.01, "momentum": 0.5,
           "weight_decay": 0.1, "schedule": "cosine", "warmup_epochs": 0.5, "label_smoothing": 0.1,
           "loss_weights": {"top": 2.0}, "crop_pad": 0, "flip": False, "select": "score",
           "eval_batch_size": 64, "tta_flip": True, "cuda_graph": False, "plateau": {"factor": 0.5},
           "early_stopping": {"patience": 2}, "augment": [{"op": "noise", "std": 0.1}], "precision": "fp32",
           "deterministic": True, "grad_cosine_every": 5}
BOTH = {"plateau": {"schedule": "plateau"}}  # what a setting needs in the base and the changed suite alike


def test_every_train_setting_has_a_changed_value():
    # A new TrainConfig field must join CHANGED, so the key test below covers it.
    assert set(CHANGED) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("setting", sorted(CHANGED))
def test_key_changes_with_every_train_setting(tiny_suite, write_suite, setting):
    base = tiny_suite()
    base["train"].update(BOTH.get(setting, {}))
    changed = copy.deepcopy(base)
    changed["train"][setting] = CHANGED[setting]
    assert changed["train"] != base["train"]
    (a,), (b,), (c,) = (expand(load_suite(write_suite(r, n))) for r, n in
                        ((base, "a"), (dict(base, name="tiny"), "b"), (changed, "c")))
    assert a.key == b.key  # equal configs, even from different files
    assert a.name == c.name and a.key != c.key  # the name stays; the key sees the change


def test_key_changes_with_dataset_and_backbone_options(tiny_suite, write_suite):
    base = expand(load_suite(write_suite(tiny_suite(), "a")))[0].key
    raw = tiny_suite()
    raw["datasets"]["synthetic"]["options"]["seed"] = 1
    assert expand(load_suite(write_suite(raw, "b")))[0].key != base
    raw = tiny_suite(backbone={"name": "alexnet_cifar", "width": 32})
    assert expand(load_suite(write_suite(raw, "c")))[0].key != base


def test_strategy_task_subset_and_train_overrides(tiny_suite, write_suite):
    raw = tiny_suite(strategies=[
        "hard_share",
        {"name": "hard_share", "id": "pair", "tasks": ["quadrant", "top"], "train": {"epochs": 5, "lr": 0.01}},
        {"name": "stl", "tasks": ["brightness", "top"]},
    ], seeds=[0, 1])
    raw["train"]["epochs"] = 2
    raw["datasets"]["synthetic"]["train"] = {"epochs": 3, "batch_size": 8}
    cells = {c.name: c for c in expand(load_suite(write_suite(raw)))}
    assert list(cells) == [
        "synthetic__hard_share__seed0", "synthetic__hard_share__seed1",
        "synthetic__pair(tasks=quadrant+top)__seed0", "synthetic__pair(tasks=quadrant+top)__seed1",
        "synthetic__stl(task=brightness)__seed0", "synthetic__stl(task=top)__seed0",
        "synthetic__stl(task=brightness)__seed1", "synthetic__stl(task=top)__seed1",
    ]
    pair = cells["synthetic__pair(tasks=quadrant+top)__seed0"]
    assert pair.tasks == ("quadrant", "top")
    # suite < dataset < strategy: the strategy's epochs and lr, the dataset's batch size
    assert (pair.train.epochs, pair.train.lr, pair.train.batch_size) == (5, 0.01, 8)
    plain = cells["synthetic__hard_share__seed0"]
    assert plain.tasks == ("quadrant", "top", "brightness")
    assert (plain.train.epochs, plain.train.lr, plain.train.batch_size) == (3, 0.001, 8)
    assert cells["synthetic__stl(task=top)__seed1"].tasks == ("top",)


def test_strategy_backbone_override(tiny_suite, write_suite):
    raw = tiny_suite(strategies=["hard_share", {"name": "hard_share", "id": "wide",
                                                "backbone": {"name": "alexnet_cifar", "width": 64}}])
    narrow, wide = expand(load_suite(write_suite(raw)))
    assert narrow.backbone.params == {"width": 16} and wide.backbone.params == {"width": 64}


def test_a_reference_reaches_the_manifest_and_no_key(tiny_suite, write_suite):
    from bench.grid import manifest

    plain = tiny_suite(strategies=["stl", {"name": "hard_share", "id": "one", "tasks": ["top"]}, "hard_share"])
    named = tiny_suite(strategies=["stl", {"name": "hard_share", "id": "one", "tasks": ["top"]},
                                   {"name": "hard_share", "reference": ["one", "stl"]}])
    suite = load_suite(write_suite(named, "named"))
    assert suite.baselines == {"hard_share": ("one", "stl")}
    entries = {e.id: e for e in manifest(suite, expand(suite)).strategies}
    assert entries["hard_share"].reference == ("one", "stl") and entries["stl"].reference == ()
    keys = {c.name: c.key for c in expand(suite)}
    assert keys == {c.name: c.key for c in expand(load_suite(write_suite(plain, "plain")))}  # report-only
