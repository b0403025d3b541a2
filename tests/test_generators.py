"""Both generated datasets: the same seed and stream give the same data; another seed or the test
stream gives other data."""

from __future__ import annotations

import pytest
import torch

from bench.data import freq3, shapes


@pytest.mark.parametrize("generate", [shapes.generate, freq3.generate], ids=["shapes", "freq3"])
def test_generation_is_deterministic_per_seed_and_stream(generate):
    a, b = generate(40, seed=3, stream=0), generate(40, seed=3, stream=0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["x"], generate(40, seed=4, stream=0)["x"])
    assert not torch.equal(a["x"], generate(40, seed=3, stream=1)["x"])
