"""Experiment tracking: the hooks driven as the runner drives them, read back with MLflow's own client
and TensorBoard's event reader; config errors, missing packages and failing trackers."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli
from bench.config import SuiteError, TrackingConfig, load_suite
from bench.grid import expand
from bench.tracking import (CompositeTracker, Tracker, TrackingError, TrackingWarning, cell_tags, make_tracker,
                            mlflow_uri, resume_tracker)
from conftest import REPO

mlflow = pytest.importorskip("mlflow")
HAS_SQL = all(importlib.util.find_spec(m) for m in ("sqlalchemy", "alembic"))

ROWS = [  # history rows as the trainer emits them: a stage label (a string, not logged), numbers
    {"stage": "", "epoch": 1, "lr": 0.001, "train_loss": 1.5, "val_quadrant_accuracy": 0.25, "val_loss": 1.4},
    {"stage": "", "epoch": 2, "lr": 0.0005, "train_loss": 1.0, "val_quadrant_accuracy": 0.5, "val_loss": 1.1},
    {"stage": "", "epoch": 3, "lr": 0.0, "train_loss": 0.5, "val_quadrant_accuracy": 0.75, "val_loss": 0.9},
]


@pytest.fixture
def cells(tiny_suite, write_suite):
    """Two real cells: hard_share seed 0 and an ensemble (whose config holds member cell names as keys)."""
    raw = tiny_suite(strategies=["hard_share", {"name": "ensemble", "of": "hard_share", "seeds": [0, 1]}], seeds=[0, 1])
    by_name = {c.name: c for c in expand(load_suite(write_suite(raw)))}
    return by_name["synthetic__hard_share__seed0"], by_name["synthetic__ensemble(of=hard_share,seeds=0+1)"]


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store whose schema is created once per session: its ~30 migrations take
    seconds, and each test copies the file, so every test still has a store of its own."""
    if not HAS_SQL:
        pytest.skip("the sqlite store needs sqlalchemy and alembic (pip install 'mtl-bench[mlflow]')")
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def sqlite_folder(folder: Path, migrated_db: Path) -> Path:
    """`folder` as `--mlflow` takes it (a sqlite store inside), holding a fresh copy of the migrated store."""
    folder.mkdir(parents=True)
    shutil.copy(migrated_db, folder / "mlflow.db")
    return folder


@pytest.fixture(params=["sqlite", "file"])
def mlflow_target(request, tmp_path, monkeypatch):
    """An MLflow target in tmp_path: a plain folder (a sqlite store) or a file: URI (the legacy file store)."""
    if request.param == "sqlite":
        return str(sqlite_folder(tmp_path / "mlflow", request.getfixturevalue("migrated_db")))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store without it
    return (tmp_path / "mlruns").as_uri()


def _record_files(folder: Path, record: dict) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "record.json").write_text(json.dumps(record))
    (folder / "history.csv").write_text("epoch,train_loss\n1,1.5\n")
    return [folder / "record.json", folder / "history.csv", folder / "log.txt"]  # log.txt missing: skipped


def _run_cell(tracker: Tracker, cell, tmp_path: Path, *, status: str = "done") -> None:
    tracker.start_cell(cell.name, {"key": cell.key, **cell.resolved()}, cell_tags(cell))
    for row in ROWS:
        tracker.log_epoch(cell.name, row)
    record = {"status": status, "cell": cell.name, "seed": cell.seed, "wall_seconds": 2.5, "best_epoch": 3,
              "test": {"quadrant": {"accuracy": 0.8, "loss": 0.6}, "brightness": {"mae": 0.1}},
              "val": {"quadrant": {"accuracy": 0.75}}}
    if status != "done":
        record = {"status": status, "cell": cell.name, "reason": "ValueError: boom"}
    tracker.end_cell(cell.name, record, _record_files(tmp_path / "results" / cell.name, record))


