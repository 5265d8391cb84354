"""Deterministic coding: identical bytes and pixels across thread counts and processes.

The entropy parameters are computed in fixed point (lic.codecs.exact), so their values do not
depend on the order in which a convolution sums its terms; the tests below change that order on
purpose and check that the fixed-point result does not move while the float one does.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import lic
from lic import coding
from lic.codecs import exact as fx
from tests.helpers import perturbed_codec

SCRIPT = """
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[1]))
import lic
from lic import coding
codec = lic.load_codec(sys.argv[2])
if sys.argv[3] == "encode":
    image = torch.load(sys.argv[4])
    print(hashlib.sha256(coding.encode(codec, image)).hexdigest())
else:
    with open(sys.argv[4], "rb") as f:
        images = coding.decode(codec, f.read())
    pixels = images.mul(255).round().to(torch.uint8).numpy().tobytes()
    print(hashlib.sha256(pixels).hexdigest())
"""


@pytest.fixture(scope="module")
def swin_checkpoint(tmp_path_factory) -> Path:
    """teacher-tiny (attention, residual blocks, five slices) with perturbed weights."""
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    path = tmp_path_factory.mktemp("det") / "teacher-tiny.ckpt"
    lic.save_codec(
        perturbed_codec("teacher-tiny", image, steps=10), path, lmbda=0.013, metric="mse"
    )
    return path


def _run(threads: int, checkpoint: Path, action: str, data: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(threads), str(checkpoint), action, str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.mark.parametrize("which", ["tiny_checkpoint", "swin_checkpoint"])
def test_same_bytes_and_pixels_with_one_or_two_threads_in_fresh_processes(which, request, tmp_path):
    checkpoint = request.getfixturevalue(which)
    image = torch.rand(1, 3, 96, 160, generator=torch.Generator().manual_seed(11))
    torch.save(image, tmp_path / "image.pt")
    codec = lic.load_codec(checkpoint)
    data = coding.encode(codec, image)
    assert coding.encode(codec, image) == data  # repeated encodes, same process
    (tmp_path / "a.lic").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    for threads in (1, 2):
        assert _run(threads, checkpoint, "encode", tmp_path / "image.pt") == digest
    decoded = coding.decode(codec, data).mul(255).round().to(torch.uint8).numpy().tobytes()
    expected = hashlib.sha256(decoded).hexdigest()
    assert {_run(t, checkpoint, "decode", tmp_path / "a.lic") for t in (1, 2)} == {expected}


def _reversed_order(layer: nn.Conv2d) -> nn.Conv2d:
    """The same convolution with its input channels permuted: another summation order."""
    permuted = nn.Conv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding
    ).double()
    with torch.no_grad():
        permuted.weight.copy_(layer.weight.flip(1))
        permuted.bias.copy_(layer.bias)
    return permuted


def test_fixed_point_results_do_not_depend_on_summation_order() -> None:
    torch.manual_seed(0)
    layer = nn.Conv2d(256, 64, 3, padding=1).double()
    x = torch.randn(1, 256, 24, 24, dtype=torch.float64) * 3
    # Float: the same sums in another order differ in the last bits ...
    float_a = layer(x)
    float_b = _reversed_order(layer)(x.flip(1))
    assert not torch.equal(float_a, float_b)
    # ... fixed point: identical integers.
    q = fx.to_fixed(x)
    fixed_a = fx.FixedPointSequential(layer)(q)
    fixed_b = fx.FixedPointSequential(_reversed_order(layer))(q.flip(1))
    assert torch.equal(fixed_a, fixed_b)
    # and the fixed-point result is the float result to within rounding
    assert (fx.to_real(fixed_a).double() - float_a).abs().max() < 0.01


def test_fixed_point_lookups_are_exact_at_the_table_edges() -> None:
    span = fx.TABLE_RANGE * fx.ONE
    q = torch.tensor(
        [-fx.LIMIT, -span - 1, -span, -1.0, 0.0, 1.0, span, span + 1, fx.LIMIT], dtype=torch.float64
    )
    gelu, tanh = fx.lookup("gelu", q), fx.lookup("tanh", q)
    assert gelu.tolist() == [
        0.0,
        0.0,
        0.0,
        gelu[3].item(),
        0.0,
        gelu[5].item(),
        span,
        span + 1,
        fx.LIMIT,
    ]
    assert tanh[:3].tolist() == [-fx.ONE] * 3 and tanh[-3:].tolist() == [fx.ONE] * 3
    reference = torch.nn.functional.gelu(q / fx.ONE) * fx.ONE
    assert (gelu - reference).abs().max() <= 0.5 + 1e-9


def test_cached_fixed_point_networks_follow_weight_updates() -> None:
    """The fixed-point copy is cached per module; any change to the weights must rebuild it."""
    layer = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.GELU())
    q = fx.to_fixed(torch.randn(1, 4, 8, 8))
    first = fx.fixed_point(layer)
    assert fx.fixed_point(layer) is first  # no rebuild while the weights stand still
    before = first(q)
    with torch.no_grad():
        layer[0].weight.mul_(2)  # what an optimizer step or load_state_dict does: in place
    after = fx.fixed_point(layer)(q)
    assert not torch.equal(before, after)
    assert torch.equal(after, fx.FixedPointSequential(layer)(q))
