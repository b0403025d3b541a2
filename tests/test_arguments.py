"""The command line's own arguments (bench/arguments.py): output folders that cannot be written and
devices that do not exist exit 2 with one line naming the flag, before any data loads or cell
trains; a store that cannot be written still gets its report (issue 12, the new-user report)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from bench import cli
from bench.arguments import check_device, check_folder, select
from bench.config import load_suite
from bench.grid import expand
from bench.store import Store
from conftest import section, skip_rendering


def _run(suite, tmp_path, *extra, results=None, reports=None) -> int:
    return cli.main(["run", str(suite), "--device", "cpu", "--results", str(results or tmp_path / "results"),
                     "--reports", str(reports or tmp_path / "reports"), *extra])


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


@pytest.mark.parametrize("flag", ["--results", "--reports"])
@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_a_folder_flag_naming_a_file_exits_2_before_any_training(tiny_suite, write_suite, tmp_path, capsys, flag,
                                                                  where):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    folder = afile if where == "a file" else afile / "sub"
    paths = {"results": folder} if flag == "--results" else {"reports": folder}
    assert _run(write_suite(tiny_suite()), tmp_path, **paths) == 2
    err = _one_line(capsys)
    expected = "is a file" if where == "a file" else f"cannot be created: {afile} is a file"
    assert f"cannot run: {flag}: {folder} {expected}; give a folder (created if missing)" in err
    assert afile.read_text() == "mine\n"
    assert not (tmp_path / "results").exists()  # nothing trained, nothing stored


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder; the not-a-folder cases above "
                                               "exercise the same check")
def test_a_read_only_results_folder_exits_2_naming_it(tiny_suite, write_suite, tmp_path, capsys):
    results = tmp_path / "ro"
    results.mkdir()
    results.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert _run(write_suite(tiny_suite()), tmp_path, results=results) == 2
    finally:
        results.chmod(stat.S_IRWXU)
    assert f"cannot run: --results: cannot write in {results}: Permission denied" in _one_line(capsys)


def test_check_folder_leaves_nothing_behind(tmp_path):
    check_folder(tmp_path / "new" / "deeper", "--results")
    check_folder(tmp_path, "--results")
    assert list(tmp_path.iterdir()) == []  # neither the missing folders nor the probe were left


def test_report_on_a_store_it_cannot_write_in_writes_the_report_with_a_note(tiny_suite, write_suite, tmp_path,
                                                                            capsys, monkeypatch):
    """A results.csv that cannot be written (here a folder is in its way, which fails for root too, as a
    read-only store does for others) is a note, not a crash that loses the report."""
    skip_rendering(monkeypatch)
    suite = write_suite(tiny_suite())
    assert _run(suite, tmp_path, "--no-report") == 0
    blocked = tmp_path / "results" / "tiny" / "results.csv"
    blocked.mkdir()
    capsys.readouterr()
    assert cli.main(["report", str(suite), "--results", str(tmp_path / "results"),
                     "--reports", str(tmp_path / "reports")]) == 0
    err = _one_line(capsys)
    assert f"{blocked}: not written (Is a directory); the report is written all the same" in err
    text = (tmp_path / "reports" / "tiny.md").read_text()
    assert f"> Note: {blocked}: not written (Is a directory); the report is complete without it." in text
    assert "hard_share" in section(text, "Results")


@pytest.mark.parametrize("device, fragment", [
    ("gpu", "--device: unknown device 'gpu'; valid: auto, cpu, cuda, cuda:N (N: a GPU index), mps"),
    ("cpu:1", "--device: unknown device 'cpu:1'"),
    ("cuda", "--device: cuda: no such GPU; this machine shows no GPU (torch.cuda.device_count() is 0); give cpu"),
    ("cuda:9", "--device: cuda:9: no such GPU; this machine shows no GPU"),
])
@pytest.mark.parametrize("command", ["run", "perf"])
def test_a_device_that_is_not_here_exits_2(tiny_suite, write_suite, tmp_path, capsys, monkeypatch, device, fragment,
                                           command):
    """Defect 5: torch's RuntimeError traceback (exit 1) for a GPU this machine does not have."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # the same on a GPU machine
    suite = write_suite(tiny_suite())
    assert cli.main([command, str(suite), "--device", device, "--results", str(tmp_path / "r")]) == 2
    assert fragment in _one_line(capsys)
    assert not (tmp_path / "r").exists()