def _run_suite(tracker: Tracker, cells, tmp_path: Path) -> None:
    tracker.check()
    tracker.start_suite("tiny", "a tiny grid", {"cells": [c.name for c in cells], "command": "bench run tiny"})
    _run_cell(tracker, cells[0], tmp_path)
    _run_cell(tracker, cells[1], tmp_path, status="failed")
    report = tmp_path / "reports" / "tiny.md"
    (report.parent / "tiny").mkdir(parents=True)
    report.write_text("# tiny\n![curves](tiny/curves.png)\n")
    (report.parent / "tiny" / "curves.png").write_bytes(b"\x89PNG fake")
    tracker.end_suite(report, [report.parent / "tiny" / "curves.png"])


def _runs(uri: str) -> tuple:
    """(client, parent run, {cell name: child run}) read back with MLflow's own client."""
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    return client, parents[0], {r.data.tags["cell"]: r for r in runs if r not in parents}


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, path)}


def test_mlflow_parent_and_child_runs_read_back(mlflow_target, cells, tmp_path):
    tracker = make_tracker(TrackingConfig(mlflow=mlflow_target))
    _run_suite(tracker, cells, tmp_path)
    client, parent, children = _runs(mlflow_uri(mlflow_target)[0])

    assert set(children) == {c.name for c in cells}
    if not mlflow_target.startswith("file:"):  # a folder: artifacts beside the database, per suite
        location = client.get_experiment_by_name("tiny").artifact_location
        assert location == (Path(mlflow_target) / "artifacts" / "tiny").as_uri()
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.tags["mlflow.note.content"] == "a tiny grid"
    assert _artifacts(client, parent.info.run_id) == {"manifest.json", "report"}
    assert _artifacts(client, parent.info.run_id, "report") == {"report/tiny.md", "report/tiny"}
    assert _artifacts(client, parent.info.run_id, "report/tiny") == {"report/tiny/curves.png"}

    done = children["synthetic__hard_share__seed0"]
    assert {k: done.data.tags[k] for k in ("suite", "strategy", "dataset", "seed", "status")} == {
        "suite": "tiny", "strategy": "hard_share", "dataset": "synthetic", "seed": "0", "status": "done"}
    assert done.info.status == "FINISHED" and done.info.run_name == cells[0].name
    params = done.data.params
    assert params["train.lr"] == "0.001" and params["train.optimizer"] == "adam"
    assert params["tasks"] == '["quadrant", "top", "brightness"]' and params["train.loss_weights"] == "{}"
    assert params["key"] == cells[0].key
    history = client.get_metric_history(done.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 1.5), (2, 1.0), (3, 0.5)]
    assert "stage" not in done.data.metrics and "seed" not in done.data.metrics  # a string; a tag
    assert done.data.metrics["test_quadrant_accuracy"] == 0.8 and done.data.metrics["test_brightness_mae"] == 0.1
    assert done.data.metrics["best_val_quadrant_accuracy"] == 0.75 and done.data.metrics["wall_seconds"] == 2.5
    assert _artifacts(client, done.info.run_id) == {"record.json", "history.csv"}

    failed = children[cells[1].name]
    assert failed.info.status == "FAILED" and failed.data.tags["status"] == "failed"
    assert failed.data.tags["reason"] == "ValueError: boom" and failed.data.tags["seed"] == "0+1"
    members = {k: v for k, v in failed.data.params.items() if k.startswith("members.")}
    assert members == {"members.synthetic__hard_share__seed0": cells[1].members[0].key,
                       "members.synthetic__hard_share__seed1": cells[1].members[1].key}


def test_mlflow_long_values_are_truncated(mlflow_target, tmp_path):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    tracker = make_tracker(TrackingConfig(mlflow=mlflow_target))
    tracker.start_suite("tiny", "", {})
    tracker.start_cell("c", {"options": {"long": "x" * (MAX_PARAM_VAL_LENGTH + 10), "many": list(range(3000))}}, {})
    assert tracker.enabled  # nothing was refused
    _, _, children = _runs(mlflow_uri(mlflow_target)[0])
    params = children["c"].data.params
    assert len(params["options.long"]) == MAX_PARAM_VAL_LENGTH and params["options.long"].endswith("...")
    assert params["options.many"].startswith("[0, 1, 2")


