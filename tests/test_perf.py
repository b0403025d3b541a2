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
