"""The preflight of `bench run` on a CPU: estimates from timed steps (arithmetic by hand, probes faked
where the number matters), the warning with a CPU-sized command, and the progress bars' time left."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from bench import preflight as P
from bench.arguments import parser
from bench.config import load_suite
from bench.grid import expand
from bench.executors.progress import Screen, TimeLeftColumn, clock, duration
from bench.runner import Event, Outcome
from bench.store import Store

CPU = torch.device("cpu")


def _cells(tiny_suite, write_suite, **overrides):
    return expand(load_suite(write_suite(tiny_suite(**overrides))))


@pytest.fixture(autouse=True)
def _time_every_run(monkeypatch):
    monkeypatch.setattr(P, "SHORT_RUN", 0)  # the tiny test suites would be too short to time


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=300), out


def test_cell_seconds_is_epochs_of_steps_and_validation_then_the_test_set(tiny_suite, write_suite, tmp_path):
    # tiny data: 32 train, 16 validation and 32 test images; batch 16 -> 2 steps an epoch
    raw = tiny_suite(strategies=["hard_share", {"name": "sequential_lwf", "stage_epochs": 3}])
    raw["train"]["epochs"] = 4
    joint, sequential = expand(load_suite(write_suite(raw)))
    plan = P.preflight([joint], Store(tmp_path, "tiny"), CPU, _console()[0])
    data = plan.datasets.get(joint.dataset)
    t = P.Timing(step=0.5, item=0.01)
    assert P.cell_seconds(joint, data, t) == pytest.approx(4 * (2 * 0.5 + 16 * 0.01) + 32 * 0.01)
    # sequential: three tasks, one stage of 3 epochs each
    assert P.cell_seconds(sequential, data, t) == pytest.approx(3 * 3 * (2 * 0.5 + 16 * 0.01) + 32 * 0.01)


def test_a_long_cpu_run_is_estimated_from_the_first_model_and_warned_about(tiny_suite, write_suite, tmp_path,
                                                                          monkeypatch):
    cells = _cells(tiny_suite, write_suite, strategies=["stl", "hard_share"])  # 3 STL cells, then the joint model
    probed = []
    monkeypatch.setattr(P, "probe", lambda cell, data, device: probed.append(cell.name) or P.Timing(1.0, 0.01))
    monkeypatch.setattr(P, "LONG_RUN", 5.0)
    console, out = _console()
    plan = P.preflight(cells, Store(tmp_path, "tiny"), CPU, console)
    assert probed == [cells[0].name]  # one model timed: the warning comes fast
    # every cell: 1 epoch of 2 steps (32 train images, batch 16) + 16 validation images, then 32 test images
    assert plan.estimates == {c.name: pytest.approx(1 * (2 * 1.0 + 16 * 0.01) + 32 * 0.01) for c in cells}
    text = " ".join(out.getvalue().split())
    assert ("estimate on this CPU: about 10 s for 4 cells to train (from the first model's timed steps, "
            "2 distinct models") in text
    assert "This run is long on this CPU" in text and P.CPU_COMMAND in text


def test_a_short_cpu_run_times_one_model_and_does_not_warn(tiny_suite, write_suite, tmp_path, monkeypatch):
    cells = _cells(tiny_suite, write_suite, strategies=["stl", "hard_share"])
    probed = []
    monkeypatch.setattr(P, "probe", lambda cell, data, device: probed.append(cell.name) or P.Timing(0.01, 0.0))
    console, out = _console()
    plan = P.preflight(cells, Store(tmp_path, "tiny"), CPU, console)
    assert probed == [cells[0].name] and set(plan.estimates) == {c.name for c in cells}
    assert "long on this CPU" not in out.getvalue()


def test_finished_cells_are_not_planned(smoke_run, monkeypatch):
    cells = expand(load_suite(smoke_run["suite"]))
    monkeypatch.setattr(P, "probe", lambda *a: pytest.fail("nothing is left to train"))
    plan = P.preflight(cells, Store(smoke_run["results"], "smoke"), CPU, _console()[0])
    assert plan.to_train == [] and plan.estimates == {}
    forced = P.preflight(cells[:1], Store(smoke_run["results"], "smoke"), torch.device("meta"), _console()[0],
                         force=True)  # not a CPU: no estimate
    assert forced.to_train == cells[:1] and forced.estimates == {}


def test_probe_times_real_steps(tiny_suite, write_suite, tmp_path):
    [cell] = _cells(tiny_suite, write_suite)
    plan = P.preflight([cell], Store(tmp_path, "tiny"), CPU, _console()[0])
    t = P.probe(cell, plan.datasets.get(cell.dataset), CPU)
    assert t.step > 0 and t.item > 0 and plan.estimates[cell.name] > 0


def test_describe_device_says_which_and_why():
    text = P.describe_device(CPU)
    assert text.startswith(f"cpu ({torch.get_num_threads()} threads; ")


def test_suite_time_left_scales_the_estimates_by_what_the_finished_cells_took(tmp_path, monkeypatch):
    clock_now = [0.0]
    monkeypatch.setattr("bench.executors.progress.time.perf_counter", lambda: clock_now[0])
    screen = Screen(Console(file=io.StringIO()), Store(tmp_path, "tiny"), 3, estimates={"a": 10.0, "b": 20.0, "c": 30.0})
    with screen:
        suite = screen._progress.tasks[screen._suite]
        assert suite.fields["left"] == 60.0
        screen(Event("a", "start", epochs=2))
        cell = screen._progress.tasks[screen._bars["a"]]
        assert TimeLeftColumn().render(cell).plain == "~0:00:10 left"  # the estimate before an epoch is done
        clock_now[0] = 20.0  # twice as long as estimated
        screen(Event("a", "end", outcome=Outcome("a", "done")))
        assert suite.fields["left"] == pytest.approx((20 + 30) * 2)
        assert TimeLeftColumn().render(suite).plain == "~0:01:40 left"
        screen(Event("b", "end", outcome=Outcome("b", "cached")))  # cached: not started, no new scaling
        assert suite.fields["left"] == pytest.approx(30 * 2)


def test_a_failure_reason_is_printed_in_full_once(tmp_path):
    out = io.StringIO()
    reason = "FileNotFoundError: CIFAR-10 not found. Looked for: ..."
    screen = Screen(Console(file=out, width=300), Store(tmp_path, "tiny"), 3, shown={"earlier": "dataset x above"})
    with screen:
        for cell in ("c1", "c2"):
            screen(Event(cell, "end", outcome=Outcome(cell, "failed", reason)))
        screen(Event("c3", "end", outcome=Outcome("c3", "failed", "earlier")))
    text = out.getvalue()
    assert text.count("CIFAR-10 not found") == 1 and "c2: failed (the same reason as c1)" in text
    assert "c3: failed (the same reason as dataset x above)" in text


def test_clock_and_duration():
    assert [clock(s) for s in (0, 59.6, 3600 + 61)] == ["0:00:00", "0:01:00", "1:01:01"]
    assert [duration(s) for s in (40, 720, 3 * 3600 + 300, 187 * 3600)] == ["40 s", "12 min", "3 h 05 min",
                                                                             "7.8 days"]


def test_a_model_that_cannot_be_timed_leaves_the_run_to_report_it(tiny_suite, write_suite, tmp_path, monkeypatch):
    cells = _cells(tiny_suite, write_suite, strategies=["cross_stitch", "hard_share"])
    probed = []

    def probe(cell, data, device):
        probed.append(cell.strategy.id)
        if cell.strategy.id == "cross_stitch":
            raise RuntimeError("boom")
        return P.Timing(0.5, 0.0)

    monkeypatch.setattr(P, "probe", probe)
    plan = P.preflight(cells, Store(tmp_path, "tiny"), CPU, _console()[0])
    assert probed == ["cross_stitch", "hard_share"]
    assert plan.estimates == {c.name: 1.0 for c in cells}  # the model that trains lends its timing


def test_a_short_run_is_not_timed(tiny_suite, write_suite, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "SHORT_RUN", 10_000)
    monkeypatch.setattr(P, "probe", lambda *a: pytest.fail("a short run is not timed"))
    cells = _cells(tiny_suite, write_suite, strategies=["stl", "hard_share"])
    plan = P.preflight(cells, Store(tmp_path, "tiny"), CPU, _console()[0])
    data = plan.datasets.get(cells[0].dataset)
    assert sum(P.images(c, data) for c in cells) == 4 * (1 * (32 + 16) + 32)  # 320 images: short
    assert plan.estimates == {}


def test_a_short_cpu_run_uses_one_thread_unless_told(tiny_suite, write_suite, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "SHORT_RUN", 10_000)
    cells = _cells(tiny_suite, write_suite)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        asked = P.preflight(cells, Store(tmp_path, "tiny"), CPU, _console()[0], threads=2)
        assert asked.threads is None and torch.get_num_threads() == 2  # --threads 2: left as asked
        console, out = _console()
        plan = P.preflight(cells, Store(tmp_path, "tiny"), CPU, console)
        assert plan.threads == 1 and torch.get_num_threads() == 1
        assert "a short run: one thread per operation" in out.getvalue()
    finally:
        torch.set_num_threads(before)


def test_the_gradient_cosine_probe_is_refused_under_autocast_before_training(tiny_suite, write_suite, tmp_path,
                                                                            capsys):
    """Seen on an H200 (torch 2.11, bf16): the probe's batched Jacobian fails in every cell. On CUDA the
    default precision is bf16, so such entries must ask for fp32; on a CPU everything runs in fp32."""
    raw = tiny_suite(strategies=["hard_share", {"name": "hard_share", "id": "exact", "train": {"precision": "fp32"}},
                                 {"name": "hard_share", "id": "half", "train": {"precision": "fp16"}}])
    raw["train"]["grad_cosine_every"] = 2
    cells = expand(load_suite(write_suite(raw)))
    P.check_numerics(cells, "cpu")  # fp32 whatever is asked: allowed
    with pytest.raises(ValueError) as err:
        P.check_numerics(cells, "cuda")
    assert str(err.value) == ("train.grad_cosine_every needs precision fp32 on cuda (its gradient-cosine probe fails "
                              "under autocast); entries half, hard_share: set train.precision: fp32 for them, or "
                              "train.grad_cosine_every: 0")
    raw["train"]["grad_cosine_every"] = 0
    P.check_numerics(expand(load_suite(write_suite(raw))), "cuda")  # no probe: bf16 is fine
    # Where a pool's or a cluster's cells train decides it (the driver itself runs on the CPU).
    from bench import cli

    suite = load_suite(write_suite(raw))

    def where(*flags: str) -> str:
        return cli._worker_device_type(parser().parse_args(["run", "s.yaml", *flags]), suite)

    assert where("--executor", "slurm", "--gpus-per-task", "1") == "cuda"
    assert where("--executor", "slurm") == "cpu"
    assert where("--executor", "local", "--gpus", "0") == "cuda"
    assert where("--executor", "local", "--device", "cpu") == "cpu"
