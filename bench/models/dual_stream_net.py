"""The layers of the `dual_stream` and `spatial_only` backbones (registered in bench/models/dual_stream.py,
whose docstring describes the network): separable convs, pre-activation blocks, the Fourier stream."""

from __future__ import annotations

import torch
from torch import nn

from bench.models import BackboneContext
from bench.models.nets import Backbone


def fft_log_magnitude(x: torch.Tensor) -> torch.Tensor:
    """log(1 + |FFT2(x)|), DC shifted to the centre, in float32. x: (B, C, H, W) -> same shape.

    Matches numpy's `np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(-2, -1))))`.
    Autocast is off here: torch.fft has no bf16 kernels, and bf16's 8-bit mantissa would be too
    coarse for sums over H*W pixels anyway.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        spectrum = torch.fft.fftshift(torch.fft.fft2(x.float()), dim=(-2, -1))
        return torch.log1p(spectrum.abs())


class SeparableConv2d(nn.Sequential):
    """Depthwise 3x3 (one filter per input channel) then pointwise 1x1, as Keras' SeparableConv2D.

    On a grayscale input the stem is thus one 3x3 filter scaled 64 ways, as in seed 000.

    No bias: in a pre-activation net every conv output meets a BatchNorm (or the residual sum
    before one), whose shift makes a bias redundant.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
        )


class PreActBlock(nn.Module):
    """ResNet-V2 block: (BN ReLU SepConv) x 2 plus a shortcut; 1x1 projection where shapes change."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.body = nn.Sequential(
            SeparableConv2d(cin, cout, stride),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            SeparableConv2d(cout, cout),
        )
        changes = stride != 1 or cin != cout
        self.project = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if changes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x)
        # He et al. 2016: the projection reads the pre-activated input; the identity reads x itself.
        shortcut = self.project(pre) if self.project is not None else x
        return self.body(pre) + shortcut


def spatial_stream(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """Separable stem of widths[0], one block per width (stride 2 where the width changes)."""
    blocks = [PreActBlock(cin, cout, stride=2 if cout != cin else 1)
              for cin, cout in zip((widths[0], *widths), widths)]
    # ResNet-V2 ends with BN ReLU, since the blocks' outputs are not activated.
    return nn.Sequential(SeparableConv2d(in_channels, widths[0]), *blocks, nn.BatchNorm2d(widths[-1]),
                         nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, widths[-1])


class FrequencyStream(nn.Module):
    """Standardised, clipped log-magnitude spectrum -> small CNN -> global average pool."""

    def __init__(self, in_channels: int, image_size: int, sample: torch.Tensor | None, *,
                 widths: tuple[int, ...], dropout: float, clip: float):
        super().__init__()
        self.clip = clip
        mean, std = spectrum_stats(sample, (in_channels, image_size, image_size))
        self.register_buffer("mean", mean)  # (C, H, W), one per frequency bin
        self.register_buffer("std", std)
        layers: list[nn.Module] = []
        for cin, cout in zip((in_channels, *widths), widths):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Dropout(dropout)]
        self.cnn = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = widths[-1]

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) image -> (B, C, H, W) float32 spectrum features in [-clip, clip]."""
        z = (fft_log_magnitude(x) - self.mean) / self.std
        return z.clamp(-self.clip, self.clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.spectrum(x))  # (B, widths[-1])


def spectrum_stats(sample: torch.Tensor | None, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std of the sample's log-magnitude spectrum, each (C, H, W).

    Per bin rather than per channel: image spectra fall off roughly as 1/frequency, so the
    log-magnitude near DC sits several units above the high-frequency bins. One mean/std per
    channel would leave the low bins pinned at +clip and the rest squeezed below zero; per-bin
    statistics put every bin on the same scale, so the CNN sees each image's deviation from the
    average train spectrum. The runner's sample (2048 images) is plenty for C*H*W estimates.
    Without a sample (unit tests building a bare backbone) the features are left unstandardised.
    """
    if sample is None:
        return torch.zeros(shape), torch.ones(shape)
    with torch.no_grad():
        spec = fft_log_magnitude(sample)
    return spec.mean(0), spec.std(0).clamp_min(1e-6)  # floor: a constant bin must not divide by 0


class TwoStreams(nn.Module):
    """Stage 1: the spatial stream, and the frequency stream when given, concatenated."""

    def __init__(self, spatial: nn.Module, frequency: FrequencyStream | None):
        super().__init__()
        self.spatial = spatial
        self.frequency = frequency

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frequency is None:
            return self.spatial(x)[:, :, None, None]
        return torch.cat([self.spatial(x), self.frequency(x)], 1)[:, :, None, None]  # (B, spatial + frequency, 1, 1)


def two_stream_net(ctx: BackboneContext, frequency: FrequencyStream | None, *, widths: tuple[int, ...],
                   fusion: int) -> Backbone:
    """The one builder behind both registered variants: spatial stream, optional Fourier stream, trunk."""
    if not widths:
        raise ValueError("backbone.widths: expected a non-empty list of channel counts")
    features = widths[-1] + (frequency.out_dim if frequency is not None else 0)
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(features, fusion), nn.BatchNorm1d(fusion), nn.ReLU(inplace=True))
    return Backbone([TwoStreams(spatial_stream(ctx.in_channels, tuple(widths)), frequency)],
                    image_size=ctx.image_size, channels=features, stride=ctx.image_size, trunk=trunk,
                    vector_dim=fusion)
