"""Shared fixtures: tiny suites written to tmp dirs, an isolated data cache, and one session-wide
run of the smoke suite (shrunk to seconds on CPU) that several tests inspect."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bench import cli
from bench.store import Store

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "suites"
LEGACY = REPO / "tests" / "data" / "h100_store"  # a schema-1 store and its report (see its README)

# A synthetic dataset small enough that a cell trains in well under a second on CPU:
# 8x8 images (three 2x2 pools leave 1x1), 32 train + 16 validation images, 32 test images.
TINY_DATA = {"tasks": ["quadrant", "top", "brightness"], "val_size": 16,
             "options": {"n_train": 48, "n_test": 32, "image_size": 8}}
TINY_TRAIN = {"epochs": 1, "batch_size": 16, "optimizer": "adam", "lr": 0.001, "weight_decay": 0.0,
              "warmup_epochs": 0, "crop_pad": 1}
TINY_BACKBONE = {"name": "alexnet_cifar", "width": 16}


def pytest_configure(config):
    # Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    # barriers made a (4, 3, 16, 16) convolution ~100x slower (measured); one thread keeps tests quick.
    torch.set_num_threads(1)


def shrink(raw: dict) -> dict:
    """The same suite (datasets, tasks, strategies, seeds) on tiny synthetic data and a narrow trunk."""
    raw = dict(raw, backbone=dict(TINY_BACKBONE), train={**raw.get("train", {}), **TINY_TRAIN, "epochs": 2})
    raw["datasets"] = {name: {**body, **{k: v for k, v in TINY_DATA.items() if k != "tasks"}}
                       for name, body in raw["datasets"].items()}
    return raw


@pytest.fixture
def tiny_suite():
    """tiny_suite(**overrides) -> a raw suite dict (as YAML gives) on the tiny synthetic data:
    hard_share, seed 0, one epoch; top-level keys in `overrides` replace the defaults."""

    def make(**overrides) -> dict:
        raw = {"name": "tiny", "backbone": TINY_BACKBONE, "datasets": {"synthetic": TINY_DATA},
               "strategies": ["hard_share"], "seeds": [0], "train": TINY_TRAIN}
        return copy.deepcopy({**raw, **overrides})  # tests edit nested parts freely

    return make


@pytest.fixture
def write_suite(tmp_path):
    """write_suite(raw, name="suite") -> path of a YAML file holding `raw` under tmp_path."""

    def write(raw: dict, name: str = "suite") -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Decoded-dataset caches go to the test's tmp dir, never into a shared data folder.
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """suites/smoke.yaml shrunk to tiny data, run once through `bench run` on CPU.

    Returns a dict: suite (path), results, reports (roots), code (the CLI's exit status).
    """
    root = tmp_path_factory.mktemp("smoke")
    suite = root / "smoke.yaml"
    suite.write_text(yaml.safe_dump(shrink(yaml.safe_load((SUITES / "smoke.yaml").read_text()))))
    results, reports = root / "results", root / "reports"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        code = cli.main(["run", str(suite), "--results", str(results), "--reports", str(reports),
                         "--device", "cpu"])
    return {"suite": suite, "results": results, "reports": reports, "code": code}


@pytest.fixture
def run_suite(tmp_path):
    """Run suites/<name>.yaml on CPU through the CLI; return (stored records as JSON, report text)."""

    def run(name: str) -> tuple[list[dict], str]:
        results, reports = tmp_path / "results", tmp_path / "reports"
        code = cli.main(["run", str(SUITES / f"{name}.yaml"), "--device", "cpu",
                         "--results", str(results), "--reports", str(reports)])
        records = [json.loads(p.read_text()) for p in sorted((results / name).glob("*/record.json"))]
        assert code == 0, [r.get("reason") for r in records]
        return records, (reports / f"{name}.md").read_text()

    return run


def put_result(store, record, arrays) -> None:
    """Store a hand-made result the way the runner does: an attempt, then the store's finish."""
    attempt = store.attempt(record.cell)
    attempt.write_predictions(arrays)
    store.finish(attempt, record)


def section(text: str, heading: str) -> str:
    """The part of a Markdown report under `## heading`, up to the next `## ` heading."""
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every GitHub-style table in `text`, each as its rows of {header: cell} (cells stripped)."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].replace("|", "").strip()) <= {"-", ":"} \
                and lines[i + 1].startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            header = [h.strip() for h in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, (c.strip() for c in row.strip("|").split("|")))))
            tables.append(rows)
    return tables


def skip_rendering(monkeypatch) -> None:
    """Report sections build their figures but skip rendering them (seconds per report), in tests
    that check no figure."""
    from bench.report import figures

    def save(fig, path):
        figures.plt.close(fig)
        path.write_bytes(b"")
        return path

    monkeypatch.setattr(figures, "_save", save)
def mini_image_tar(source: Path, dest: Path, per_class: dict[str, int]) -> None:
    """Copy the first images of each (split, class) of an image-folder tar, member names kept."""
    taken = Counter()
    with tarfile.open(source) as src, tarfile.open(dest, "w:gz") as out:
        for member in src:
            parts = Path(member.name).parts[-3:]
            if member.isfile() and len(parts) == 3 and taken[parts[:2]] < per_class.get(parts[0], 0):
                taken[parts[:2]] += 1
                out.addfile(member, src.extractfile(member))


def cifar_source() -> Path:
    """BENCH_DATA_DIR's CIFAR-10 JPEG tar, or a skip saying what is missing."""
    source = Path(os.environ.get("BENCH_DATA_DIR", "")) / "cifar10-jpeg.tar.gz"
    if not os.environ.get("BENCH_DATA_DIR") or not source.is_file():
        pytest.skip("needs BENCH_DATA_DIR with cifar10-jpeg.tar.gz (CI sets it to /work/shared/data)")
    return source


@pytest.fixture(scope="session")
def cifar_small_root(tmp_path_factory) -> Path:
    """A data root holding `cifar10-jpeg.tar.gz` with 30 train and 10 test real JPEGs per class, copied
    from BENCH_DATA_DIR's tar once per session (decoding all 60,000 images would take ~15 s)."""
    source = cifar_source()
    root = tmp_path_factory.mktemp("cifar_small")
    mini_image_tar(source, root / source.name, {"train": 30, "test": 10})
    return root


# history.csv columns that measure wall-clock time: the only ones allowed to differ between equal runs.
TIMING_COLUMNS = ["train_seconds", "step_ms", "images_per_second"]


def assert_same_results(expected: Store, actual: Store, cells: list[str]) -> None:
    """The stored outcome of each cell is identical, as CPU runs are deterministic wherever they run
    (inline, a worker pool, SLURM): status, metrics, key, predictions and history without timings."""
    for name in cells:
        a, b = expected.record(name), actual.record(name)
        assert (b.status, b.test, b.val, b.best_epoch, b.params, b.key) == \
               (a.status, a.test, a.val, a.best_epoch, a.params, a.key), name
        pa, pb = expected.predictions(name), actual.predictions(name)
        assert pa.keys() == pb.keys(), name
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k], err_msg=f"{name}: {k}")
        if a.members:
            continue  # a combined cell trains nothing: no history
        ha, hb = expected.history(name).drop(columns=TIMING_COLUMNS), actual.history(name).drop(columns=TIMING_COLUMNS)
        assert ha.equals(hb), name


