"""The config-built `convnet` backbone: stage layout and output shapes for its options, gradients
through hard sharing and cross-stitch, and errors that name the offending suite key."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.config import SuiteError, load_suite
from bench.models import BACKBONES, BackboneContext, CrossStitchNet, MultiHeadNet
from bench.kinds import TaskSpec, make_spec

convnet = BACKBONES.get("convnet")
SPECS = {"digit": make_spec("multiclass", name="digit", classes=10),
         "parity": make_spec("binary", name="parity", classes=2)}


def count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("params, channels, size, stages, dim, pools", [
    ({}, 1, 28, 4, 256, 3),
    ({"widths": [8, 16], "batch_norm": False, "pool": ["max", "avg"], "global_pool": "avg", "hidden": 0}, 3, 32, 3, 16, 2),
    ({"widths": [8], "blocks": 3, "convs": 2, "pool": ["none", "max", "max"], "dropout": 0.5, "hidden": 32}, 1, 28, 4, 32, 2),
    ({"widths": [4, 8], "pool": "none", "hidden": 0}, 1, 12, 3, 8 * 12 * 12, 0),
])
def test_forward_shapes(params, channels, size, stages, dim, pools):
    net = convnet(BackboneContext(in_channels=channels, image_size=size), **params)
    assert len(net.units()) == stages and net.vector_dim == dim
    fmap = net(torch.randn(3, channels, size, size))
    assert fmap.shape == (3, net.channels, size // net.stride, size // net.stride)
    assert net.stride == 2 ** pools
    assert net.trunk(fmap).shape == (3, dim)
    assert count(net, nn.MaxPool2d) + count(net, nn.AvgPool2d) == pools
    convs = params.get("convs", 1) * (stages - 1)
    assert count(net, nn.Conv2d) == convs
    assert count(net, nn.BatchNorm2d) == (convs if params.get("batch_norm", True) else 0)
    assert count(net, nn.Dropout) == (1 if params.get("dropout") else 0)


@pytest.mark.parametrize("build", [
    lambda make: MultiHeadNet(make(), SPECS),
    lambda make: CrossStitchNet(make, SPECS, stitch_after=[1, 2]),
])
def test_every_parameter_gets_a_gradient(build):
    ctx = BackboneContext(in_channels=1, image_size=28)
    model = build(lambda: convnet(ctx, widths=[4, 8], hidden=16))
    out = model(torch.randn(4, 1, 28, 28))
    assert out["digit"].shape == (4, 10) and out["parity"].shape == (4, 1)
    sum(o.sum() for o in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("params, message", [
    ({"pool": "median"}, "backbone.pool: 'median' unknown; valid: max, avg, none"),
    ({"global_pool": "sum"}, "backbone.global_pool: 'sum' unknown"),
    ({"widths": [8, 16], "blocks": 3}, "backbone.widths: 2 values for 3 blocks"),
    ({"widths": [8, 16], "pool": ["max"] * 3}, "backbone.pool: 3 values for 2 blocks"),
    ({"widths": [4] * 6}, "shrink a 28px image to nothing"),
])
def test_bad_configs_name_the_key(params, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        convnet(BackboneContext(in_channels=1, image_size=28), **params)


def test_suite_checks_parameter_types(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("datasets: {synthetic: {}}\nstrategies: [hard_share]\nseeds: [0]\n"
                    "backbone: {name: convnet, widths: 32}\n")
    with pytest.raises(SuiteError, match="backbone.widths"):
        load_suite(path)
