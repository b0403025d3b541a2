"""Suite validation: the shipped suites load, and every kind of mistake is refused before training
with a message that names the file, the key path and what would have been valid."""

from __future__ import annotations

import importlib
import subprocess
import sys
import typing

import pytest
import yaml

from bench import cli
from bench.config import DatasetConfig, SuiteError, TrainConfig, load_suite
from bench.data import DATASETS
from bench.grid import expand
from bench.models import BACKBONES
from bench.registry import Range, YAML_BOOL_HINT, param_hints, unannotated
from bench.strategies import STRATEGIES
from conftest import REPO, SUITES, TINY_DATA


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
    # Values out of their declared range (issue 12, item 2): the key path and the valid range.
    "zero learning rate": ("train.lr", 0, ["train.lr: 0 is out of range; valid: > 0"]),
    "negative learning rate": ("train.lr", -0.1, ["train.lr: -0.1 is out of range; valid: > 0"]),
    "not-a-number learning rate": ("train.lr", float("nan"), ["train.lr: nan is out of range; valid: > 0"]),
    "label smoothing above 1": ("train.label_smoothing", 1.5,
                                ["train.label_smoothing: 1.5 is out of range; valid: [0, 1)"]),
    "momentum of 1": ("train.momentum", 1.0, ["train.momentum: 1.0 is out of range; valid: [0, 1)"]),
    "zero epochs": ("train.epochs", 0, ["train.epochs: 0 is out of range; valid: >= 1"]),
    "negative loss weight": ("train.loss_weights", {"top": -1.0},
                             ["train.loss_weights.top: -1.0 is out of range; valid: >= 0"]),
    "range in a strategy override": ("strategies", [{"name": "hard_share", "train": {"batch_size": 0}}],
                                     ["strategies[0].train.batch_size: 0 is out of range; valid: >= 1"]),
    "zero val_size": ("datasets.synthetic.val_size", 0, ["datasets.synthetic.val_size: 0 is out of range; valid: > 0"]),
    "fractional image count": ("datasets.synthetic.val_size", 2.5,
                               ["datasets.synthetic.val_size: 2.5 is neither a fraction in (0, 1) nor a whole number"]),
    "zero subset": ("datasets.synthetic.subset", 0, ["datasets.synthetic.subset: 0 is out of range; valid: >= 1"]),
    "dataset option out of range": ("datasets.synthetic.options.image_size", 2,
                                    ["datasets.synthetic.options.image_size: 2 is out of range; valid: >= 4"]),
    "backbone param out of range": ("backbone.dropout", 1.0, ["backbone.dropout: 1.0 is out of range; valid: [0, 1)"]),
    "list item out of range": ("backbone", {"name": "convnet", "widths": [8, 0]},
                               ["backbone.widths[1]: 0 is out of range; valid: >= 1"]),
    "strategy param out of range": ("strategies", [{"name": "cross_stitch", "self_weight": 1.5}],
                                    ["strategies[0].self_weight: 1.5 is out of range; valid: [0, 1]"]),
    "negative seed": ("seeds", [0, -1], ["seeds[1]: -1 is out of range; valid: [0, 4294967295]"]),
    "ensemble seed out of range": ("strategies", ["hard_share", {"name": "ensemble", "of": "hard_share",
                                                                 "seeds": [0, 2**32]}],
                                   ["strategies[1].seeds[1]: 4294967296 is out of range"]),
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


def test_cli_validate_bad_suite_exits_2(tiny_suite, write_suite, capsys):
    suite_file = write_suite(_edit(tiny_suite(), "train.loss_weights", {"top": "heavy"}))
    assert cli.main(["validate", str(suite_file)]) == 2
    out = capsys.readouterr()
    err = _normalise(out.err)
    # The whole message, brackets included (rich must not read "[str, float]" as markup).
    assert f"invalid suite: {suite_file}: train.loss_weights: expected dict[str, float], got {{'top': 'heavy'}}" in err
    assert out.out == ""  # no cell names for a broken suite


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


