"""`--executor slurm`: each wave of cells is one SLURM job array, submitted through submitit.

    python -m bench run cifar_mtl --executor slurm --partition gpu --gpus-per-task 1 --time-min 30

One array task per cell runs `run_named_cell` (bench/executors/job.py) with this interpreter, from
the submitting directory, with its environment (sbatch exports it), and writes the cell into the
store: the results folder must be on a file system the nodes share. Job parameters come from the
suite's `slurm:` block with command-line flags winning (bench/config.py: SlurmConfig). Arrays
hold at most MAX_ARRAY tasks (SLURM's default MaxArraySize is 1001). submitit's files (pickles,
`<job>_0_log.out`/`.err`) go to `results/<suite>/.slurm/<job id>/`.

Before anything is submitted, `check_cluster` asks the controller (`scontrol ping`, `sinfo`) and
refuses a request that would fail or pend forever: no controller, an unknown partition, more CPUs,
memory or GPUs than any node of the partition has. A job that fails or is cancelled without
recording its cell (scancel, time limit, out of memory, a node lost) is recorded as failed with
SLURM's state and the job's log path. Without accounting, `sacct` fails and submitit would never see
such a job end (docs/slurm.md), so the job states are read from `squeue` instead (SqueueWatcher).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Iterator

import submitit
import torch
from submitit.helpers import as_completed
from submitit.slurm.slurm import SlurmInfoWatcher

from bench.settings import SlurmConfig
from bench.executors.job import CellJob, ExecutorError, RunContext, run_named_cell
from bench.grid import Cell
from bench.locks import LEASE_S
from bench.runner import Event, OnEvent, Outcome, record_lost

MAX_ARRAY = 1000  # tasks per job array (indices 0-999 stay under the default MaxArraySize of 1001)
TOOLS = ("sbatch", "srun", "squeue", "sinfo", "scontrol")
STATE_POLL_S = 5  # how often squeue is asked for job states (submitit polls sacct every 10 min by default)


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    cpus: int  # the most CPUs of a node in it
    mem_mb: int  # the most memory of a node in it (megabytes)
    gpus: int  # the most GPUs (gres gpu) of a node in it


def job_parameters(cfg: SlurmConfig, *, name: str, tasks: int) -> dict[str, Any]:
    """Parameters of submitit's SlurmExecutor (sbatch options) for one array of `tasks` cells."""
    params: dict[str, Any] = {
        "job_name": name, "time": cfg.time_min, "cpus_per_task": cfg.cpus_per_task,
        "mem": f"{max(1, round(cfg.mem_gb * 1024))}M", "array_parallelism": min(cfg.array_parallelism, tasks),
        # USR2 comes this long before the time limit (submitit's default 90 s would come before the
        # start of a 1-minute job); a cell is not checkpointable, so it then fails with "timed-out".
        "signal_delay_s": min(90, 6 * cfg.time_min),
    }
    if cfg.partition:
        params["partition"] = cfg.partition
    if cfg.gpus_per_task:
        params["gpus_per_node"] = cfg.gpus_per_task  # one task per job: per node = per task
    if cfg.additional:
        params["additional_parameters"] = dict(cfg.additional)
    return params


def check_cluster(cfg: SlurmConfig) -> Partition:
    """The partition the jobs would run in; ExecutorError when no controller answers or no node of
    the partition can ever run the request."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise ExecutorError(f"--executor slurm: no SLURM client here ({', '.join(missing)} not on PATH); run "
                            "on a cluster's login node, or `make slurm-up` for a one-node test cluster")
    ping = _run(["scontrol", "ping"])
    if ping.returncode != 0:
        why = (ping.stderr.strip().splitlines() or ping.stdout.strip().splitlines() or ["no answer"])[-1]
        raise ExecutorError(f"--executor slurm: no SLURM controller reachable (scontrol ping: {why}); "
                            "start one (`make slurm-up` for a one-node test cluster)")
    partitions = parse_sinfo(_run(["sinfo", "--Node", "--noheader", "--format=%P|%c|%m|%G"]).stdout)
    return pick_partition(cfg, partitions)


def pick_partition(cfg: SlurmConfig, partitions: list[Partition]) -> Partition:
    """Check `cfg` against the cluster's partitions (from `parse_sinfo`); ExecutorError naming the limit."""
    if not partitions:
        raise ExecutorError("--executor slurm: sinfo lists no partition with nodes")
    names = [p.name for p in partitions]
    if cfg.partition is None:
        part = next((p for p in partitions if p.default), partitions[0])
    elif cfg.partition in names:
        part = partitions[names.index(cfg.partition)]
    else:
        raise ExecutorError(f"--partition: {cfg.partition!r} is not a partition of this cluster; "
                            f"valid: {', '.join(names)}")
    for ask, have, what in ((cfg.cpus_per_task, part.cpus, "--cpus-per-task"),
                            (round(cfg.mem_gb * 1024), part.mem_mb, "--mem-gb"),
                            (cfg.gpus_per_task, part.gpus, "--gpus-per-task")):
        if ask > have:
            shown = f"{ask / 1024:g} GB, its nodes have at most {have / 1024:g} GB" if what == "--mem-gb" \
                else f"{ask}, its nodes have at most {have}"
            raise ExecutorError(f"{what}: partition {part.name} cannot run it ({shown}); a job asking for "
                                "it would pend forever")
    return part


