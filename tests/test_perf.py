"""The throughput benchmark (`bench perf`) runs each distinct cell once and reports its speed."""

from __future__ import annotations

from bench import cli
from bench.config import load_suite
from bench.grid import expand
from bench.perf import perf


def test_perf_measures_one_cell_per_strategy_and_task_subset(tiny_suite, write_suite, capsys):
    raw = tiny_suite(strategies=["stl", "hard_share", {"name": "ensemble", "of": "hard_share", "seeds": [0]}],
                     seeds=[0, 1])
    cells = expand(load_suite(write_suite(raw)))
    rows = perf(cells, epochs=2, device_name="cpu")
    # seed 0 only, the ensemble (trains nothing) left out: 3 STL tasks + hard_share
    assert [r["cell"] for r in rows] == [c.name for c in cells if c.seed == 0 and not c.members]
    assert all(r["status"] == "done" and float(r["img/s (steady)"].replace(",", "")) > 0 for r in rows)
    assert "img/s (steady)" in capsys.readouterr().out


def test_perf_cli_exit_status(tiny_suite, write_suite):
    assert cli.main(["perf", str(write_suite(tiny_suite())), "--epochs", "2", "--device", "cpu"]) == 0


def test_perf_puts_each_weighting_next_to_equal(tiny_suite, write_suite, capsys):
    raw = tiny_suite(strategies=["stl", "hard_share"])
    raw["datasets"]["synthetic"]["tasks"] = ["quadrant", "top"]
    rows = perf(expand(load_suite(write_suite(raw))), epochs=2, device_name="cpu",
                weightings=["pcgrad", "uncertainty", "krum"])
    assert [(r["cell"], r["method"]) for r in rows] == [
        ("synthetic__stl(task=quadrant)__seed0", "equal"), ("synthetic__stl(task=top)__seed0", "equal"),
        ("synthetic__hard_share__seed0", "equal"),  # STL trains one task: no weighting applies
        ("synthetic__hard_share(weighting=pcgrad)__seed0", "pcgrad"),
        ("synthetic__hard_share(weighting=uncertainty)__seed0", "uncertainty")]  # krum needs 3 tasks: left out
    assert "krum left out" in capsys.readouterr().out
    ratio = {r["method"]: r["x equal"] for r in rows[2:]}
    speed = {r["method"]: float(r["img/s (steady)"].replace(",", "")) for r in rows[2:]}
    assert ratio["equal"] == "1.00"  # the speeds shown are rounded to whole images/s, the ratio is not
    assert abs(float(ratio["pcgrad"]) - speed["pcgrad"] / speed["equal"]) < 0.006


def test_perf_refuses_an_unknown_weighting(tiny_suite, write_suite, capsys):
    assert cli.main(["perf", str(write_suite(tiny_suite())), "--device", "cpu", "--weightings", "pcgard"]) == 2
    assert "--weightings: unknown ['pcgard']; valid: all, aligned_mtl" in " ".join(capsys.readouterr().err.split())
