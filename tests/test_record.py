"""Records and keys: what a key covers, the validating reader, stores written by the previous code,
and reports rebuilt from a store alone (no suite file, no training-side imports)."""

from __future__ import annotations

import ast
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console

from bench import cli
from bench import record as R
from bench.config import load_suite
from bench.grid import CORE_TRAINING_CODE, expand
from bench.record import Record, RecordError, read_record
from bench.report import write_report
from bench.executors import run_cells
from bench.store import Store
from bench.strategies import STRATEGIES, HardShare
from conftest import LEGACY, REPO, SUITES, markdown_tables, section, skip_rendering

CPU = torch.device("cpu")
COMMITTED = sorted(p.name for p in (REPO / "results").iterdir() if p.is_dir())  # written by today's schema


def _run(cells, store: Store, **kw):
    return run_cells(cells, store, CPU, console=Console(file=io.StringIO()), **kw)


@pytest.fixture
def package_copy(tmp_path, monkeypatch) -> Path:
    """A copy of bench/ that the hashes read instead of the real one, to edit without touching it."""
    copy = tmp_path / "bench_copy"
    shutil.copytree(R.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(R, "PACKAGE", copy)
    return copy


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")
    R.file_hash.cache_clear()  # a process hashes each file once; the test edits under it


def test_report_edits_keep_a_cell_current_and_trainer_edits_make_it_stale(tiny_suite, write_suite, tmp_path,
                                                                         package_copy):
    (cell,) = expand(load_suite(write_suite(tiny_suite())))
    store = Store(tmp_path / "results", "tiny")
    assert _run([cell], store).done == [cell.name]
    stored = store.record(cell.name)
    for module in ("report/sections.py", "report/figures.py", "cli.py", "config.py", "data/cifar.py"):
        _edit(package_copy / module)
    assert cell.key == stored.key
    assert R.stale_reason(stored) is None and R.stale_reason(stored, {cell.name: cell.key}) is None
    assert _run([cell], store).cached == [cell.name]

    _edit(package_copy / "trainer.py")
    assert cell.key != stored.key
    assert R.stale_reason(stored) == "training code changed: trainer.py"  # from the code alone
    assert _run([cell], store).done == [cell.name]
    assert store.record(cell.name).key == cell.key


def test_a_new_strategy_or_module_leaves_every_key_alone(package_copy, monkeypatch):
    cells = expand(load_suite(SUITES / "smoke.yaml"))
    keys = {c.name: c.key for c in cells}
    source = R.code_version.__wrapped__()  # the provenance hash, over the copy

    class NewStrategy(HardShare):
        pass

    monkeypatch.setitem(STRATEGIES._items, "test_only_new_strategy", NewStrategy)  # registered for this test only
    (package_copy / "strategies_new.py").write_text('"""A plug-in module no cell uses."""\n')
    assert {c.name: c.key for c in expand(load_suite(SUITES / "smoke.yaml"))} == keys
    assert R.code_version.__wrapped__() != source  # the full source hash sees the new module


def test_a_cell_key_covers_its_own_plugins_and_the_core(tiny_suite, write_suite):
    raw = tiny_suite(strategies=["hard_share", {"name": "ensemble", "of": "hard_share", "seeds": [0]},
                                 {"name": "stl", "backbone": {"name": "convnet", "widths": [8]}}])
    cells = {c.strategy.id: c for c in expand(load_suite(write_suite(raw)))}
    trained = set(cells["hard_share"].code_files())
    # synthetic's tasks are multiclass, binary and regression: those kind modules, no others
    assert trained == {*CORE_TRAINING_CODE, "data/synthetic.py", "kinds/classification.py", "kinds/regression.py",
                       "models/alexnet.py", "strategies.py"}
    assert set(cells["ensemble"].code_files()) == trained | {"combine.py"}
    assert "models/convnet.py" in cells["stl"].code_files() and "models/alexnet.py" not in cells["stl"].code_files()
    regression_only = next(c for c in expand(load_suite(write_suite(raw))) if c.tasks == ("brightness",))
    assert "kinds/regression.py" in regression_only.code_files()
    assert "kinds/classification.py" not in regression_only.code_files()  # a kind the cell does not use
    code = cells["hard_share"].code()
    weighting = {f"weighting/{p.name}" for p in (R.PACKAGE / "weighting").glob("*.py")}  # a folder of the core
    assert set(code) == trained - {"weighting"} | weighting and all(len(h) == 16 for h in code.values())


def test_a_folder_in_the_code_list_stands_for_its_python_files():
    code = R.code_hashes(["report"])
    assert set(code) == {f"report/{p.name}" for p in (R.PACKAGE / "report").glob("*.py")}


@pytest.mark.parametrize("text, problem", [
    ('{"schema": 2, "cell": "x", "sta', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"schema": 3}', "schema 3"),
    ('{"schema": 2, "cell": "x"}', "incomplete: missing suite"),
])
def test_a_bad_record_is_one_error_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "record.json"
    path.write_text(text)
    with pytest.raises(RecordError) as err:
        read_record(path)
    assert str(err.value).startswith(f"{path}: ") and problem in str(err.value)


def _done(**changes) -> dict:
    base = Record(suite="s", cell="c", dataset="d", strategy="hard_share", strategy_name="hard_share",
                  multi_task=True, tasks=("a",), seed=0, status="done", key="k", test={"a": {"accuracy": 0.5}})
    return {**base.to_json(), **changes}


@pytest.mark.parametrize("changes, problem", [
    ({"test": {}}, "incomplete: test metrics"),
    ({"status": "finished"}, "status 'finished'"),
    ({"seed": "0"}, "seed: expected"),
    ({"test": {"a": {"accuracy": "high"}}}, "test: expected"),
    ({"colour": "red"}, "unknown field(s) colour"),
])
def test_a_wrong_record_names_the_field(tmp_path, changes, problem):
    path = tmp_path / "record.json"
    path.write_text(json.dumps(_done(**changes)))
    with pytest.raises(RecordError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        read_record(path)
    path.write_text(json.dumps(_done()))
    assert read_record(path).tasks == ("a",)  # lists come back as the schema's tuples


def test_a_schema_1_store_reads_through_the_legacy_upgrade():
    suite = "cifar_mtl"
    store = Store(LEGACY, suite)
    names = store.cells()
    assert names and not (store.dir / "suite.json").exists()  # written before manifests
    for name in names:
        record = store.finished(name)
        metrics = json.loads((store.cell_dir(name) / "metrics.json").read_text())
        assert record.schema == 1 and record.status == "done" and record.key == metrics["key"]
        assert record.test == metrics["test"] and record.provenance["device"].startswith("NVIDIA H100")
        assert R.stale_reason(record).startswith("stored by an earlier version")
    if suite == "cifar_mtl":  # figures from README.md's table
        hard = store.finished("cifar10__hard_share__seed0")
        assert hard.params == 7_507_787 and hard.multi_task and hard.tasks == ("class10", "animal")
        assert not store.finished("cifar10__stl(task=class10)__seed0").multi_task
        ensemble = store.finished("cifar10__ensemble(of=hard_share,seeds=0+1+2)")
        assert ensemble.params == 3 * 7_507_787 and len(ensemble.members) == 3 and ensemble.seed is None


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def _same_numbers(text: str, committed: str, heading: str) -> None:
    """Every cell of the committed report's tables under `heading` appears, in the row of the same first
    column, under the same header in the rebuilt report (columns the new report adds are not compared,
    nor delta_m, now shown with its interval: tests/test_comparison.py checks its numbers)."""
    new_rows = {(i, next(iter(r.values()))): r for i, t in enumerate(markdown_tables(section(text, heading)))
                for r in t}
    old = markdown_tables(section(committed, heading))
    assert old
    for i, table in enumerate(old):
        for row in table:
            key = next(iter(row.values()))
            found = new_rows[i, key]
            shared = [h for h in row if h in found and h != "delta_m %"]
            assert {h: row[h] for h in shared} == {h: found[h] for h in shared}, key
            assert len(shared) >= 2


def test_a_schema_1_store_rebuilds_its_report_and_shows_stale(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    suite = "cifar_mtl"
    shutil.copytree(LEGACY / suite, tmp_path / "results" / suite)
    store_dir = tmp_path / "results" / suite
    before = _snapshot(store_dir)
    roots = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path)]
    assert cli.main(["report", str(SUITES / f"{suite}.yaml"), *roots]) == 0
    after = _snapshot(store_dir)
    # the report adds the tidy results.csv and, with the suite file at hand, the suite's manifest; no cell changes
    assert {k: v for k, v in after.items() if k not in ("results.csv", "suite.json")} == before
    assert set(after) - set(before) == {"results.csv", "suite.json"}
    text = (tmp_path / f"{suite}.md").read_text()
    n = len(Store(tmp_path / "results", suite).cells())
    assert f"**Stale:** {n} finished cells" in text and "Skipped" not in text
    _same_numbers(text, (LEGACY / f"{suite}.md").read_text(), "Results")


@pytest.mark.parametrize("suite", COMMITTED)
def test_committed_stores_rebuild_their_committed_reports(suite, tmp_path, monkeypatch):
    """Every committed report recomputes from its committed store alone, without the suite file."""
    skip_rendering(monkeypatch)
    shutil.copytree(REPO / "results" / suite, tmp_path / "results" / suite)
    text = write_report(tmp_path / "results", suite, tmp_path).read_text()
    assert "Skipped" not in text
    _same_numbers(text, (REPO / "reports" / f"{suite}.md").read_text(), "Results")


def test_a_schema_1_store_reports_without_suite_or_manifest(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    shutil.copytree(LEGACY / "cifar_mtl", tmp_path / "results" / "cifar_mtl")
    text = write_report(tmp_path / "results", "cifar_mtl", tmp_path).read_text()  # entries rebuilt from the records
    committed = (LEGACY / "cifar_mtl.md").read_text()
    _same_numbers(text, committed, "Results")
    _same_numbers(text, committed, "Forgetting (sequential training)")
    assert "The store does not name its suite file." in text


def test_report_from_a_store_whose_suite_file_was_deleted(tiny_suite, write_suite, tmp_path, monkeypatch):
    raw = tiny_suite(strategies=["stl", "hard_share"], description="a deleted suite")
    raw["datasets"]["synthetic"]["tasks"] = ["quadrant", "top"]
    path = write_suite(raw, "tiny")
    roots = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert cli.main(["run", str(path), "--device", "cpu", "--no-report", *roots]) == 0
    path.unlink()
    assert cli.main(["report", str(path), *roots]) == 0
    text = (tmp_path / "reports" / "tiny.md").read_text()
    assert "a deleted suite" in text and "Stale" not in text and f"Suite file: `{path}`" in text
    rows = text.split("## Results")[1].split("\n## ")[0]
    assert "| stl " in rows and "| hard_share " in rows
    real = R.file_hash
    monkeypatch.setattr(R, "file_hash", lambda p: "edited" if p.name == "trainer.py" else real(p))
    assert cli.main(["report", "tiny", *roots]) == 0  # a name with no file in suites/
    text = (tmp_path / "reports" / "tiny.md").read_text()
    assert "**Stale:** 3 finished cells" in text
    assert "- training code changed: trainer.py (3)" in text.split("## Stale cells")[1]


def test_report_skips_parsing_an_unchanged_suite(tiny_suite, write_suite, tmp_path, monkeypatch):
    """While the suite file and the code that turns it into keys are as when `bench run` wrote the
    manifest, `bench report` takes the keys from it (parsing the suite imports torch); an edited suite
    is parsed, its cells judged against it, and its manifest recorded for the next report."""
    skip_rendering(monkeypatch)
    path = write_suite(tiny_suite(strategies=["stl", "hard_share"]), "tiny")
    roots = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert cli.main(["run", str(path), "--device", "cpu", "--no-report", *roots]) == 0
    store = Store(tmp_path / "results", "tiny")
    assert store.manifest().fingerprint == R.suite_fingerprint(path) and len(store.manifest().keys) == 4

    def refuse(*args, **kwargs):
        raise AssertionError("the suite was parsed")

    with monkeypatch.context() as m:
        m.setattr(cli, "load_suite", refuse)
        assert cli.main(["report", str(path), *roots]) == 0
    assert "Stale" not in (tmp_path / "reports" / "tiny.md").read_text()
    raw = tiny_suite(strategies=["stl", "hard_share"])
    raw["train"]["lr"] = 0.01  # the same cells under new keys
    write_suite(raw, "tiny")
    assert cli.main(["report", str(path), *roots]) == 0
    assert "**Stale:** 4 finished cells" in (tmp_path / "reports" / "tiny.md").read_text()
    assert store.manifest().fingerprint == R.suite_fingerprint(path)  # recorded: the next report is quick
    with monkeypatch.context() as m:
        m.setattr(cli, "load_suite", refuse)
        assert cli.main(["report", str(path), *roots]) == 0
    assert "**Stale:** 4 finished cells" in (tmp_path / "reports" / "tiny.md").read_text()
    monkeypatch.setattr(R, "SUITE_TO_KEYS_CODE", ("config.py", "trainer.py"))  # the harness changed
    assert R.suite_fingerprint(path) != store.manifest().fingerprint


def test_report_with_neither_suite_nor_store_exits_2(tmp_path):
    assert cli.main(["report", "nothing_here", "--results", str(tmp_path), "--reports", str(tmp_path)]) == 2


def _bench_imports(path: Path) -> set[str]:
    """The bench modules a source file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bench"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bench")}
    return found


def test_the_report_imports_no_training_code():
    """The report and everything it imports from bench/, followed transitively."""
    seen, todo = set(), ["bench.report"] + [f"bench.report.{p.stem}" for p in (R.PACKAGE / "report").glob("*.py")]
    while todo:
        module = todo.pop()
        path = R.PACKAGE.parent / (module.replace(".", "/") + ".py")
        path = path if path.exists() else path.with_suffix("") / "__init__.py"
        if module in seen or not path.exists():  # `from bench.x import name`: name is no module
            continue
        seen.add(module)
        todo += sorted(_bench_imports(path))
    assert seen.isdisjoint({"bench.grid", "bench.strategies", "bench.trainer", "bench.config", "bench.runner",
                            "bench.combine", "bench.data", "bench.models"}), sorted(seen)
    assert {"bench.record", "bench.store", "bench.report.sections"} <= seen


def test_a_plugin_module_brings_the_modules_of_its_folder_it_imports():
    # digit_scenes reads MNIST through data/mnist.py: editing that reader must make its cells stale
    cells = expand(load_suite(SUITES / "smoke_onehead.yaml"))
    scenes = next(c for c in cells if "seg" in c.tasks)
    assert {"data/digit_scenes.py", "data/mnist.py"} <= set(scenes.code_files())
    assert "data/cifar.py" not in scenes.code_files()  # a sibling it does not import