# ---- issue 12: inputs from outside reports ---------------------------------------------------------
@pytest.mark.parametrize("text, where, value", [
    ("strategies: [{name: hard_share, id: no}]", "strategies[0].id: expected a string", "False"),
    ("strategies: [{name: hard_share, id: on}]", "strategies[0].id: expected a string", "True"),
    ("description: yes", "description: expected a string", "True"),
    ("train: {optimizer: off}", "train.optimizer: expected str", "False"),
    ("strategies: [{name: hard_share, tasks: [quadrant, no]}]", "strategies[0].tasks[1]: expected a string", "False"),
    ("tracking: {tensorboard: no}", "tracking.tensorboard: expected str | None", "False"),
])
def test_a_yaml_boolean_for_a_string_is_refused_with_a_hint_to_quote(tiny_suite, write_suite, text, where, value):
    """Item 3: YAML 1.1 reads an unquoted `no` as false; a string field must not turn it into 'False'."""
    raw = tiny_suite()
    raw.pop(text.split(":")[0], None)
    path = write_suite(raw)
    path.write_text(path.read_text() + text + "\n")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert str(err.value) == f"{path}: {where}, got {value}{YAML_BOOL_HINT}"


def test_a_quoted_no_is_a_cell_name_not_false(tiny_suite, write_suite):
    raw = tiny_suite()
    path = write_suite(raw)
    path.write_text(path.read_text().replace("- hard_share", "- {name: hard_share, id: 'no'}"))
    (cell,) = expand(load_suite(path))
    assert cell.name == "synthetic__no__seed0"


def test_a_folder_as_the_suite_path_exits_2_with_a_message(tmp_path, capsys):
    """Item 4: not an IsADirectoryError traceback."""
    assert cli.main(["validate", str(tmp_path)]) == 2
    assert cli.main(["run", str(tmp_path), "--results", str(tmp_path / "r")]) == 2
    err = _normalise(capsys.readouterr().err)
    assert f"invalid suite: {tmp_path}: is a folder; give a suite file (a .yaml path) or a suite name" in err
    assert not (tmp_path / "r").exists()  # nothing ran


def _numeric(hint) -> bool:
    """Does a type hint take numbers (int or float, also inside lists, mappings and unions)?"""
    base = unannotated(hint)[0]
    return base in (int, float) or any(_numeric(a) for a in typing.get_args(base))


def _settings() -> list[tuple[str, object]]:
    plugins = [(f"{r.kind} {n}", r.get(n)) for r in (DATASETS, BACKBONES, STRATEGIES) for n in r.names()]
    return [("train", TrainConfig), ("datasets.<name>", DatasetConfig)] + plugins


# Mappings whose keys have ranges of their own, checked by their module (train.plateau.factor in (0, 1), ...):
# the test below makes sure each refuses an out-of-range value.
OWN_CHECKS = {("train", "plateau"): ("bench.schedules", "check_plateau", {"factor": 2.0}),
              ("train", "early_stopping"): ("bench.schedules", "check_early_stopping", {"patience": 0})}


@pytest.mark.parametrize("where, declared", _settings(), ids=[w for w, _ in _settings()])
def test_every_numeric_setting_declares_its_range(where, declared):
    """Item 2: a setting that takes a number says which numbers (`Annotated[..., Range(...)]`), so a
    new setting without one fails here; the loader checks every value against it."""
    missing = [n for n, h in param_hints(declared).items()
               if _numeric(h) and not unannotated(h)[1] and (where, n) not in OWN_CHECKS]
    assert not missing, f"{where}: numeric settings without a Range: {missing}"


@pytest.mark.parametrize("setting", OWN_CHECKS, ids=".".join)
def test_settings_with_their_own_checks_refuse_out_of_range_values(setting):
    module, name, bad = OWN_CHECKS[setting]
    with pytest.raises(ValueError, match=f"^{next(iter(bad))}: "):
        getattr(importlib.import_module(module), name)(bad)


