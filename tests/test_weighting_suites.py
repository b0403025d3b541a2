"""The weighting suites end to end on CPU: smoke_weighting_cifar on real CIFAR-10 JPEGs, and
weighting_freq3 shrunk to seconds, through `bench run` and the report's weighting section, whose
comparison is checked against scipy's paired t-test and statsmodels' Holm correction."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from bench import cli
from bench.config import load_suite
from bench.grid import expand
from bench.report import sections, write_report
from bench.report.weighting_section import weighting
from bench.store import Store
from conftest import SUITES


def _section(text: str) -> str:
    return text.split("## Weighting methods")[1].split("\n## ")[0]


def _table(text: str, first_column: str) -> list[dict[str, str]]:
    """The Markdown table whose header starts with `first_column`, as rows of cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    start = next(i for i, line in enumerate(lines) if line.split("|")[1].strip() == first_column)
    header = [c.strip() for c in lines[start].split("|")[1:-1]]
    rows = []
    for line in lines[start + 2:]:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) != len(header) or cells == header:
            break
        rows.append(dict(zip(header, cells)))
    return rows


def _run_with_weighting_section(suite: Path, tmp: Path) -> int:
    """`bench run` without its report, then the report's weighting section alone (the other sections
    have their own tests, and rendering them all took most of this test's time)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(tmp / "cache"))
        code = cli.main(["run", str(suite), "--results", str(tmp / "results"), "--device", "cpu", "--no-report"])
        mp.setattr(sections, "SECTIONS", [weighting])
        write_report(tmp / "results", load_suite(suite).name, tmp / "reports")
    return code


@pytest.fixture(scope="module")
def cifar_run(cifar_small_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wcifar")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_DATA_DIR", str(cifar_small_root))
        return tmp, _run_with_weighting_section(SUITES / "smoke_weighting_cifar.yaml", tmp)


def test_smoke_weighting_cifar_runs_and_reports(cifar_run):
    tmp, code = cifar_run
    assert code == 0
    suite = load_suite(SUITES / "smoke_weighting_cifar.yaml")
    store = Store(tmp / "results", suite.name)
    assert all(store.record(c.name).status == "done" for c in expand(suite))
    text = (tmp / "reports" / "smoke_weighting_cifar.md").read_text()
    section = _section(text)
    rows = {r["entry"]: r for r in _table(section, "entry")}
    multi = [st.id for st in suite.strategies if st.name not in ("stl", "mtan", "mmoe")]
    # each architecture's first equal-weighting entry is its own reference
    assert list(rows) == ["hard_share *ref*", *multi[1:], "mtan *ref*", "mmoe *ref*"]
    assert rows["cagrad"]["method"] == "cagrad (c=0.5)" and rows["mtan *ref*"]["strategy"] == "mtan"
    assert rows["mtan *ref*"]["x ref"] == "1.00" and rows["hard_share *ref*"]["x ref"] == "1.00"
    for figure in ("weights_cifar10.png", "grad_cosines_cifar10.png"):
        assert f"smoke_weighting_cifar/{figure}" in section
        assert (tmp / "reports" / "smoke_weighting_cifar" / figure).read_bytes()[:4] == b"\x89PNG"
    h = store.history("cifar10__uncertainty__seed0")
    assert {"weight_class10", "weight_animal", "grad_cos_class10_vs_animal", "step_ms"} <= set(h.columns)


SHRUNK_IDS = ("fixed", "pcgrad")


@pytest.fixture(scope="module")
def freq3_run(tmp_path_factory):
    """weighting_freq3 on 160 generated images, a tiny dual-stream backbone, 2 epochs, 2 seeds, two of
    its entries (the reference and a gradient aggregator), and the weighting section alone of the
    report (the others have their own tests)."""
    tmp = tmp_path_factory.mktemp("wfreq3")
    raw = yaml.safe_load((SUITES / "weighting_freq3.yaml").read_text())
    raw["strategies"] = [s for s in raw["strategies"] if s["id"] in SHRUNK_IDS]
    raw["datasets"]["freq3"].update(val_size=32, options={"n": 160, "n_test": 64})
    raw.update(seeds=[0, 1], backbone={"name": "dual_stream", "widths": [4, 8], "fusion": 8, "freq_widths": [4, 4]})
    raw["train"].update(epochs=2, batch_size=32, grad_cosine_every=2)
    path = tmp / "weighting_freq3.yaml"
    path.write_text(yaml.safe_dump(raw))
    return tmp, _run_with_weighting_section(path, tmp)


def test_weighting_freq3_compares_every_method_with_seed_000s_weights(freq3_run):
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    tmp, code = freq3_run
    assert code == 0
    store = Store(tmp / "results", "weighting_freq3")
    section = _section((tmp / "reports" / "weighting_freq3.md").read_text())
    overview = {r["entry"]: r for r in _table(section, "entry")}
    assert list(overview) == ["fixed *ref*", "pcgrad"]
    assert overview["fixed *ref*"]["loss weights"] == "a 1, b 2.5, c 10"
    assert overview["fixed *ref*"]["last weights"] == "a 1, b 2.5, c 10"
    assert overview["pcgrad"]["loss weights"] == "a 1, b 1, c 1"

    # step time: the median over epochs after the first, per seed, then the ratio of the seed means
    def step(cell_id: str) -> float:
        return np.mean([store.history(f"freq3__{cell_id}__seed{s}").step_ms.iloc[1:].median() for s in (0, 1)])
    assert overview["pcgrad"]["x ref"] == f"{step('pcgrad') / step('fixed'):.2f}"

    rows = _table(section.split("Against the reference")[1], "entry")
    assert [(r["entry"], r["vs"], r["task"]) for r in rows] == [
        ("pcgrad", "fixed", t) for t in "abc"]
    pvalues = []  # scipy's paired t-test; equal differences on both seeds: p 1 when they are 0 (stats.ttest_p)
    for r in rows:
        cell = f"freq3__{r['entry']}"
        metric = "mae" if r["task"] == "c" else "accuracy"
        a = [store.record(f"{cell}__seed{s}").test[r["task"]][metric] for s in (0, 1)]
        b = [store.record(f"freq3__fixed__seed{s}").test[r["task"]][metric] for s in (0, 1)]
        scale, digits = (1, 4) if metric == "mae" else (100, 2)
        assert r["difference"] == f"{(np.mean(a) - np.mean(b)) * scale:+.{digits}f}"
        d = np.subtract(a, b)
        pvalues.append(stats.ttest_rel(a, b).pvalue if np.ptp(d) else 1.0 if not d.any() else 0.0)
    for r, p in zip(rows, multipletests(pvalues, method="holm")[1]):
        assert float(r["Holm p"]) == pytest.approx(p, rel=1e-2, abs=1e-3)
        if p >= 0.05:
            assert r["verdict"] == "tie"
    assert re.search(r"!\[weights freq3\]\(weighting_freq3/weights_freq3\.png\)", section)


def test_the_section_leaves_out_cells_trained_in_stages(tiny_suite, write_suite, tmp_path):
    raw = tiny_suite(strategies=["hard_share", {"name": "hard_share", "id": "pcgrad", "weighting": "pcgrad"},
                                 {"name": "sequential_finetune", "stage_epochs": 1}])
    assert _run_with_weighting_section(write_suite(raw), tmp_path) == 0
    section = _section((tmp_path / "reports" / "tiny.md").read_text())
    assert [r["entry"] for r in _table(section, "entry")] == ["hard_share *ref*", "pcgrad"]
    assert "grad_cosines_synthetic.png" not in section  # no grad_cosine_every: no cosine figure
