"""The smoke suite (shrunk to tiny data) through `bench run`: runner, store and report on CPU."""

from __future__ import annotations

import json
import re

import numpy as np
import torch

from bench.config import load_suite
from bench.grid import code_version, expand

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CELL_FILES = ("config.json", "metrics.json", "history.csv", "predictions.npz", "log.txt")


def test_run_succeeds(smoke_run):
    assert smoke_run["code"] == 0


def test_report_has_every_section_and_strategy(smoke_run):
    text = (smoke_run["reports"] / "smoke.md").read_text()
    headings = re.findall(r"^##+ (.+)$", text, flags=re.M)
    assert headings == ["Results", "synthetic", "Confusion matrices", "Training curves",
                        "Appendix: every cell", "Reproduce"]
    results = text.split("## Results")[1].split("## Confusion matrices")[0]
    rows = [line for line in results.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert sorted(r.split("|")[1].strip() for r in rows) == sorted(["stl", "hard_share", "cross_stitch"])
    for row in rows:
        assert row.split("|")[-2].strip() == "2"  # n = two seeds
    assert "Cells: 10 recorded: 10 done" in text
    assert "Failed cells" not in text
    appendix = text.split("## Appendix: every cell")[1]
    for cell in expand(load_suite(smoke_run["suite"])):
        assert cell.name in appendix


def test_every_figure_is_a_png(smoke_run):
    reports = smoke_run["reports"]
    text = (reports / "smoke.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    # quadrant and top are classification (a confusion figure each), plus one curves figure
    assert sorted(links) == ["smoke/confusion_synthetic_quadrant.png", "smoke/confusion_synthetic_top.png",
                             "smoke/curves_synthetic.png"]
    for link in links:
        data = (reports / link).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, link


def test_store_holds_every_cell_with_provenance(smoke_run):
    suite = load_suite(smoke_run["suite"])
    store_dir = smoke_run["results"] / "smoke"
    cells = expand(suite)
    assert sorted(p.name for p in store_dir.iterdir()) == sorted(c.name for c in cells)
    n_test = suite.datasets[0].options["n_test"]
    for cell in cells:
        folder = store_dir / cell.name
        for name in CELL_FILES:
            assert (folder / name).stat().st_size > 0, f"{cell.name}/{name}"
        config = json.loads((folder / "config.json").read_text())
        assert config["key"] == cell.key and config["tasks"] == list(cell.tasks)
        prov = config["provenance"]
        assert prov["torch"] == torch.__version__ and prov["code_version"] == code_version()
        assert prov["device"].startswith("cpu")
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["status"] == "done" and metrics["key"] == cell.key
        assert set(metrics["test"]) == set(cell.tasks)
        history = (folder / "history.csv").read_text().splitlines()
        assert len(history) == 1 + suite.train.epochs  # header + one row per epoch
        with np.load(folder / "predictions.npz") as z:
            assert sorted(z.files) == sorted(f"{k}__{t}" for t in cell.tasks for k in ("pred", "target"))
            for t in cell.tasks:
                assert len(z[f"pred__{t}"]) == len(z[f"target__{t}"]) == n_test
                assert np.isfinite(z[f"pred__{t}"]).all()
