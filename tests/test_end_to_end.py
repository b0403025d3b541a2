"""The smoke suite (shrunk to tiny data) through `bench run`: runner, store and report on CPU."""

from __future__ import annotations

import json
import re

import numpy as np
import torch

from bench import cli
from bench.config import load_suite
from bench.grid import expand
from bench.record import Manifest, code_version
from bench.kinds import GALLERY_SIZE
from bench.strategies import STRATEGIES
from conftest import markdown_tables, section

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMBINED_FILES = ("record.json", "predictions.npz")  # a cell combined from others (ensemble)
CELL_FILES = COMBINED_FILES + ("history.csv", "log.txt")  # a trained cell
CLASSIFICATION, REGRESSION = ("quadrant", "top"), ("brightness",)  # the smoke suite's synthetic tasks
GALLERY = ("index", "loss", "x")  # gallery_<what>__<task>: a trained cell's highest-loss test images


def test_run_succeeds(smoke_run):
    assert smoke_run["code"] == 0


def _in_order(expected: list[str], found: list[str]) -> bool:
    """Every item of `expected` occurs in `found`, in that order (others may come in between)."""
    rest = iter(found)
    return all(item in rest for item in expected)


def test_report_has_every_section_and_strategy(smoke_run):
    suite = load_suite(smoke_run["suite"])
    text = (smoke_run["reports"] / "smoke.md").read_text()
    headings = re.findall(r"^##+ (.+)$", text, flags=re.M)
    assert _in_order(["Results", "synthetic", "Against single-task learning", "Ensembles",
                      "Classification metrics per task", "Confusion matrices", "Regression residuals",
                      f"synthetic / {REGRESSION[0]}", "Highest-loss test images", "Training curves",
                      "Appendix: every cell", "Reproduce"], headings), headings
    assert len(set(headings)) == len(headings) and "Failed cells" not in text
    (rows,) = markdown_tables(section(text, "Results"))
    n = {r["strategy"]: r["n"] for r in rows}
    entries = {st.id: STRATEGIES.get(st.name)(**st.params) for st in suite.strategies}
    assert list(n) == [st.id for st in suite.strategies]  # suite order, and stl (listed first) first
    assert sorted(n) == sorted(entries)  # one row per strategy entry
    for sid, strategy in entries.items():  # n = two seeds; an ensemble is one seed-less cell
        assert n[sid] == ("1" if strategy.members() else str(len(suite.seeds))), sid
    cells = expand(suite)
    assert f"Cells: {len(cells)} recorded: {len(cells)} done" in text
    appendix = text.split("## Appendix: every cell")[1]
    for cell in cells:
        assert cell.name in appendix


def test_every_figure_is_a_png(smoke_run):
    reports = smoke_run["reports"]
    text = (reports / "smoke.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    # A confusion figure per classification task, residuals per regression task, the highest-loss
    # images of every task, and one ensemble, forgetting and curves figure for the dataset.
    expected = ([f"smoke/confusion_synthetic_{t}.png" for t in CLASSIFICATION]
                + [f"smoke/residuals_synthetic_{t}.png" for t in REGRESSION]
                + [f"smoke/hardest_synthetic_{t}.png" for t in CLASSIFICATION + REGRESSION]
                + ["smoke/ensemble_synthetic.png", "smoke/forgetting_synthetic.png", "smoke/curves_synthetic.png",
                   "smoke/vs_stl_synthetic.png"])
    assert sorted(links) == sorted(expected)
    for link in links:
        data = (reports / link).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, link


def test_store_holds_every_cell_with_provenance(smoke_run):
    suite = load_suite(smoke_run["suite"])
    store_dir = smoke_run["results"] / "smoke"
    cells = expand(suite)
    cell_dirs = [p.name for p in store_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert sorted(cell_dirs) == sorted(c.name for c in cells)
    assert not any((store_dir / ".attempts").iterdir())  # every attempt was moved into place
    manifest = Manifest.from_json(json.loads((store_dir / "suite.json").read_text()), "suite.json")
    assert manifest.cells == tuple(c.name for c in cells) and manifest.path == str(smoke_run["suite"])
    assert [e.id for e in manifest.strategies] == [st.id for st in suite.strategies]
    n_test = suite.datasets[0].options["n_test"]
    for cell in cells:
        folder = store_dir / cell.name
        for name in COMBINED_FILES if cell.members else CELL_FILES:
            assert (folder / name).stat().st_size > 0, f"{cell.name}/{name}"
        metrics = json.loads((folder / "record.json").read_text())
        assert metrics["key"] == cell.key and metrics["tasks"] == list(cell.tasks) and metrics["schema"] == 2
        assert metrics["config"] == json.loads(json.dumps(cell.resolved())) and metrics["code"] == cell.code()
        assert "trainer.py" in metrics["code"] and not any(f.startswith("report/") for f in metrics["code"])
        prov = metrics["provenance"]
        assert prov["torch"] == torch.__version__ and prov["code_version"] == code_version()
        assert prov["device"].startswith("cpu")
        assert metrics["status"] == "done" and metrics["reason"] == ""
        assert set(metrics["test"]) == set(cell.tasks)
        if not cell.members:
            history = (folder / "history.csv").read_text().splitlines()
            stages = metrics["extra"].get("stages", [None])  # sequential cells train one stage per task
            epochs = cell.strategy.params.get("stage_epochs") or cell.train.epochs
            assert len(history) == 1 + len(stages) * epochs  # header + one row per epoch
        with np.load(folder / "predictions.npz") as z:
            required = {f"{k}__{t}" for t in cell.tasks for k in ("pred", "target")}
            gallery = set() if cell.members else {f"gallery_{k}__{t}" for t in cell.tasks for k in GALLERY}
            assert set(z.files) == required | gallery, cell.name
            for t in cell.tasks:
                assert len(z[f"pred__{t}"]) == len(z[f"target__{t}"]) == n_test
                assert np.isfinite(z[f"pred__{t}"]).all()
                if gallery:
                    assert len(z[f"gallery_x__{t}"]) == min(GALLERY_SIZE, n_test)


def test_report_flags_cells_from_another_config(tiny_suite, write_suite, tmp_path):
    path = write_suite(tiny_suite())
    roots = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert cli.main(["run", str(path), "--device", "cpu", *roots]) == 0
    assert "Stale" not in (tmp_path / "reports" / "tiny.md").read_text()
    changed = tiny_suite()
    changed["train"]["lr"] = 0.01  # same cell name, new key
    write_suite(changed)
    assert cli.main(["report", str(path), *roots]) == 0
    text = (tmp_path / "reports" / "tiny.md").read_text()
    assert "**Stale:** 1 finished cells" in text
    assert "- config changed (1): `synthetic__hard_share__seed0`" in text.split("## Stale cells")[1]
    assert "| synthetic__hard_share__seed0 (stale) |" in text.split("## Appendix")[1]
