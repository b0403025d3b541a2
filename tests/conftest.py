"""Shared test setup: a private decoded-data cache for every test, and a tiny-suite runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main as cli_main

SUITES = Path(__file__).resolve().parent.parent / "suites"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.mktemp("bench_cache")))


@pytest.fixture
def run_suite(tmp_path):
    """Run suites/<name>.yaml on CPU through the CLI; return (metrics records, report text)."""

    def run(name: str) -> tuple[list[dict], str]:
        results, reports = tmp_path / "results", tmp_path / "reports"
        code = cli_main(["run", str(SUITES / f"{name}.yaml"), "--device", "cpu",
                         "--results", str(results), "--reports", str(reports)])
        records = [json.loads(p.read_text()) for p in sorted((results / name).glob("*/metrics.json"))]
        assert code == 0, [r.get("reason") for r in records]
        return records, (reports / f"{name}.md").read_text()

    return run
