"""`dual_stream` and `spatial_only`: the spatial + Fourier two-stream network of seed 000.

Two streams read the same normalised image (shapes for a 32x32 input, default widths):
  spatial:   ResNet-V2 (pre-activation) of depthwise-separable convs: stem(64) -> blocks 64, 64,
             128 (stride 2, 1x1 projection shortcut), 128 -> BN ReLU -> global avg pool -> (B, 128)
  frequency: log |FFT2| per channel, standardised per frequency bin with train-sample statistics,
             clipped -> [Conv BN ReLU MaxPool Dropout] x 2 (32, 64) -> global avg pool -> (B, 64)
One stage, then the trunk:
  1. both streams, concatenated              -> (B, 192, 1, 1)   (B, 128, 1, 1 for spatial_only)
  trunk: flatten Linear(256) BatchNorm1d ReLU -> (B, 256)
The streams pool globally before they fuse, so the "feature map" is 1x1: dense heads have nothing
to read here. Cross-stitch can only stitch after stage 1 (its default here); heads read the 256
trunk features and take seed 000's shapes from HardShare's `heads:` parameter.
`spatial_only` is the same network without the frequency stream, for ablation. The layers are in
bench/models/dual_stream_net.py, imported when a network is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from bench.models import BACKBONES, BackboneContext
from bench.registry import Range

if TYPE_CHECKING:
    from bench.models.nets import Backbone


@BACKBONES.register("dual_stream")
def dual_stream(ctx: BackboneContext, *, widths: Annotated[tuple[int, ...], Range(">= 1")] = (64, 64, 128, 128),
                fusion: Annotated[int, Range(">= 1")] = 256,
                freq_widths: Annotated[tuple[int, ...], Range(">= 1")] = (32, 64),
                freq_dropout: Annotated[float, Range("[0, 1)")] = 0.2,
                clip: Annotated[float, Range("> 0")] = 3.0) -> Backbone:
    """`clip`: spectrum features are clipped to +-clip (in train-sample standard deviations)."""
    from bench.models.dual_stream_net import FrequencyStream, two_stream_net

    if not freq_widths:
        raise ValueError("backbone.freq_widths: expected a non-empty list of channel counts")
    frequency = FrequencyStream(ctx.in_channels, ctx.image_size, ctx.sample, widths=tuple(freq_widths),
                                dropout=freq_dropout, clip=clip)
    return two_stream_net(ctx, frequency, widths=widths, fusion=fusion)


@BACKBONES.register("spatial_only")
def spatial_only(ctx: BackboneContext, *, widths: Annotated[tuple[int, ...], Range(">= 1")] = (64, 64, 128, 128),
                 fusion: Annotated[int, Range(">= 1")] = 256) -> Backbone:
    """dual_stream without the Fourier stream: the ablation that shows what that stream adds."""
    from bench.models.dual_stream_net import two_stream_net

    return two_stream_net(ctx, None, widths=widths, fusion=fusion)