def _worker(state: dict, tmp: str, cell_name: str, open_cell: str) -> None:
    """A pool worker or SLURM job: rebuilds the tracker from the state, tracks one cell, starts another."""
    tracker = resume_tracker(state)
    tracker.start_cell(cell_name, {"train": {"lr": 0.1}}, {"suite": "tiny", "seed": 7})
    for row in ROWS:
        tracker.log_epoch(cell_name, row)
    tracker.end_cell(cell_name, {"status": "done", "test": {"t": {"accuracy": 1.0}}}, [])
    tracker.start_cell(open_cell, {}, {})
    tracker.log_epoch(open_cell, ROWS[0])
    if not tracker.enabled:
        raise SystemExit(1)


@pytest.mark.parametrize("mlflow_target", ["sqlite"], indirect=True)  # the file store is read back in-process above
def test_hooks_from_a_spawned_process_land_under_the_same_parent(mlflow_target, tmp_path):
    tracker = make_tracker(TrackingConfig(mlflow=mlflow_target, tensorboard=str(tmp_path / "tb")))
    tracker.check()
    tracker.start_suite("tiny", "", {})
    state = json.loads(json.dumps(tracker.state()))  # what would travel through a file or a job's arguments
    proc = multiprocessing.get_context("spawn").Process(target=_worker, args=(state, str(tmp_path), "w0", "w1"))
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == 0
    only_mlflow = resume_tracker({"mlflow": state["mlflow"]})
    only_mlflow.end_cell("w1", {"status": "failed", "reason": "node lost"}, [])  # ended here, started there
    tracker.end_suite(None, [])
    assert tracker.enabled

    client, parent, children = _runs(mlflow_uri(mlflow_target)[0])
    assert parent.info.run_id == state["mlflow"]["parent_run_id"]
    assert {c: r.data.tags["mlflow.parentRunId"] for c, r in children.items()} == {
        "w0": parent.info.run_id, "w1": parent.info.run_id}
    assert children["w0"].data.tags["seed"] == "7" and children["w0"].info.status == "FINISHED"
    assert len(client.get_metric_history(children["w0"].info.run_id, "train_loss")) == 3
    assert children["w1"].data.tags["status"] == "failed" and children["w1"].info.status == "FAILED"
    assert _scalars(tmp_path / "tb" / "tiny" / "w0", "train_loss") == [(1, 1.5), (2, 1.0), (3, 0.5)]


def _scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)]  # stored as float32


def test_tensorboard_event_files_per_cell(cells, tmp_path):
    tb = tmp_path / "tb"
    tracker = make_tracker(TrackingConfig(), tensorboard=str(tb))
    _run_suite(tracker, cells, tmp_path)
    _run_suite(make_tracker(TrackingConfig(), tensorboard=str(tb)), cells, tmp_path / "again")  # a rerun

    done = tb / "tiny" / cells[0].name
    assert _scalars(done, "train_loss") == [(1, 1.5), (2, 1.0), (3, 0.5)]  # once: the rerun replaced the first
    assert _scalars(done, "lr") == [(1, 0.001), (2, 0.0005), (3, 0.0)]
    assert _scalars(done, "test_quadrant_accuracy") == [(3, 0.8)]  # written with the hparams
    assert _scalars(tb / "tiny" / cells[1].name, "val_loss")[-1] == (3, 0.9)