@pytest.mark.parametrize("text, inside, outside", [
    ("[0, 1)", [0, 0.5, 0.999], [1, -0.1, float("nan"), float("inf"), True]),
    ("(0, 1]", [1, 1e-9], [0, 1.5]),
    ("> 0", [1e-12, 10**9], [0, -1, float("inf")]),
    (">= 1", [1, 2], [0, 0.999]),
    ("<= 5", [5, -3], [5.01]),
])
def test_range_membership(text, inside, outside):
    r = Range(text)
    assert all(x in r for x in inside) and not any(x in r for x in outside) and str(r) == text


def test_a_malformed_range_is_refused_where_it_is_declared():
    with pytest.raises(ValueError, match=r"Range\('0\.\.1'\): expected"):
        Range("0..1")


def test_validate_imports_no_torch():
    """`bench validate` of every shipped suite without importing torch: plug-in modules import it where
    they build (bench/registry.py). Suites that name a weighting method are left out: the methods are
    torch modules (bench/weighting). The one test here that needs a fresh interpreter."""
    suites = [str(p.relative_to(REPO)) for p in sorted(SUITES.glob("*.yaml")) if "weighting:" not in p.read_text()]
    assert len(suites) >= 10
    code = ("import sys, contextlib, io; from bench import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    codes = [cli.main(['validate', p]) for p in {suites!r}]\n"
            "print(codes, sorted(m for m in ('torch', 'torchvision', 'scipy', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    codes, imported = out.stdout.strip().split("] ")
    assert set(codes.strip("[").split(", ")) == {"0"} and imported == "[]"


# ---- issue 12 (hardening): the new-user report's defects ------------------------------------------
@pytest.mark.parametrize("path, value, fragment", [
    ("name", "../../escape", "name: '../../escape' has '/'"),
    ("name", "", "name: empty; it names folders in the results store"),
    ("name", "..", "name: '..' starts with '.'"),
    ("strategies", [{"name": "hard_share", "id": "a/b"}], "strategies[0].id: 'a/b' has '/'"),
    ("strategies", [{"name": "hard_share", "id": ".hidden"}], "strategies[0].id: '.hidden' starts with '.'"),
    ("strategies", [{"name": "hard_share", "id": "a b:c"}], "strategies[0].id: 'a b:c' has ' ', ':'"),
    ("datasets", {"my/data": {**TINY_DATA, "dataset": "synthetic"}}, "datasets.my/data: 'my/data' has '/'"),
], ids=["parent path", "empty", "dot-dot", "slash", "hidden", "space and colon", "dataset id"])
def test_names_used_as_store_folders_must_be_safe_file_names(tiny_suite, write_suite, path, value, fragment):
    """Defect 1: a suite name or entry id becomes a folder of the store; `..` or `/` would write outside
    it or into a folder that does not exist (a crash after training)."""
    suite_file = write_suite(_edit(tiny_suite(), path, value))
    with pytest.raises(SuiteError) as err:
        load_suite(suite_file)
    assert str(err.value).startswith(f"{suite_file}: {fragment}"), str(err.value)
    assert "ASCII letters, digits, '_', '-' and '.' (not first)" in str(err.value) or "empty" in fragment


def test_a_suite_file_whose_name_is_not_a_safe_folder_needs_a_name_key(tiny_suite, tmp_path):
    raw = tiny_suite()
    del raw["name"]
    path = tmp_path / "my suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SuiteError, match=r"name \(from the file's name: rename the file or set name:\): 'my suite' "
                                         r"has ' '"):
        load_suite(path)


