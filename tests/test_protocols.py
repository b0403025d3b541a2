"""The protocol suites: each study's protocol validates, its smoke variant differs from it only in sizes,
the smoke variants run end to end on CPU, and the report puts the study's published numbers and the
tuned suite's stored results beside the measured rows. `bench validate --explain` shows where every
train setting came from."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bench import cli
from bench.config import SuiteError, load_suite
from bench.grid import expand
from bench.kinds import make_spec
from bench.record import DatasetEntry, Manifest, Record
from bench.report import ReportData
from bench.report.protocol import reference_comparison
from bench.store import Store
from conftest import SUITES, put_result

PROTOCOLS = ("seed000_protocol", "seed001_protocol", "seed002_protocol")
SIZES = {"epochs", "batch_size"}  # the train settings a smoke variant may shrink


def table(text: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table under `heading`, header first."""
    section = text.split(heading)[1].split("\n## ")[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|") and not line.startswith("|--")]


@pytest.mark.parametrize("name", PROTOCOLS)
def test_smoke_variant_runs_the_protocols_own_settings(name):
    real, smoke = load_suite(SUITES / f"{name}.yaml"), load_suite(SUITES / f"smoke_{name}.yaml")
    differ = {k for k, v in dataclasses.asdict(real.train).items() if dataclasses.asdict(smoke.train)[k] != v}
    assert differ <= SIZES, differ
    assert [s.id for s in real.strategies] == [s.id for s in smoke.strategies]
    for a, b in zip(real.strategies, smoke.strategies):
        assert (a.name, a.params.get("heads"), a.train, a.tasks) == (b.name, b.params.get("heads"), b.train, b.tasks)
    assert [(d.name, d.tasks, d.train) for d in real.datasets] == [(d.name, d.tasks, d.train) for d in smoke.datasets]
    assert real.reference.published == smoke.reference.published


def test_published_numbers_are_the_studies(name="seed001_protocol"):
    ref = load_suite(SUITES / f"{name}.yaml").reference
    assert ref.published == {"stl": {"class10": 80.56, "animal": 95.76}, "hard_share": {"class10": 79.22, "animal": 96.71},
                             "cross_stitch": {"class10": 79.85, "animal": 95.56}} and ref.tuned == "cifar_mtl"
    ref = load_suite(SUITES / "seed002_protocol.yaml").reference
    assert ref.published == {"cls_only": {"pair": 42.80}, "joint": {"pair": 43.70}} and ref.tuned == "shapes_counting"
    assert load_suite(SUITES / "seed000_protocol.yaml").reference.tuned == "dual_stream"


def run(name: str, tmp_path, *args: str) -> list[dict]:
    """Run suites/<name>.yaml on CPU into tmp_path; return its records (JSON)."""
    roots = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert cli.main(["run", str(SUITES / f"{name}.yaml"), "--device", "cpu", *roots, *args]) == 0
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results" / name).glob("*/record.json"))]


def test_seed002_protocol_smoke_runs(tmp_path):
    records = run("smoke_seed002_protocol", tmp_path, "--no-report")
    assert sorted((r["strategy"], tuple(r["tasks"]), r["status"]) for r in records) == [
        ("cls_only", ("pair",), "done"), ("joint", ("pair", "counts"), "done"), ("reg_only", ("counts",), "done")]
    assert all(r["config"]["train"]["augment"][2] == {"op": "rot90", "turns": [1, 3], "p": 0.5} for r in records)


def test_seed000_protocol_smoke_runs_and_reports_beside_its_tuned_suite(tmp_path):
    records = run("smoke_seed000_protocol", tmp_path)
    trained = [r for r in records if not r["members"]]
    assert sorted(r["seed"] for r in trained) == [42, 43] and len(records) == 3  # + the ensemble of both
    assert all(r["numerics"]["requested"] == "fp16" and r["numerics"]["precision"] == "fp32" for r in trained)
    history = (tmp_path / "results" / "smoke_seed000_protocol" / "freq3__dual_stream__seed42" / "history.csv")
    assert history.read_text().splitlines()[0].split(",")[:3] == ["stage", "epoch", "lr"]
    report = (tmp_path / "reports" / "smoke_seed000_protocol.md").read_text()
    rows = {(r[2], r[1]): r for r in table(report, "## This protocol vs the study and the tuned recipe")[1:]}
    mine = next(r for r in trained if r["seed"] == 42)["test"]["a"]["accuracy"]
    other = next(r for r in trained if r["seed"] == 43)["test"]["a"]["accuracy"]
    assert rows["dual_stream", "a"][4] == f"{50 * (mine + other):.2f} ± {100 * abs(mine - other) / 2 ** 0.5:.2f} (n=2)"
    assert rows["dual_stream", "a"][5:] == ["-", "-"]  # nothing published; the tuned suite has no cells here
    assert "No finished cells of `smoke_freq3`" in report
    assert "fp32 (fp16 asked)" in report.split("## Precision and determinism")[1]


def test_seed001_protocol_smoke_runs_on_real_cifar(cifar_small_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(cifar_small_root))  # conftest: a small real CIFAR-10 tar
    (record,) = run("smoke_seed001_protocol", tmp_path, "--strategies", "hard_share", "--no-report")
    assert record["status"] == "done" and record["numerics"]["deterministic"]
    assert record["numerics"]["precision"] == "fp32" and record["config"]["train"]["augment"][0]["op"] == "rotate"


def test_comparison_table_on_a_hand_made_store(tmp_path):
    """Measured mean ± std, the published number and the tuned suite's cells, by strategy id and task."""
    spec = make_spec("multiclass", name="quadrant", classes=4)

    def put(suite: str, seed: int, accuracy: float, code: dict | None = None) -> Record:
        record = Record(suite=suite, cell=f"synthetic__hard_share__seed{seed}", dataset="synthetic",
                        strategy="hard_share", strategy_name="hard_share", multi_task=True, tasks=("quadrant",),
                        seed=seed, status="done", key="k", test={"quadrant": {"accuracy": accuracy}},
                        specs={"quadrant": spec.to_dict()}, code=code or {})
        put_result(Store(tmp_path, suite), record, {"pred__quadrant": np.eye(4)[[0]], "target__quadrant": np.zeros(1)})
        return record

    mine = [put("proto", 0, 0.80), put("proto", 1, 0.84)]
    put("tuned", 0, 0.90, code={"trainer.py": "an older hash"})  # stale: trained by other code
    manifest = Manifest(name="proto", datasets=(DatasetEntry(name="synthetic", tasks=("quadrant",)),),
                        reference={"source": "a study", "published": {"hard_share": {"quadrant": 79.22}},
                                   "tuned": "tuned"})
    data = ReportData(manifest=manifest, store=Store(tmp_path, "proto"), records=mine, failed_reruns=[], stale={},
                      skipped=[], fig_dir=tmp_path, run_seconds=None, command="")
    text = reference_comparison(data)
    # 80 and 84: mean 82, sample std sqrt(((80 - 82)^2 + (84 - 82)^2) / 1) = 2.83
    assert table(text, "## This protocol")[1] == ["synthetic", "quadrant", "hard_share", "accuracy %",
                                                  "82.00 ± 2.83 (n=2)", "79.22", "90.00 (n=1) (stale)"]
    assert "Published numbers: a study." in text and "1 of the tuned suite's cells are stale" in text


@pytest.mark.parametrize("reference, message", [
    ({"published": {"mtan": {"quadrant": 1.0}}}, r"reference\.published\.mtan: not a strategy id of this suite; valid: hard_share"),
    ({"published": {"hard_share": {"colour": 1.0}}}, r"reference\.published\.hard_share\.colour: not a task of this suite"),
    ({"published": {"hard_share": {"quadrant": "high"}}}, r"reference\.published: expected dict\[str, dict\[str, float\]\]"),
    ({"tuned": " "}, r"reference\.tuned: empty"),
    ({"table": {}}, r"reference\.table: unknown parameter; valid: published, source, tuned"),
])
def test_malformed_reference_is_refused(tiny_suite, write_suite, reference, message):
    with pytest.raises(SuiteError, match=message):
        load_suite(write_suite(tiny_suite(reference=reference)))


def test_explain_marks_where_each_setting_came_from(tiny_suite, write_suite, capsys):
    raw = tiny_suite(strategies=[{"name": "hard_share", "train": {"epochs": 3}},
                                 {"name": "ensemble", "of": "hard_share", "seeds": [0]}])
    raw["datasets"]["synthetic"]["train"] = {"crop_pad": 0, "augment": [{"op": "noise", "std": 0.1}]}
    assert cli.main(["validate", str(write_suite(raw)), "--explain"]) == 0
    out = capsys.readouterr().out
    assert out.count("## dataset synthetic, strategy") == 1  # the ensemble trains nothing of its own
    rows = {r[0]: r[1:] for r in table(out, "## dataset synthetic, strategy hard_share")[1:]}
    assert rows["epochs"] == ["3", "strategy"] and rows["crop_pad"] == ["0", "dataset"]
    assert rows["lr"] == ["0.001", "suite"] and rows["momentum"] == ["0.9", "default"]
    assert rows["flip"] == ["True", "default"] and rows["precision"] == ["auto", "default"]
    assert "augmentation, in order: hflip(p=0.5) -> noise(std=0.1)" in out
    assert len(rows) == len(dataclasses.fields(load_suite(write_suite(raw)).train))


def test_augment_ops_are_checked_when_the_suite_loads(tiny_suite, write_suite):
    raw = tiny_suite(strategies=[{"name": "hard_share", "train": {"augment": [{"op": "rotate", "degrees": -5}]}}])
    with pytest.raises(SuiteError, match=r"strategies\[0\]\.train\.augment\[0\]\.degrees: must be >= 0"):
        load_suite(write_suite(raw))
    raw = tiny_suite()
    raw["train"]["augment"] = [{"op": "noise"}, {"op": "spin"}]
    with pytest.raises(SuiteError, match=r"train\.augment\[1\]\.op: unknown augmentation op 'spin'; valid: brightness"):
        load_suite(write_suite(raw))


def test_orientation_ops_the_dataset_declares_nothing_for_are_refused_before_training(tiny_suite, write_suite):
    raw = tiny_suite()
    raw["train"]["augment"] = [{"op": "noise"}, {"op": "rot90"}]  # synthetic's `top` declares no quarter turn
    with pytest.raises(SuiteError, match=r"train\.augment\[1\] \(rot90\): dataset 'synthetic' declares no label "
                                         r"map for rot90 on task 'top' \(binary\)"):
        expand(load_suite(write_suite(raw)))
    raw["datasets"]["synthetic"]["tasks"] = ["quadrant", "brightness"]  # both declare rot90
    assert expand(load_suite(write_suite(raw)))
    mnist = tiny_suite(datasets={"mnist": {"tasks": ["digit"]}})  # the default flip: true on digits
    with pytest.raises(SuiteError, match=r"train\.flip \(hflip\): dataset 'mnist' declares no label map for hflip"):
        expand(load_suite(write_suite(mnist)))