def test_missing_packages_are_clear_errors_before_training(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(TrackingError, match=r"tracking\.mlflow: .*pip install 'mtl-bench\[mlflow\]'"):
        make_tracker(TrackingConfig(mlflow="http://127.0.0.1:9")).check()
    with pytest.raises(TrackingError, match=r"--mlflow: "):
        make_tracker(TrackingConfig(mlflow="a"), mlflow=str(tmp_path)).check()

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(TrackingError, match=r"tracking\.tensorboard: .*pip install 'mtl-bench\[tensorboard\]'"):
        make_tracker(TrackingConfig(tensorboard=str(tmp_path))).check()


def test_sqlite_store_without_sqlalchemy_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(TrackingError, match=r"tracking\.mlflow: .*sqlite.*sqlalchemy and alembic"):
        make_tracker(TrackingConfig(mlflow=str(tmp_path / "mlflow"))).check()


def test_unreachable_server_is_an_error_at_start():
    with pytest.raises(TrackingError, match=r"--mlflow: MLflow server http://127.0.0.1:9 is unreachable"):
        make_tracker(TrackingConfig(), mlflow="http://127.0.0.1:9").check()  # port 9: nothing listens


class _Broken(Tracker):
    label = "broken"

    def __init__(self):
        self.calls = []

    def log_epoch(self, cell_name, row):
        self.calls.append(row["epoch"])
        raise ConnectionError("server went away")


class _Recording(Tracker):
    label = "recording"

    def __init__(self):
        self.calls = []

    def log_epoch(self, cell_name, row):
        self.calls.append(row["epoch"])


def test_a_failing_tracker_warns_once_and_is_disabled():
    broken, ok = _Broken(), _Recording()
    tracker = CompositeTracker([broken, ok])
    with pytest.warns(TrackingWarning, match="broken tracking disabled .* log_epoch: ConnectionError") as caught:
        for row in ROWS:
            tracker.log_epoch("c", row)
        tracker.end_cell("c", {"status": "done"}, [])
    assert len(caught) == 1
    assert broken.calls == [1] and ok.calls == [1, 2, 3]
    assert tracker.state() == {"recording": {}}


def test_off_by_default_and_command_line_wins(tiny_suite, write_suite, tmp_path):
    suite = load_suite(write_suite(tiny_suite()))
    assert suite.tracking == TrackingConfig()
    tracker = make_tracker(suite.tracking)
    assert not tracker.enabled and tracker.state() == {}
    tracker.check()  # the null tracker accepts everything

    cfg = TrackingConfig(mlflow="suite_folder", tensorboard="tb_suite")
    tracker = make_tracker(cfg, mlflow="http://example.org:5000")
    (ml, tb) = tracker.trackers
    assert (ml.uri, ml.where) == ("http://example.org:5000", "--mlflow")
    assert (tb.root, tb.where) == (Path("tb_suite").resolve(), "tracking.tensorboard")


def test_mlflow_uri_of_folders_and_uris(tmp_path):
    assert mlflow_uri(str(tmp_path / "ml")) == (f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}",
                                                tmp_path / "ml" / "artifacts")
    assert mlflow_uri("sqlite:///runs.db") == (f"sqlite:///{Path('runs.db').resolve()}",
                                               Path.cwd() / "artifacts")
    assert mlflow_uri("http://host:5000") == ("http://host:5000", None)
    assert mlflow_uri("file:///x/mlruns") == ("file:///x/mlruns", None)


@pytest.mark.parametrize("value, message", [
    ({"mlfow": "x"}, "tracking.mlfow: unknown parameter; valid: mlflow, tensorboard"),
    ({"tensorboard": 3}, "tracking.tensorboard: expected str | None, got 3"),
    ({"mlflow": ""}, "tracking.mlflow: empty"),
    (["mlflow"], "tracking: expected a mapping, got list"),
])
def test_config_errors_name_the_key_path(tiny_suite, write_suite, value, message):
    path = write_suite(tiny_suite(tracking=value))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_suite_key_does_not_change_cell_keys(tiny_suite, write_suite):
    plain = expand(load_suite(write_suite(tiny_suite(), "plain")))
    tracked = expand(load_suite(write_suite(tiny_suite(tracking={"mlflow": "m", "tensorboard": "t"}), "tracked")))
    assert [c.key for c in plain] == [c.key for c in tracked]