LWF_EVERYTHING = {"name": "sequential_lwf", "order": ["brightness", "quadrant", "top"], "temperature": 2.5,
                  "distill_weight": 1.5, "feature_weight": 0.25, "replay": 32, "replay_batch": 16,
                  "lr_backbone": 0.3, "lr_shared": 0.3, "lr_current_head": 1.0, "lr_old_heads": 0.5,
                  "freeze_norm": True, "disjoint": True, "stage_epochs": [1, 1, 1],
                  "stage_lr": [0.001, 0.0005, 0.00025]}


def test_a_cell_name_too_long_for_a_folder_is_refused_naming_the_entry_and_the_fix(tiny_suite, write_suite):
    """Defect 1: an LwF entry with every parameter and no id made a 300-byte folder name (OSError
    after the data loaded); an id names the cell alone and fixes it."""
    suite = load_suite(write_suite(tiny_suite(strategies=["stl", LWF_EVERYTHING])))
    with pytest.raises(SuiteError) as err:
        expand(suite)
    message = str(err.value)
    assert "strategies[1] (sequential_lwf): its cell name 'synthetic__sequential_lwf(" in message
    assert "give the entry a short `id:`" in message
    fixed = load_suite(write_suite(tiny_suite(strategies=["stl", {**LWF_EVERYTHING, "id": "lwf"}])))
    assert "synthetic__lwf__seed0" in [c.name for c in expand(fixed)]


@pytest.mark.parametrize("extra, ok", [(0, True), (1, False)])
def test_the_longest_cell_name_leaves_room_for_the_stores_suffixes(tiny_suite, write_suite, extra, ok):
    """NAME_MAX is 255 bytes; an attempt folder is `<cell>.<pid up to 4194304>-<8 hex>.replaced`, 26 bytes
    more, so a cell name may have 229 bytes. `<dataset>__hard_share__seed0` adds 19 to the dataset id."""
    ds = "d" * (229 - len("__hard_share__seed0") + extra)
    suite = load_suite(write_suite(tiny_suite(datasets={ds: {**TINY_DATA, "dataset": "synthetic"}})))
    if ok:
        assert len(expand(suite)[0].name.encode()) == 229
    else:
        with pytest.raises(SuiteError, match="is 230 bytes long, over the 229"):
            expand(suite)


