"""Precision and determinism: the settings reach torch's flags per cell, a CPU computes in fp32 and says
so, fp16 goes through a gradient scaler that skips non-finite steps, and every record states its numerics."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from bench import cli
from bench.precision import Numerics, apply, backward_step, numerics

CUDA = torch.device("cuda")  # a device object only: nothing here runs on a GPU


@pytest.fixture
def restore_torch_flags():
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
     torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved[:4]
    torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])
    if saved[6] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


@pytest.mark.parametrize("asked, device, ran, tf32, benchmark", [
    ("auto", CUDA, "bf16", True, True), ("bf16", CUDA, "bf16", True, True), ("fp16", CUDA, "fp16", True, True),
    ("fp32", CUDA, "fp32", False, True),
    ("auto", torch.device("cpu"), "fp32", False, False), ("fp16", torch.device("cpu"), "fp32", False, False),
])
def test_what_a_cell_computes_with(asked, device, ran, tf32, benchmark):
    n = numerics(asked, False, device)
    assert (n.requested, n.precision, n.tf32, n.cudnn_benchmark) == (asked, ran, tf32, benchmark)
    assert n.graph_safe == (ran == "bf16")
    assert not numerics(asked, True, device).cudnn_benchmark  # deterministic: no autotuning
    assert not numerics(asked, True, device).graph_safe


def test_fp32_and_deterministic_reach_torch_and_the_next_cell_resets_them(restore_torch_flags):
    apply(numerics("fp32", True, CUDA))
    assert torch.backends.cuda.matmul.fp32_precision == "ieee" and torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    apply(numerics("auto", False, CUDA))  # the next cell sets every flag again: nothing leaks over
    assert torch.backends.cuda.matmul.fp32_precision == "tf32" and torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert not torch.are_deterministic_algorithms_enabled()


def test_autocast_dtype_follows_the_precision():
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        n = Numerics(requested=precision, precision=precision, deterministic=False, tf32=False,
                     cudnn_benchmark=False, device_type="cpu")  # honoured as given (numerics() would pick fp32)
        with n.autocast():
            assert layer(x).dtype == dtype


def test_fp16_scaler_skips_a_step_with_non_finite_gradients_and_backs_off():
    n = Numerics(requested="fp16", precision="fp16", deterministic=False, tf32=False, cudnn_benchmark=False,
                 device_type="cpu")
    layer = nn.Linear(2, 1)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    scaler = n.scaler()
    before = [p.detach().clone() for p in layer.parameters()]
    backward_step(layer(torch.ones(1, 2)).sum() * float("inf"), opt, scaler)
    assert all(torch.equal(p, b) for p, b in zip(layer.parameters(), before))  # skipped
    assert scaler.get_scale() == 2.0**16 * 0.5  # GradScaler's init_scale 2^16, backoff_factor 0.5
    opt.zero_grad()
    backward_step(layer(torch.ones(1, 2)).sum(), opt, scaler)
    # d(sum(w x + b))/dw = x = 1, /db = 1: one SGD step subtracts lr * 1 from every parameter (unscaled)
    assert all(torch.allclose(p, b - 0.1) for p, b in zip(layer.parameters(), before))
    assert numerics("fp32", False, CUDA).scaler() is None


def test_every_record_states_its_numerics(tiny_suite, write_suite, tmp_path, restore_torch_flags):
    raw = tiny_suite()
    raw["train"].update(precision="fp16", deterministic=True)
    roots = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert cli.main(["run", str(write_suite(raw)), "--device", "cpu", *roots]) == 0
    record = json.loads(next((tmp_path / "results" / "tiny").glob("*/record.json")).read_text())
    assert record["numerics"] == {"requested": "fp16", "precision": "fp32", "deterministic": True, "tf32": False,
                                  "cudnn_benchmark": False, "device_type": "cpu", "cuda_graph": False}
    assert torch.are_deterministic_algorithms_enabled()  # the cell's setting reached torch
    report = (tmp_path / "reports" / "tiny.md").read_text()
    section = report.split("## Precision and determinism")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    assert rows[0] == ["device", "precision", "deterministic", "TF32", "cuDNN autotuning", "CUDA graph", "cells"]
    assert rows[2:] == [["cpu", "fp32 (fp16 asked)", "yes", "no", "no", "no", "1"]]
