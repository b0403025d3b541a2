"""submitit against a real SLURM controller: a job array, a failing job and a cancelled job.

Needs a reachable controller (`make slurm-up` starts a one-node one on this machine). Without one,
every test here skips and says why, or fails when BENCH_REQUIRE_SLURM is set (as in .ci/run).
Run: `make slurm-up`, `.venv/bin/python -m pytest -q tests/test_slurm_cluster.py`, `make slurm-down`.
The cluster has no accounting, so `sacct` fails and submitit's own job state stays UNKNOWN;
`SqueueWatcher` (bench/executors/slurm.py) reads the state from `squeue` instead."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import cloudpickle
import pytest
import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from bench.executors.slurm import SqueueWatcher

pytestmark = pytest.mark.slurm

DEADLINE_S = 60  # for any one job to reach a state; jobs start within ~1 s on an idle node


@pytest.fixture(scope="module")
def partition(slurm_partition) -> str:
    # This module is imported by pytest under a name the job's interpreter cannot import, so
    # its functions travel by value (the harness's own functions would travel by reference).
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return slurm_partition


@pytest.fixture
def executor(tmp_path, partition):
    ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    ex.update_parameters(slurm_partition=partition, timeout_min=5, cpus_per_task=1, mem_gb=1,
                         slurm_array_parallelism=2, name="mtl-bench-test")
    return ex


def where_am_i(x: int) -> dict:
    import bench  # the harness the job would run: from this checkout, via the job's working dir

    return {"square": x * x, "task": os.environ["SLURM_ARRAY_TASK_ID"], "python": sys.executable,
            "cwd": os.getcwd(), "bench": bench.__file__, "cache": os.environ.get("BENCH_CACHE_DIR")}


def fail() -> None:
    raise ValueError("deliberate failure in a SLURM job")


def sleep_long() -> None:
    time.sleep(600)


def squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "--noheader", "--states=all", "--format=%T", "--jobs", job_id],
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


def wait_for_state(job_id: str, wanted: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while (state := squeue_state(job_id)) != wanted:
        assert time.monotonic() < deadline, f"job {job_id} still {state!r} after {DEADLINE_S}s, not {wanted}"
        time.sleep(0.5)


def test_job_array_runs_each_call_with_this_interpreter_and_checkout(executor):
    import bench

    jobs = executor.map_array(where_am_i, [1, 2, 3])
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1  # one array, not three jobs
    results = [job.result() for job in jobs]
    assert [r["square"] for r in results] == [1, 4, 9]
    assert [r["task"] for r in results] == ["0", "1", "2"]
    assert {r["python"] for r in results} == {sys.executable}
    assert {r["cwd"] for r in results} == {os.getcwd()}
    assert {r["bench"] for r in results} == {bench.__file__}
    assert {r["cache"] for r in results} == {os.environ["BENCH_CACHE_DIR"]}  # sbatch exports the env


def test_failing_job_raises_with_its_traceback_and_log_paths(executor):
    job = executor.submit(fail)
    with pytest.raises(FailedJobError) as raised:
        job.result()
    message = str(raised.value)
    assert "ValueError: deliberate failure in a SLURM job" in message
    assert str(job.paths.stderr) in message and str(job.paths.stdout) in message
    assert "deliberate failure" in job.paths.stderr.read_text()
    wait_for_state(job.job_id, "FAILED")


def test_cancelled_job_is_seen_as_cancelled_through_squeue(executor, monkeypatch):
    job = executor.submit(sleep_long)
    try:
        wait_for_state(job.job_id, "RUNNING")
    finally:
        job.cancel()
    # submitit's job ignores SIGTERM, so the job is COMPLETING until KillWait ends with SIGKILL.
    wait_for_state(job.job_id, "CANCELLED")

    accounting = subprocess.run(["sacct", "--jobs", job.job_id], capture_output=True).returncode == 0
    # Through sacct, submitit sees the state only on a cluster with accounting (not scripts/slurm.sh's),
    # where sacct says "CANCELLED by <uid>".
    seen = job.watcher.get_state(job.job_id, mode="force")
    assert seen.startswith("CANCELLED") if accounting else seen == "UNKNOWN"
    monkeypatch.setattr(submitit.SlurmJob, "watcher", SqueueWatcher(delay_s=600))
    monkeypatch.setattr(job, "_results_timeout_s", 0)  # no result file is coming: don't wait 15 s for one
    assert job.state == "CANCELLED"
    assert job.done()
    with pytest.raises(UncompletedJobError, match="has not produced any output \\(state: CANCELLED\\)"):
        job.result()