def parse_sinfo(text: str) -> list[Partition]:
    """`sinfo --Node --noheader --format=%P|%c|%m|%G` -> partitions with their largest node."""
    found: dict[str, Partition] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        name, cpus, mem, gres = parts
        node = Partition(name=name.rstrip("*"), default=name.endswith("*"), cpus=_number(cpus),
                         mem_mb=_number(mem), gpus=_gpus(gres))
        old = found.get(node.name, node)
        found[node.name] = Partition(name=node.name, default=node.default, cpus=max(old.cpus, node.cpus),
                                     mem_mb=max(old.mem_mb, node.mem_mb), gpus=max(old.gpus, node.gpus))
    return list(found.values())


def _number(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def _gpus(gres: str) -> int:
    """'gpu:4', 'gpu:a100:4(S:0-1)', 'gpu:2,shard:8', '(null)' -> 4, 4, 2, 0."""
    return sum(int(m) for m in re.findall(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres.strip()))


def _run(command: list[str]) -> subprocess.CompletedProcess:
    try:  # `sinfo` against a dead controller retries for ~30 s; `scontrol ping` answers at once
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 1, "", f"{command[0]} timed out after 60 s")


class Slurm:
    """One SLURM job array per wave, with `cfg`'s job parameters; ExecutorError from the constructor
    when no controller answers or no node of the partition can run the request."""

    name = "slurm"

    def __init__(self, cfg: SlurmConfig):
        self.cfg, self.partition = cfg, check_cluster(cfg)
        self._watcher = None

    def __enter__(self) -> "Slurm":
        # submitit polls job states through one class-wide watcher (arrays build plain SlurmJobs);
        # without accounting it reads squeue for this run, and gets its own back afterwards.
        self._watcher = submitit.SlurmJob.watcher
        if not _accounting():
            submitit.SlurmJob.watcher = SqueueWatcher(delay_s=STATE_POLL_S)
        return self

    def __exit__(self, *exc) -> None:
        submitit.SlurmJob.watcher = self._watcher

    def run(self, cells: list[Cell], ctx: RunContext, on_event: OnEvent) -> Iterator[Outcome]:
        folder = ctx.store.dir / ".slurm"
        executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=0)
        jobs: dict = {}
        for start in range(0, len(cells), MAX_ARRAY):
            chunk = cells[start:start + MAX_ARRAY]
            executor.update_parameters(**job_parameters(self.cfg, name=f"bench-{cells[0].suite}", tasks=len(chunk)))
            try:
                submitted = executor.map_array(run_job, [ctx.job(c.name) for c in chunk])
            except Exception as err:  # sbatch refused it (submitit raises FailedJobError with sbatch's words)
                raise ExecutorError(f"--executor slurm: sbatch refused the job array: {err}") from None
            jobs.update(zip(submitted, chunk))
            array = submitted[0].job_id.split("_")[0]
            on_event(Event("", "note", text=f"submitted {len(chunk)} cells as SLURM job {array} on partition "
                                            f"{self.partition.name} (logs: {folder / array})"))
        for job in as_completed(list(jobs), poll_frequency=1.0):
            yield self._outcome(job, jobs[job], ctx)

    @staticmethod
    def _outcome(job, cell: Cell, ctx: RunContext) -> Outcome:
        """The job's outcome; a job that ended without recording its cell is recorded as failed."""
        try:
            return job.result()
        except Exception as err:  # FailedJobError (it raised), UncompletedJobError (killed: no result file)
            reason = lost_reason(job.job_id, job.state, _slurm_reason(job), str(err), str(job.paths.stderr))
        # a job on another node holds its lock until the lease expires unseen (bench/locks.py)
        record_lost(cell, ctx.store, reason, wait_s=2 * LEASE_S)
        return Outcome(cell.name, "failed", reason)


def lost_reason(job_id: str, state: str, slurm_reason: str, error: str, log: str) -> str:
    """One line for a job that did not record its cell: SLURM's state and reason, what went wrong, the log."""
    why = f" ({slurm_reason})" if slurm_reason and slurm_reason != "None" else ""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b", line)]
    if raised:  # the job's function raised: submitit's message holds the traceback
        detail = raised[-1]
    elif "has not produced any output" in error:  # submitit's UncompletedJobError: no result file
        detail = "the job ended without a result (cancelled, timed out, out of memory or its node lost)"
    else:
        detail = lines[0] if lines else "no result"
    return f"SLURM job {job_id} {state}{why}: {detail}; log: {log}"


def _slurm_reason(job) -> str:
    return job.get_info(mode="cache").get("Reason", "")


def run_job(job: CellJob) -> Outcome:
    """The function an array task runs: the cell, with as many torch threads as the task has CPUs
    (unless the run gave --threads)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and not job.threads:
        torch.set_num_threads(int(cpus))
    return run_named_cell(job)


def _accounting() -> bool:
    """Does `sacct` work here? (Not without an accounting storage, as on scripts/slurm.sh's cluster.)"""
    try:
        return subprocess.run(["sacct", "--noheader", "--jobs", "1"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class SqueueWatcher(SlurmInfoWatcher):
    """submitit's job-state poller reading `squeue --states=all` instead of `sacct`.

    Without accounting `sacct` exits 1, submitit's state stays UNKNOWN, and a job killed before
    writing its result (scancel, time limit) would be waited on forever. squeue shows finished jobs
    for MinJobAge seconds (300 by default; 3600 in scripts/slurm.sh's cluster). Reports State,
    Reason and NodeList.
    """

    def _make_command(self) -> list[str] | None:
        ids = sorted({job_id.split("_")[0] for job_id in self._registered - self._finished})
        if not ids:
            return None
        return ["squeue", "--noheader", "--states=all", "--format=%i|%T|%r|%N", "--jobs", ",".join(ids)]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        return super().read_info("JobID|State|Reason|NodeList\n" + text)  # the header sacct would print