def test_tracking_packages_are_imported_only_when_enabled():
    code = ("import sys; from bench.config import TrackingConfig; from bench.tracking import make_tracker; "
            "make_tracker(TrackingConfig()).check(); "
            "print(sorted(m for m in ('mlflow', 'tensorboard', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bench_run_logs_every_cell_to_mlflow_and_tensorboard(tiny_suite, write_suite, tmp_path, migrated_db):
    """The wiring end to end: `bench run --mlflow --tensorboard` on a tiny suite whose second cell fails."""
    raw = tiny_suite(strategies=["hard_share", {"name": "cross_stitch", "stitch_after": [9]}])  # 9: fails at build
    raw["train"]["epochs"] = 2
    path = write_suite(raw)
    ml, tb = sqlite_folder(tmp_path / "mlflow", migrated_db), tmp_path / "tb"
    roots = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), "--device", "cpu"]
    assert cli.main(["run", str(path), *roots, "--mlflow", str(ml), "--tensorboard", str(tb)]) == 1

    client, parent, children = _runs(mlflow_uri(str(ml))[0])
    assert parent.info.status == "FINISHED" and parent.info.run_name == "tiny"
    assert _artifacts(client, parent.info.run_id, "report") == {"report/tiny.md", "report/tiny"}
    links = re.findall(r"\]\((tiny/[^)]+\.png)\)", (tmp_path / "reports" / "tiny.md").read_text())
    assert "tiny/curves_synthetic.png" in links  # every figure the report shows, and nothing else
    assert _artifacts(client, parent.info.run_id, "report/tiny") == {f"report/{link}" for link in links}
    done, failed = children["synthetic__hard_share__seed0"], children["synthetic__cross_stitch(stitch_after=9)__seed0"]
    assert {k: done.data.tags[k] for k in ("suite", "strategy", "dataset", "seed", "status")} == {
        "suite": "tiny", "strategy": "hard_share", "dataset": "synthetic", "seed": "0", "status": "done"}
    record = json.loads((tmp_path / "results" / "tiny" / "synthetic__hard_share__seed0" / "record.json").read_text())
    assert done.data.params["key"] == record["key"] and done.data.params["train.epochs"] == "2"
    losses = sorted(client.get_metric_history(done.info.run_id, "train_loss"), key=lambda m: m.step)
    history = (tmp_path / "results" / "tiny" / "synthetic__hard_share__seed0" / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("train_loss")
    assert [(m.step, m.value) for m in losses] == [(i, float(line.split(",")[column]))
                                                  for i, line in enumerate(history[1:], 1)]
    assert done.data.metrics["test_quadrant_accuracy"] == record["test"]["quadrant"]["accuracy"]
    assert _artifacts(client, done.info.run_id) == {"record.json", "history.csv", "log.txt"}
    assert failed.info.status == "FAILED" and "stitch_after: stage 9 out of range" in failed.data.tags["reason"]
    assert [s for s, _ in _scalars(tb / "tiny" / "synthetic__hard_share__seed0", "train_loss")] == [1, 2]


def test_an_unusable_tracker_stops_bench_run_before_training(tiny_suite, write_suite, tmp_path, capsys):
    path = write_suite(tiny_suite())
    code = cli.main(["run", str(path), "--results", str(tmp_path / "results"), "--device", "cpu",
                     "--mlflow", "http://127.0.0.1:9"])  # port 9: nothing listens
    assert code == 2 and "MLflow server http://127.0.0.1:9 is unreachable" in capsys.readouterr().err
    assert not list((tmp_path / "results").glob("tiny/*/record.json"))  # nothing trained


def test_a_worker_job_carries_the_tracker_state_and_logs_under_the_suite_run(tiny_suite, write_suite, tmp_path,
                                                                            migrated_db):
    """What a pool worker or SLURM job does, in this process: the job (pickled, as it travels) carries the
    parent tracker's state, and run_named_cell logs the cell under the suite's run."""
    from bench.executors import RunContext, run_named_cell
    from bench.store import Store

    path = write_suite(tiny_suite())
    ml = sqlite_folder(tmp_path / "mlflow", migrated_db)
    tracker = make_tracker(TrackingConfig(mlflow=str(ml)))
    tracker.check()
    tracker.start_suite("tiny", "", {})
    ctx = RunContext(store=Store(tmp_path / "results", "tiny"), device="cpu", suite_path=str(path), tracker=tracker)
    job = pickle.loads(pickle.dumps(ctx.job("synthetic__hard_share__seed0")))
    assert job.tracking == tracker.state() and job.tracking["mlflow"]["parent_run_id"]
    assert run_named_cell(job).status == "done"
    tracker.end_suite(None, [])
    client, parent, children = _runs(mlflow_uri(str(ml))[0])
    run = children["synthetic__hard_share__seed0"]
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
    assert _artifacts(client, run.info.run_id) == {"record.json", "history.csv", "log.txt"}
