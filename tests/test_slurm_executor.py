"""`--executor slurm`: the job parameters and cluster checks without a cluster, and against a real
controller (`make slurm-up`) a shrunk smoke suite whose store matches an inline run's, with a
cancelled job recorded as failed with SLURM's state and its log, and a resume that submits nothing."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
import submitit
import yaml
from submitit.slurm.slurm import _make_sbatch_string

from bench import cli
from bench.config import SlurmConfig
from bench.executors import ExecutorError
from bench.executors import slurm as S
from bench.locks import read_holder
from bench.store import Store
from conftest import assert_same_results

SINFO = """gpu|32|257000|gpu:a100:4(S:0-1)
gpu|16|128000|gpu:2,shard:8
cpu*|64|512000|(null)
"""


def test_job_parameters_become_these_sbatch_options(tmp_path):
    cfg = SlurmConfig(partition="gpu", time_min=30, gpus_per_task=1, cpus_per_task=4, mem_gb=16, array_parallelism=3,
                      additional={"account": "proj", "qos": "high"})
    script = _make_sbatch_string(command="python -m submitit.core._submit x", folder=tmp_path / "%j", map_count=10,
                                 **S.job_parameters(cfg, name="bench-smoke", tasks=10))
    options = {line.split("=")[0][len("#SBATCH "):]: line.split("=", 1)[1]
               for line in script.splitlines() if line.startswith("#SBATCH --") and "=" in line}
    assert {k: options[k] for k in ("--partition", "--time", "--cpus-per-task", "--mem", "--gpus-per-node", "--array",
                                    "--job-name", "--account", "--qos", "--signal")} == {
        "--partition": "gpu", "--time": "30", "--cpus-per-task": "4", "--mem": "16384M", "--gpus-per-node": "1",
        "--array": "0-9%3", "--job-name": "bench-smoke", "--account": "proj", "--qos": "high",
        "--signal": "USR2@90"}


def test_defaults_leave_partition_and_gpus_to_the_cluster_and_signal_before_a_short_limit():
    params = S.job_parameters(SlurmConfig(time_min=1, mem_gb=0.5, array_parallelism=256), name="b", tasks=3)
    assert params == {"job_name": "b", "time": 1, "cpus_per_task": 2, "mem": "512M", "array_parallelism": 3,
                      "signal_delay_s": 6}  # 6 s before the 60 s limit, not submitit's 90 s


def test_sinfo_partitions_take_their_largest_node():
    gpu, cpu = S.parse_sinfo(SINFO)
    assert gpu == S.Partition(name="gpu", default=False, cpus=32, mem_mb=257000, gpus=4)
    assert cpu == S.Partition(name="cpu", default=True, cpus=64, mem_mb=512000, gpus=0)
    assert S.pick_partition(SlurmConfig(), [gpu, cpu]) == cpu  # the default partition
    assert S.pick_partition(SlurmConfig(partition="gpu", gpus_per_task=4, cpus_per_task=32), [gpu, cpu]) == gpu


@pytest.mark.parametrize("cfg, message", [
    (SlurmConfig(partition="big"), "--partition: 'big' is not a partition of this cluster; valid: gpu, cpu"),
    (SlurmConfig(cpus_per_task=65), "--cpus-per-task: partition cpu cannot run it (65, its nodes have at most 64)"),
    (SlurmConfig(partition="gpu", mem_gb=300), "--mem-gb: partition gpu cannot run it (300 GB, its nodes have at most"),
    (SlurmConfig(gpus_per_task=1), "--gpus-per-task: partition cpu cannot run it (1, its nodes have at most 0)"),
], ids=["partition", "cpus", "mem", "gpus"])
def test_requests_no_node_can_meet_are_refused(cfg, message):
    with pytest.raises(ExecutorError) as raised:
        S.pick_partition(cfg, S.parse_sinfo(SINFO))
    assert str(raised.value).startswith(message)


def test_no_reachable_controller_exits_2_before_training(tiny_suite, write_suite, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(S.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    down = subprocess.CompletedProcess(
        ["scontrol", "ping"], 1, "", "slurm_load_ctl_conf error: Unable to contact slurm controller (connect failure)")
    monkeypatch.setattr(S, "_run", lambda command: down)
    results = tmp_path / "results"
    assert cli.main(["run", str(write_suite(tiny_suite())), "--results", str(results), "--executor", "slurm"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--executor slurm: no SLURM controller reachable (scontrol ping: slurm_load_ctl_conf error: Unable to " \
           "contact slurm controller (connect failure))" in err
    assert not results.exists()


def test_no_slurm_client_exits_2(tiny_suite, write_suite, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(S.shutil, "which", lambda tool: None)
    assert cli.main(["run", str(write_suite(tiny_suite())), "--results", str(tmp_path), "--executor", "slurm"]) == 2
    assert "no SLURM client here (sbatch, srun, squeue, sinfo, scontrol not on PATH)" in \
           " ".join(capsys.readouterr().err.split())


def test_a_lost_job_is_described_by_its_state_error_and_log():
    failed = ("Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent call "
              "last):\n  File \"x.py\", line 1\nbench.config.SuiteError: /s.yaml: no such suite file\n"
              "----------------------\nYou can check full logs with 'job.stderr(0)'")
    assert S.lost_reason("7_1", "FAILED", "NonZeroExitCode", failed, "/r/.slurm/7_1/7_1_0_log.err") == \
        "SLURM job 7_1 FAILED (NonZeroExitCode): bench.config.SuiteError: /s.yaml: no such suite file; " \
        "log: /r/.slurm/7_1/7_1_0_log.err"
    killed = "Job 7_2 (task: 0) with path /r/x.pkl\nhas not produced any output (state: CANCELLED)"
    assert S.lost_reason("7_2", "CANCELLED", "None", killed, "/r/e.err") == (
        "SLURM job 7_2 CANCELLED: the job ended without a result (cancelled, timed out, out of memory or its node "
        "lost); log: /r/e.err")


def test_squeue_lines_read_as_sacct_would_give_them():
    watcher = S.SqueueWatcher(delay_s=5)
    info = watcher.read_info("12_0|COMPLETED|None|vm\n12_1|CANCELLED|None|vm\n13|FAILED|NonZeroExitCode|vm\n")
    assert info["12_1"]["State"] == "CANCELLED" and info["13"]["Reason"] == "NonZeroExitCode"
    assert info["12_0"]["NodeList"] == "vm"


def _cancel_when_training(store: Store, cells: list[str], cancelled: list, deadline_s: float = 300) -> None:
    """scancel the job of each cell once it has logged an epoch (its id from the holder's environment);
    appends (cell, job) to `cancelled`."""
    end, left = time.monotonic() + deadline_s, list(cells)
    while left and time.monotonic() < end:
        for cell in list(left):
            holder = read_holder(store.locks_dir / f"{cell}.lock")
            logs = [p / "log.txt" for p in store.leftovers(cell) if (p / "log.txt").exists()]
            if holder is None or not any('"epoch"' in log.read_text() for log in logs):
                continue
            env = dict(v.split("=", 1) for v in Path(f"/proc/{holder.pid}/environ").read_text().split("\0") if "=" in v)
            job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
            subprocess.run(["scancel", job], check=True)
            cancelled.append((cell, job))
            left.remove(cell)
        time.sleep(0.1)


@pytest.mark.slurm
def test_a_suite_through_slurm_stores_what_an_inline_run_stores(slurm_partition, smoke_run, tmp_path, capsys,
                                                                monkeypatch):
    """smoke (shrunk) plus a slow entry: hard_share and its ensemble (a second job array) match the
    inline session run; the slow cells' jobs are cancelled mid-cell and recorded as failed; a rerun
    of the finished strategies submits nothing."""
    raw = yaml.safe_load(smoke_run["suite"].read_text())
    # submitit lets SIGTERM pass, so scancel ends a job only at SIGKILL, KillWait (5 s here) later: the slow
    # cells must outlast that by far (400 epochs: about 40 s on 2 cores, were they not cancelled).
    raw["strategies"].append({"name": "hard_share", "id": "slow", "train": {"epochs": 400}})
    suite = tmp_path / "smoke.yaml"  # the same name and cells: the same keys as the inline run's
    suite.write_text(yaml.safe_dump(raw))
    results, slow = tmp_path / "results", ["synthetic__slow__seed0", "synthetic__slow__seed1"]
    store, cancelled = Store(results, "smoke"), []
    # submitit waits up to 15 s for a killed job's result file (for slow shared file systems); this
    # cluster's folder is local, and the two cancelled jobs would cost 30 s of waiting.
    monkeypatch.setattr(submitit.SlurmJob, "_results_timeout_s", 2)
    canceller = threading.Thread(target=_cancel_when_training, args=(store, slow, cancelled))
    canceller.start()
    try:
        code = cli.main(["run", str(suite), "--results", str(results), "--no-report", "--device", "cpu",
                         "--strategies", "hard_share,ensemble,slow", "--executor", "slurm", "--partition",
                         slurm_partition, "--cpus-per-task", "1", "--mem-gb", "1", "--time-min", "10",
                         "--threads", "1"])  # as the inline session run (conftest): CPU numerics depend on it
    finally:
        canceller.join()
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and len(cancelled) == 2, err
    assert err.count("submitted") == 2  # two waves: the trained cells, then the ensemble
    same = ["synthetic__hard_share__seed0", "synthetic__hard_share__seed1",
            "synthetic__ensemble(of=hard_share,seeds=0+1)"]
    assert_same_results(Store(smoke_run["results"], "smoke"), store, same)
    assert sorted(cell for cell, _ in cancelled) == slow
    for cell, job in cancelled:  # in the order they logged an epoch, which need not be seed order
        record = store.record(cell)
        assert record.status == "failed" and record.reason.startswith(f"SLURM job {job} CANCELLED: ")
        log = Path(record.reason.rsplit("; log: ", 1)[1])
        assert log.is_file() and log.name == f"{job}_0_log.err" and "CANCELLED" in log.read_text()
        assert '"epoch": 1' in (store.cell_dir(cell) / "log.txt").read_text()  # the cancelled attempt's log
    assert not list(store.attempts_dir.iterdir()) and not list(store.locks_dir.iterdir())

    assert cli.main(["run", str(suite), "--results", str(results), "--no-report", "--strategies", "hard_share,ensemble",
                     "--executor", "slurm", "--cpus-per-task", "1", "--mem-gb", "1"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "submitted" not in err and "done 0, cached 3, failed 0" in err
