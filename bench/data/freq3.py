"""`freq3`: three targets in one 32x32 grayscale image, two of them in its frequency content (seed 000).

Each image is a narrow-band texture plus one glyph plus white noise:

    texture = sum over 4 components of cos(2 pi f_k / 32 * (u cos theta_k + v sin theta_k) + phase_k),
              scaled to RMS 1; theta_k = theta + N(0, 3 deg), f_k = f * (1 +- 5%), random phases
    x = 0.5 + (0.03 + 0.12 c) * texture + polarity * 0.2 * glyph_a(u, v) + N(0, noise),
        clipped to [0, 1], stored as uint8

Tasks:
- `a` (multiclass, 10): which glyph (a shape mask: disk, ring, ..., tee), at a random position and
  scale, brighter or darker than the background by a random polarity. It lives in the spatial layout.
- `b` (multiclass, 32): the texture's orientation (8, theta = k * 22.5 deg) x spatial frequency
  (4: 5, 7, 9, 11 cycles per image). Label = orientation * 4 + frequency index. It lives in where
  the spectrum's energy is; the random phases and jitter leave no fixed pattern in pixel space.
- `c` (regression, [0, 1]): the texture's RMS contrast, 0.03 + 0.12 c. It lives in how much
  energy is there.
So a network with a Fourier stream has something to find on `b` and `c`, nothing on `a`. The
`noise` option (default 0.2) makes `b` and `c` harder for every model.

`a` and `b` are balanced exactly (every class equally often, up to rounding), `c` is uniform.

Label maps (`LABEL_MAPS`, for the augmentation pipeline): the orientation theta = k * 22.5 deg is
measured in (u right, v down). A horizontal flip (u -> -u) gives theta -> 180 - theta, a vertical
one (v -> -v) theta -> -theta = 180 - theta (a grating repeats every 180 deg): both k -> (8 - k) % 8.
A quarter turn adds 90 deg: k -> k + 4. Every glyph (`a`) is mirror-symmetric left-right, but the
triangle and the tee are not top-bottom symmetric, and the triangle, bar and tee change under a
quarter turn: `a` declares hflip only. `c` (RMS contrast) survives every pixel permutation. Free
rotations are declared for none: 22.5 deg apart, orientations survive only small angles, which a
suite states with the op's `label_invariant: true`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.augment import LabelMaps, keep
from bench.data import Pool, Split, cached, dataset, source_digest
from bench.kinds.classification import Multiclass
from bench.kinds.regression import Regression

SIZE = 32
GLYPHS = ("disk", "ring", "square", "frame", "diamond", "plus", "cross", "triangle", "bar", "tee")
ORIENTATIONS = 8  # theta = k * pi / 8, k = 0..7 (theta + pi gives the same gratings, phase negated)
FREQUENCIES = (5, 7, 9, 11)  # cycles per image; all below Nyquist (16) at every orientation
COMPONENTS = 4  # sinusoids per texture; their jitter makes it a narrow-band texture, not one clean grating
ORIENTATION_JITTER = np.pi / 60  # std of each component's angle, rad (3 deg; classes are 22.5 deg apart)
FREQUENCY_JITTER = 0.05  # each component's frequency is f * (1 +- up to this)
GLYPH_LEVEL = 0.2  # glyph brightness step, in [0, 1] intensity units
NOISE = 0.2  # default std of the white noise, in [0, 1] intensity units (at 0.08 a plain CNN gets b ~98%)


def _mirror(y: torch.Tensor, did: torch.Tensor) -> torch.Tensor:
    return torch.where(did, mirror_b(y), y)


def _rot90(y: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    o, f = y // len(FREQUENCIES), y % len(FREQUENCIES)
    return (o + 4 * turns) % ORIENTATIONS * len(FREQUENCIES) + f


LABEL_MAPS: LabelMaps = {
    "a": {"hflip": keep},
    "b": {"hflip": _mirror, "vflip": _mirror, "rot90": _rot90},
    "c": {"hflip": keep, "vflip": keep, "rot90": keep},
}


@dataset("freq3", tasks={"a": "multiclass", "b": "multiclass", "c": "regression"}, label_maps=LABEL_MAPS)
def freq3(root: Path, download: bool, *, n: int = 3_000, n_test: int = 1_000, seed: int = 0,
          noise: float = NOISE) -> Pool:
    """`noise`: std of the white noise in [0, 1] intensity units; higher makes `b` and `c` harder."""
    key = f"freq3:n={n}:n_test={n_test}:seed={seed}:noise={noise}:{source_digest(__file__)}"
    arrays = cached(root, "freq3", key, lambda: {
        **{f"train_{k}": v for k, v in generate(n, seed, 0, noise).items()},
        **{f"test_{k}": v for k, v in generate(n_test, seed, 1, noise).items()},
    })
    b_names = tuple(f"{o * 180 / ORIENTATIONS:g}deg f{f}" for o in range(ORIENTATIONS) for f in FREQUENCIES)
    return Pool(
        train=Split(arrays["train_x"], {t: arrays[f"train_{t}"] for t in "abc"}),
        test=Split(arrays["test_x"], {t: arrays[f"test_{t}"] for t in "abc"}),
        specs={"a": Multiclass(name="a", classes=len(GLYPHS), class_names=GLYPHS),
               "b": Multiclass(name="b", classes=len(b_names), class_names=b_names),
               "c": Regression(name="c", dim=1)},
        stratify="b",
    )


def generate(n: int, seed: int, stream: int, noise: float = NOISE) -> dict[str, torch.Tensor]:
    """n images with labels; `stream` separates train (0) from test (1) for the same seed."""
    scene = sample_scenes(n, np.random.default_rng([seed, stream]), noise)
    b = scene["orientation"] * len(FREQUENCIES) + scene["frequency"]
    return {"x": torch.from_numpy(render(scene)), "a": torch.from_numpy(scene["glyph"]),
            "b": torch.from_numpy(b), "c": torch.from_numpy(scene["contrast"].astype(np.float32)[:, None])}


def sample_scenes(n: int, rng: np.random.Generator, noise: float = NOISE) -> dict[str, np.ndarray]:
    """Everything that determines n images, one array per property (the labels among them)."""
    b = rng.permutation(np.arange(n) % (ORIENTATIONS * len(FREQUENCIES)))  # each class n // 32 times, +1 for some
    return {
        "glyph": rng.permutation(np.arange(n) % len(GLYPHS)),
        "orientation": b // len(FREQUENCIES),
        "frequency": b % len(FREQUENCIES),
        "contrast": rng.random(n),
        "phase": rng.random((n, COMPONENTS)) * 2 * np.pi,
        "jitter": rng.normal(0, ORIENTATION_JITTER, (n, COMPONENTS)),  # rad, added to theta
        "stretch": 1 + rng.uniform(-FREQUENCY_JITTER, FREQUENCY_JITTER, (n, COMPONENTS)),  # times f
        "polarity": rng.choice([-1.0, 1.0], n),
        "centre": rng.integers(-3, 4, (n, 2)).astype(float),  # glyph centre offset (u, v), px
        "radius": rng.uniform(8, 11, n),  # glyph half-size, px
        "noise": rng.normal(0, noise, (n, SIZE, SIZE)).astype(np.float32),
    }


def render(scene: dict[str, np.ndarray]) -> np.ndarray:
    """(n, 1, 32, 32) uint8 images of `scene` (see sample_scenes)."""
    c = np.arange(SIZE) - (SIZE - 1) / 2  # pixel centres, symmetric about the image centre
    v, u = np.meshgrid(c, c, indexing="ij")  # v down, u right; (32, 32)
    texture = np.zeros((len(scene["glyph"]), SIZE, SIZE), np.float32)
    for k in range(COMPONENTS):
        theta = (scene["orientation"] * np.pi / ORIENTATIONS + scene["jitter"][:, k])[:, None, None]
        f = (np.array(FREQUENCIES)[scene["frequency"]] * scene["stretch"][:, k])[:, None, None]
        wave = 2 * np.pi * f / SIZE * (u * np.cos(theta) + v * np.sin(theta)) + scene["phase"][:, k, None, None]
        texture += np.cos(wave)
    texture /= np.sqrt((texture**2).mean((1, 2), keepdims=True))  # RMS 1, so amplitude alone sets the contrast
    amplitude = 0.03 + 0.12 * scene["contrast"][:, None, None]  # RMS contrast
    gu = (u - scene["centre"][:, :1, None]) / scene["radius"][:, None, None]  # glyph coordinates in [-1, 1]
    gv = (v - scene["centre"][:, 1:, None]) / scene["radius"][:, None, None]
    glyph = np.zeros_like(gu, dtype=bool)
    for k in range(len(GLYPHS)):
        i = scene["glyph"] == k
        glyph[i] = glyph_mask(k, gu[i], gv[i])
    x = 0.5 + amplitude * texture + GLYPH_LEVEL * scene["polarity"][:, None, None] * glyph + scene["noise"]
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)[:, None]


def glyph_mask(k: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Glyph k on coordinates u (right), v (down) scaled to [-1, 1]; each is symmetric in u."""
    au, av = np.abs(u), np.abs(v)
    r, box = np.hypot(u, v), np.maximum(au, av)
    return [
        r <= 0.85,  # disk
        (r >= 0.5) & (r <= 0.9),  # ring
        box <= 0.75,  # square
        (box >= 0.5) & (box <= 0.85),  # frame
        au + av <= 0.95,  # diamond
        ((au <= 0.25) | (av <= 0.25)) & (box <= 0.9),  # plus
        (np.abs(au - av) <= 0.3) & (box <= 0.85),  # cross (an X)
        (au <= (v + 0.85) / 2) & (v <= 0.85),  # triangle, apex up
        (av <= 0.3) & (au <= 0.95),  # bar
        ((v <= -0.5) & (v >= -0.9) & (au <= 0.85)) | ((au <= 0.22) & (av <= 0.9)),  # tee
    ][k]


def mirror_b(b: torch.Tensor) -> torch.Tensor:
    """The `b` label of the mirror image: orientation k -> (8 - k) % 8, frequency kept."""
    o, f = b // len(FREQUENCIES), b % len(FREQUENCIES)
    return (ORIENTATIONS - o) % ORIENTATIONS * len(FREQUENCIES) + f
