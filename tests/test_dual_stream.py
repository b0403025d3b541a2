"""The seed-000 two-stream backbones: FFT features, train-sample standardisation, shapes, the
frequency stream's parameters, gradients, bf16 autocast, cross-stitch stitch points, and one
hard_share cell run end to end through the runner on the synthetic dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.cli import main as cli_main
from bench.models import BACKBONES, BackboneContext, count_params
from bench.models.dual_stream_net import fft_log_magnitude
from bench.strategies import CrossStitch, HardShare
from bench.kinds import make_spec

# Seed 000's tasks and heads: 10 classes (128), 32 classes (256 + dropout 0.5), [0, 1] value (64 + sigmoid).
SPECS = {
    "a": make_spec("multiclass", name="a", classes=10),
    "b": make_spec("multiclass", name="b", classes=32),
    "c": make_spec("regression", name="c", dim=1),
}
HEADS = {"a": {"hidden": [128]}, "b": {"hidden": [256], "dropout": 0.5}, "c": {"hidden": [64], "sigmoid": True}}


def smooth_images(n: int, channels: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random-walk images: a falling spectrum like natural images, so per-bin statistics matter."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=gen).cumsum(-1).cumsum(-2)
    return (x - x.mean()) / x.std()


def build(name: str, channels: int = 1, sample: torch.Tensor | None = None, **params):
    ctx = BackboneContext(in_channels=channels, image_size=32,
                          sample=smooth_images(64, channels) if sample is None else sample)
    return BACKBONES.get(name)(ctx, **params)


def targets(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"a": torch.randint(0, 10, (n,), generator=gen), "b": torch.randint(0, 32, (n,), generator=gen),
            "c": torch.rand(n, 1, generator=gen)}


def test_fft_log_magnitude_matches_numpy_float64():
    # Odd, non-square H x W: a transposed FFT or ifftshift instead of fftshift would not match.
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 10))
    ref = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))))
    got = fft_log_magnitude(torch.from_numpy(x).float())
    assert got.dtype == torch.float32
    # float32 FFT of 70 points: magnitude errors ~1e-6 * sum|x|, and log1p' <= 1.
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-4)


def test_spectrum_is_standardised_with_train_sample_statistics():
    sample = smooth_images(256, 1)
    freq = build("dual_stream", sample=sample, clip=3.0).stages[0].frequency
    z = (fft_log_magnitude(sample) - freq.mean) / freq.std  # before clipping
    assert freq.mean.shape == (1, 32, 32)
    assert z.mean(0).abs().max() < 1e-4  # per frequency bin
    assert (z.std(0) - 1).abs().max() < 1e-3
    # The statistics are fixed buffers, not re-estimated per batch: a 4x brighter batch sits
    # log(4) ~ 1.4 above the train spectrum, and its outliers are clipped at +3.
    bright = freq.spectrum(4 * sample)
    assert bright.mean() > 0.5
    assert bright.max() == 3.0 and bright.min() >= -3.0
    assert {"mean", "std"} <= set(freq.state_dict())  # saved and restored with the weights


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name,features", [("dual_stream", 192), ("spatial_only", 128)])
def test_output_shapes(name, features, channels):
    backbone = build(name, channels).eval()
    x = torch.randn(2, channels, 32, 32)
    assert backbone.stages[0](x).shape == (2, features, 1, 1)  # both streams concatenated, as a 1x1 map
    assert backbone.trunk(backbone(x)).shape == (2, 256) and backbone.vector_dim == 256


@pytest.mark.parametrize("channels", [1, 3])
def test_spatial_only_lacks_exactly_the_frequency_stream(channels):
    dual, spatial = build("dual_stream", channels), build("spatial_only", channels)
    conv_bn = lambda cin, cout: cin * cout * 9 + 2 * cout  # 3x3 conv without bias, BN weight + bias
    frequency_stream = conv_bn(channels, 32) + conv_bn(32, 64)
    wider_fusion = 64 * 256  # the trunk's Linear reads 64 more features
    assert count_params(dual) - count_params(spatial) == frequency_stream + wider_fusion
    assert any(n.startswith("stages.0.frequency.") for n, _ in dual.named_parameters())
    assert not any("frequency" in n for n, _ in list(spatial.named_parameters()) + list(spatial.named_buffers()))


def test_gradient_reaches_both_streams_through_hard_share():
    torch.manual_seed(0)
    model = HardShare(heads=HEADS).build(SPECS, lambda: build("dual_stream")).train()
    x, y = torch.randn(4, 1, 32, 32), targets(4, torch.Generator().manual_seed(0))
    out = model(x)
    sum(SPECS[t].loss(out[t], y[t]) for t in SPECS).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"
    assert any(".frequency." in n for n, _ in model.named_parameters())


def test_runs_under_bf16_autocast():
    model = HardShare(heads=HEADS).build(SPECS, lambda: build("dual_stream", 3)).train()
    x, y = torch.randn(2, 3, 32, 32), targets(2, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fft_log_magnitude(x.bfloat16()).dtype == torch.float32  # torch.fft has no bf16 kernels
        out = model(x)
        total = sum(SPECS[t].loss(out[t], y[t]) for t in SPECS)
    total.backward()
    assert all(torch.isfinite(o).all() for o in out.values()) and torch.isfinite(total)


def test_cross_stitch_has_one_stitch_point():
    make = lambda: build("dual_stream")
    with pytest.raises(ValueError, match=r"stitch_after: stage 2 out of range 1\.\.1"):
        CrossStitch(stitch_after=[1, 2]).build(SPECS, make)  # alexnet_cifar's stages; too deep here
    assert list(CrossStitch().build(SPECS, make).stitches) == ["1"]  # the default fits two stages
    model = CrossStitch(stitch_after=[1], heads=HEADS).build(SPECS, make).eval()
    out = model(torch.randn(2, 1, 32, 32))
    assert {t: o.shape for t, o in out.items()} == {"a": (2, 10), "b": (2, 32), "c": (2, 1)}


SUITE = """
name: dual
backbone: {name: dual_stream, widths: [16, 16, 32, 32], fusion: 64}
datasets:
  synthetic:
    val_size: 32
    options: {n_train: 160, n_test: 64, image_size: 16, channels: 1}
strategies:
  - name: hard_share
    heads: {quadrant: {hidden: [32]}, brightness: {hidden: [16], sigmoid: true}}
seeds: [0]
train: {epochs: 1, batch_size: 32, optimizer: adam, lr: 0.001, weight_decay: 0.0, warmup_epochs: 0}
"""


def test_hard_share_dual_stream_trains_through_the_runner(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    suite = tmp_path / "dual.yaml"
    suite.write_text(SUITE)
    results = tmp_path / "results"
    code = cli_main(["run", str(suite), "--results", str(results), "--reports", str(tmp_path / "reports"),
                     "--device", "cpu", "--no-report"])
    (record,) = (results / "dual").glob("*/record.json")
    cell, metrics = record.parent, json.loads(record.read_text())
    assert code == 0, metrics.get("reason")
    assert metrics["status"] == "done"
    assert set(metrics["test"]) == {"quadrant", "top", "brightness"}
    brightness = np.load(cell / "predictions.npz")["pred__brightness"]
    assert brightness.min() >= 0 and brightness.max() <= 1  # the suite's `heads:` reached the model