def test_run_refuses_an_unsafe_id_before_writing_anything(tiny_suite, write_suite, tmp_path, capsys):
    suite_file = write_suite(tiny_suite(strategies=[{"name": "hard_share", "id": "a/b"}]))
    assert cli.main(["run", str(suite_file), "--results", str(tmp_path / "r"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "invalid suite" in err and "Traceback" not in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("text, where", [
    ("train: {epochs: 1}\ntrain: {epochs: 5}\n", "line 2: key 'train' is given a second time (first on line 1)"),
    ("datasets:\n  synthetic: {val_size: 16, val_size: 8}\n",
     "line 2: key 'val_size' is given a second time (first on line 2)"),
    ("strategies:\n  - {name: hard_share, id: a, id: b}\n", "line 2: key 'id' is given a second time"),
], ids=["top level", "nested", "in a list"])
def test_a_key_given_twice_is_refused_naming_it_and_its_lines(tiny_suite, write_suite, text, where):
    """Defect 9: PyYAML keeps the last of two equal keys silently (a second train: block replaced the first)."""
    raw = tiny_suite()
    for key in ("train", "datasets", "strategies"):
        if text.startswith(key):
            del raw[key]
    path = write_suite(raw)
    path.write_text(text + path.read_text())
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}: {where}") and "merge the two into one" in str(err.value)


def test_a_merge_key_may_still_be_overridden(tiny_suite, write_suite):
    """`<<: *anchor` then the same key is YAML's way to override (suites/weighting_freq3.yaml does it)."""
    raw = tiny_suite()
    del raw["strategies"]
    path = write_suite(raw)
    path.write_text(path.read_text() + "strategies:\n  - &mt {name: hard_share, id: equal}\n"
                                       "  - {<<: *mt, id: pcgrad, weighting: pcgrad}\n")
    assert [s.id for s in load_suite(path).strategies] == ["equal", "pcgrad"]


def test_seeds_as_one_number_is_refused(tiny_suite, write_suite):
    """Defect 9: `seeds: 3` ran one seed, number 3; a reader may have meant three seeds."""
    with pytest.raises(SuiteError, match=r"seeds: expected a list of integers, got 3: write \[0, 1, 2\] for three "
                                         r"seeds, or \[3\] for seed 3 alone"):
        load_suite(write_suite(tiny_suite(seeds=3)))


@pytest.mark.parametrize("text, where, shown", [
    ("train: {lr: 1e-3}", "train.lr: expected float, got '1e-3'", "1e-3"),
    ("strategies: [{name: sequential_lwf, stage_lr: [0.01, 5E-4]}]",
     "strategies[0].stage_lr: expected float | list[float] | None, got [0.01, '5E-4']", "5E-4"),
])
def test_a_number_yaml_reads_as_a_string_gets_a_hint(tiny_suite, write_suite, text, where, shown):
    """YAML 1.1 needs a dot and a signed exponent (1.0e-3); `1e-3` is a string (PyYAML follows 1.1)."""
    raw = tiny_suite()
    raw.pop(text.split(":")[0])
    path = write_suite(raw)
    path.write_text(path.read_text() + text + "\n")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert str(err.value) == (f"{path}: {where} (YAML 1.1 reads {shown} as a string, not a number: write an exponent "
                              "with a dot before it and a sign, as in 1.0e-3, or the plain number, as in 0.001)")
    path.write_text(path.read_text().replace(shown, "1.0e-3"))
    load_suite(path)  # the spelling the hint gives is read as a number


@pytest.mark.parametrize("path, value, message", [
    ("strategies", ["stl", {"name": "hard_share", "tasks": ["quadrant", "quadrant"]}],
     "strategies[1].tasks: 'quadrant' given more than once; name each task once"),
    ("datasets.synthetic.tasks", ["top", "quadrant", "top"],
     "datasets.synthetic.tasks: 'top' given more than once; name each task once"),
    ("strategies", [{"name": "hard_share", "task": ["quadrant"]}],
     "strategies[0].task: unknown parameter; valid: the entry's name, id, tasks, backbone, train, weighting, "
     "reference, and hard_share's heads"),
    ("strategies", ["hard_share", {"name": "ensemble", "off": "hard_share"}],
     "strategies[1].off: unknown parameter; valid: the entry's name, id, tasks, backbone, train, weighting, "
     "reference, and ensemble's of, seeds"),
], ids=["repeated strategy task", "repeated dataset task", "strategy key typo", "ensemble key typo"])
def test_entry_mistakes_are_named_by_their_key_path(tiny_suite, write_suite, path, value, message):
    """Defect 11: a repeated task said only "two cells share a name", and a typo in an entry listed the
    strategy's own parameters without the entry keys (id, tasks, backbone, ...)."""
    suite_file = write_suite(_edit(tiny_suite(), path, value))
    with pytest.raises(SuiteError) as err:
        load_suite(suite_file)
    assert str(err.value) == f"{suite_file}: {message}"


def test_two_cells_with_one_name_name_both_entries(tiny_suite, write_suite):
    raw = tiny_suite(datasets={"x": {**TINY_DATA, "dataset": "synthetic"}, "x__a": {**TINY_DATA, "dataset": "synthetic"}},
                     strategies=[{"name": "hard_share", "id": "a__b"}, {"name": "hard_share", "id": "b"}])
    suite_file = write_suite(raw)
    with pytest.raises(SuiteError) as err:
        expand(load_suite(suite_file))
    assert str(err.value) == (f"{suite_file}: two cells are named 'x__a__b__seed0' (from strategies[0] and "
                              "strategies[1]); give the entries distinct ids")
