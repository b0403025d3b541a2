"""Suite validation: the shipped suites load, and every kind of mistake is refused before training
with a message that names the file, the key path and what would have been valid."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import cli
from bench.config import SuiteError, TrainConfig, load_suite
from bench.data import DATASETS
from bench.grid import expand
from bench.strategies import STRATEGIES
from conftest import REPO, SUITES


@pytest.mark.parametrize("path", sorted(SUITES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_suites_load(path):
    suite = load_suite(path)
    assert suite.name == path.stem
    assert suite.strategies and {s.name for s in suite.strategies} <= set(STRATEGIES.names())
    assert isinstance(suite.train, TrainConfig) and expand(suite)


def test_smoke_covers_every_strategy():
    from bench.strategies import STRATEGIES

    suite = load_suite(SUITES / "smoke.yaml")
    assert {s.name for s in suite.strategies} == set(STRATEGIES.names())


def _edit(raw: dict, path: str, value) -> dict:
    """Set raw[a][b]... = value for path 'a.b...' (a list index is written [i])."""
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[int(key[1:-1])] if key.startswith("[") else node[key]
    node[last] = value
    return raw


# (edit path, bad value, fragments the message must hold: key path, then the valid choices)
BAD_SUITES = {
    "unknown top-level key": ("trian", {"epochs": 1}, ["trian: unknown key", "datasets", "strategies", "seeds"]),
    "unknown train key": ("train.epoch", 3, ["train.epoch: unknown parameter", "epochs", "batch_size"]),
    "wrong type": ("train.epochs", "ten", ["train.epochs: expected int", "'ten'"]),
    "wrong value type in a mapping": ("train.loss_weights", {"quadrant": "heavy"},
                                      ["train.loss_weights: expected dict[str, float]", "'heavy'"]),
    "wrong type in a strategy override": ("strategies", [{"name": "hard_share", "train": {"lr": "fast"}}],
                                          ["strategies[0].train.lr: expected float", "'fast'"]),
    "unknown dataset": ("datasets", {"imagenet": {}}, ["datasets.imagenet: unknown dataset", "cifar10", "synthetic"]),
    "unknown task": ("datasets.synthetic.tasks", ["quadrant", "colour"],
                     ["datasets.synthetic.tasks: unknown task 'colour'", "quadrant, top, brightness"]),
    "unknown dataset option": ("datasets.synthetic.options.n_trian", 10,
                               ["datasets.synthetic.options.n_trian: unknown parameter", "n_train", "image_size"]),
    "unknown strategy": ("strategies", ["hard_share", "pcgrad"],
                         ["strategies[1].name: unknown strategy 'pcgrad'", ", ".join(STRATEGIES.names())]),
    "unknown backbone": ("backbone", {"name": "resnet9"}, ["backbone.name: unknown backbone 'resnet9'", "alexnet_cifar"]),
    "unknown backbone param": ("backbone.depth", 3, ["backbone.depth: unknown parameter", "dropout, width"]),
    "unknown strategy param": ("strategies", [{"name": "cross_stitch", "stitch_at": [1]}],
                               ["strategies[0].stitch_at: unknown parameter", "heads, self_weight, stitch_after"]),
    "unknown head key": ("strategies", [{"name": "hard_share", "heads": {"quadrant": {"hiddn": [8]}}}],
                         ["strategies[0].heads.quadrant: expected a mapping", "hidden, dropout, sigmoid"]),
    "bad head width": ("strategies", [{"name": "stl", "heads": {"quadrant": {"hidden": 8}}}],
                       ["strategies[0].heads.quadrant.hidden: expected a list of positive widths"]),
    "bad head dropout": ("strategies", [{"name": "cross_stitch", "heads": {"top": {"dropout": 1.5}}}],
                         ["strategies[0].heads.top.dropout: expected a number in [0, 1)"]),
    "empty strategies": ("strategies", [], ["strategies: expected a non-empty list", ", ".join(STRATEGIES.names())]),
    "empty datasets": ("datasets", {}, ["datasets: empty", ", ".join(DATASETS.names())]),
    "seeds not integers": ("seeds", [0, "one"], ["seeds: expected a non-empty list of integers", "'one'"]),
    "no seeds": ("seeds", [], ["seeds: expected a non-empty list of integers"]),
    "repeated seed": ("seeds", [1, 1], ["seeds: repeated seed"]),
    "invalid optimizer": ("train.optimizer", "rmsprop", ["train.optimizer: 'rmsprop' unknown", "sgd, adam, adamw"]),
    "invalid schedule": ("train.schedule", "step", ["train.schedule: 'step' unknown", "onecycle, cosine, constant"]),
    "strategy tasks not in dataset": ("strategies", [{"name": "hard_share", "tasks": ["top", "colour"]}],
                                      ["strategies.hard_share.tasks: ['colour']", "quadrant", "brightness"]),
    "duplicate strategy id": ("strategies", ["stl", {"name": "hard_share", "id": "stl"}],
                              ["strategies[1].id: 'stl' is used twice"]),
    "reference to an unknown entry": ("strategies", ["stl", {"name": "hard_share", "reference": "stll"}],
                                      ["strategies[1].reference: 'stll' is not a single-task training entry",
                                       "valid: stl"]),
    "reference to a multi-task entry": ("strategies", ["stl", "cross_stitch", {"name": "hard_share",
                                                                              "reference": ["cross_stitch"]}],
                                        ["strategies[2].reference: 'cross_stitch' is not a single-task", "valid: stl"]),
    "reference on a single-task entry": ("strategies", [{"name": "hard_share", "id": "one", "tasks": ["top"]},
                                                        {"name": "stl", "reference": "one"}],
                                         ["strategies[1].reference: 'stl' is itself single-task"]),
    "reference as a YAML boolean": ("strategies", ["stl", {"name": "hard_share", "reference": False}],
                                    ["strategies[1].reference: expected an entry id", "quote", "valid: stl"]),
}


@pytest.mark.parametrize("path, value, fragments", BAD_SUITES.values(), ids=BAD_SUITES.keys())
def test_bad_suite_names_file_key_and_choices(tiny_suite, write_suite, path, value, fragments):
    suite_file = write_suite(_edit(tiny_suite(), path, value))
    with pytest.raises(SuiteError) as err:
        load_suite(suite_file)
    message = str(err.value)
    assert message.startswith(f"{suite_file}: "), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_required_key_missing(tiny_suite, write_suite):
    raw = tiny_suite()
    del raw["seeds"]
    with pytest.raises(SuiteError, match="seeds: required key is missing"):
        load_suite(write_suite(raw))


@pytest.mark.parametrize("where", ["suite", "dataset", "strategy"])
def test_loss_weights_for_unknown_task_refused_by_grid(tiny_suite, write_suite, where):
    raw = tiny_suite()
    weights = {"loss_weights": {"quadrant": 2.0, "colour": 1.0}}
    if where == "suite":
        raw["train"].update(weights)
    elif where == "dataset":
        raw["datasets"]["synthetic"]["train"] = weights
    else:
        raw["strategies"] = [{"name": "hard_share", "train": weights}]
    suite_file = write_suite(raw)
    suite = load_suite(suite_file)  # a task name is only checked against the dataset by the grid
    with pytest.raises(SuiteError) as err:
        expand(suite)
    message = str(err.value)
    assert message.startswith(f"{suite_file}: ") and "loss_weights" in message and "['colour']" in message
    assert "quadrant" in message  # the valid tasks


def _normalise(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def test_cli_validate_bad_suite_exits_2(tiny_suite, write_suite):
    suite_file = write_suite(_edit(tiny_suite(), "train.loss_weights", {"top": "heavy"}))
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "bench", "validate", str(suite_file)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = _normalise(proc.stderr)
    # The whole message, brackets included (rich must not read "[str, float]" as markup).
    assert f"invalid suite: {suite_file}: train.loss_weights: expected dict[str, float], got {{'top': 'heavy'}}" in err
    assert proc.stdout == ""  # no cell names for a broken suite


def test_cli_validate_good_suite_lists_cells(capsys):
    assert cli.main(["validate", str(SUITES / "smoke.yaml")]) == 0
    out = capsys.readouterr()
    names = out.out.split()
    expected = [c.name for c in expand(load_suite(SUITES / "smoke.yaml"))]
    assert names == expected and "synthetic__stl(task=quadrant)__seed0" in names
    assert f"ok, {len(expected)} cells" in _normalise(out.err)


@pytest.mark.parametrize("strategy", ["hard_share", "stl", "cross_stitch", "sequential_lwf"])
def test_heads_for_unknown_task_refused_by_grid(tiny_suite, write_suite, strategy):
    raw = tiny_suite(strategies=[{"name": strategy, "heads": {"colour": {"hidden": [8]}}}])
    suite = load_suite(write_suite(raw))  # head task names are checked against the dataset by the grid
    with pytest.raises(SuiteError, match=r"heads\.colour: not a task of this cell; valid: quadrant"):
        expand(suite)