def _slurm_unreachable_reason() -> str | None:
    if shutil.which("scontrol") is None:
        return "no SLURM client (scontrol not found); `make slurm-up` installs and starts a cluster"
    # `scontrol ping` answers at once when no controller listens; `sinfo` would retry for ~30 s.
    for command in (["scontrol", "ping"], ["sinfo", "--noheader", "--format=%t"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` timed out; `make slurm-up` starts a cluster"
        if done.returncode != 0:
            errors, output = done.stderr.strip().splitlines(), done.stdout.strip().splitlines()
            why = errors[-1] if errors else (output or ["no output"])[0]  # the fatal line, or "is DOWN"
            return f"no SLURM controller reachable ({command[0]}: {why}); `make slurm-up` starts one"
    if not any(state.rstrip("*") in {"idle", "mix", "alloc"} for state in done.stdout.split()):
        return f"no SLURM node can run jobs (sinfo states: {done.stdout.split()})"
    return None


@pytest.fixture(scope="session")
def slurm_partition() -> str:
    """The default partition of a reachable SLURM cluster; skips the test without one (fails instead
    when BENCH_REQUIRE_SLURM is set, as in .ci/run, where a skip would hide a broken cluster)."""
    reason = _slurm_unreachable_reason()
    if reason and os.environ.get("BENCH_REQUIRE_SLURM"):
        pytest.fail(f"BENCH_REQUIRE_SLURM is set but {reason}")
    if reason:
        pytest.skip(reason)
    out = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True,
                         check=True).stdout.split()
    return next(p.rstrip("*") for p in out if p.endswith("*"))