def test_check_device_counts_the_gpus_it_sees(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:1"):
        check_device(ok)
    with pytest.raises(ValueError, match=r"cuda:2: no such GPU; this machine shows 2 GPU\(s\), indices 0-1; "
                                         r"give cuda:0 to cuda:1"):
        check_device("cuda:2")
    check_device("cuda:7", here=False)  # a SLURM job's node: only the spelling is checked here
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        check_device("gpu", here=False)


def _ensemble_suite(tiny_suite, write_suite):
    raw = tiny_suite(strategies=["stl", "hard_share", {"name": "ensemble", "of": "hard_share", "seeds": [0, 1]}])
    raw["datasets"]["synthetic"]["tasks"] = ["quadrant", "top"]
    return write_suite(raw)


def test_selecting_an_ensemble_brings_in_its_members(tiny_suite, write_suite):
    """Defect 7: `--strategies ensemble` alone left the members out, and the ensemble failed for want of
    them (the README: missing members run first)."""
    suite = load_suite(_ensemble_suite(tiny_suite, write_suite))
    names = [c.name for c in select(expand(suite), "ensemble", suite)]
    assert names == ["synthetic__hard_share__seed0", "synthetic__hard_share__seed1",  # seed 1: the ensemble's own
                     "synthetic__ensemble(of=hard_share,seeds=0+1)"]
    assert [c.name for c in select(expand(suite), " stl , hard_share", suite)] == [
        "synthetic__stl(task=quadrant)__seed0", "synthetic__stl(task=top)__seed0", "synthetic__hard_share__seed0",
        "synthetic__hard_share__seed1"]  # the grid trains the ensemble's extra seed under its entry


@pytest.mark.parametrize("ids, message", [
    ("", "--strategies: '' names no strategy id; leave the flag out to run every cell"),
    (" , ", "--strategies: ' , ' names no strategy id"),
    ("stl,,hard_share", "--strategies: an empty id in 'stl,,hard_share'; give comma-separated ids, valid: stl, "
                        "hard_share, ensemble"),
    ("stl, pcgrad", "--strategies: unknown ['pcgrad']; valid: stl, hard_share, ensemble"),
])
def test_an_empty_or_unknown_strategy_selection_exits_2(tiny_suite, write_suite, tmp_path, capsys, ids, message):
    """Defect 8: an empty --strategies silently ran every cell."""
    path = _ensemble_suite(tiny_suite, write_suite)
    assert cli.main(["run", str(path), "--strategies", ids, "--results", str(tmp_path / "r")]) == 2
    assert f"invalid suite: {message}" in _one_line(capsys)
    assert not (tmp_path / "r").exists()


def test_run_with_only_the_ensemble_selected_trains_its_members_first(tiny_suite, write_suite, tmp_path, capsys):
    path = _ensemble_suite(tiny_suite, write_suite)
    assert _run(path, tmp_path, "--strategies", "ensemble", "--no-report") == 0
    assert "done 3, cached 0, failed 0" in _one_line(capsys)
    store = Store(tmp_path / "results", "tiny")
    assert store.record("synthetic__ensemble(of=hard_share,seeds=0+1)").status == "done"
    assert store.record("synthetic__stl(task=quadrant)__seed0") is None  # not selected


@pytest.mark.parametrize("options, where", [
    ({"executor": "local", "workers": 2, "gpus": None, "device": "cpu"}, "cpu in 2 worker processes (--executor local)"),
    ({"executor": "local", "workers": None, "gpus": "0,0", "device": "auto"},
     "cuda in 1 worker process, GPUs 0,0 (--executor local)"),
    ({"executor": "slurm", "workers": None, "gpus": None, "device": "auto", **{k: None for k in cli.SLURM_FLAGS},
      "gpus_per_task": 1}, "cuda on SLURM nodes (--executor slurm)"),
])
def test_the_first_line_names_where_a_pools_cells_train(tiny_suite, write_suite, options, where):
    """The README's "bench run says which device it uses": a pool said "19 cells on auto via --executor local"."""
    import argparse

    suite = load_suite(write_suite(tiny_suite()))
    args = argparse.Namespace(**options)
    assert cli._pool_device(args, cli._worker_device_type(args, suite)) == where
