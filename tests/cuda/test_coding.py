"""Coding on CUDA: the shipped default codec and a tiny one, and files crossing CPU ↔ CUDA.

What is designed to hold (README "Reliability and determinism"): the entropy parameters are
fixed-point integers, so a file written on one device decodes on the other, and only the float32
synthesis ``g_s`` may move a pixel by rounding (the README's bound: one 8-bit level). Whether a
CUDA encode gives the very bytes of a CPU encode is *not* designed (``g_a`` runs in float, on
CUDA with TF32 convolutions by default, and a latent within rounding of a .5 boundary quantises
the other way): that test is an expected failure that reports XPASS where it holds, and
``scripts/gpu_checks.py`` counts it over all of Kodak.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lic
from lic import coding
from lic.demo import SAMPLES_DIR
from lic.imageio import load_image, tensor_to_pixels
from tests.helpers import perturbed_codec, shipped_points

pytestmark = pytest.mark.cuda

#: The README's stated bound for decoding one file on two devices, in 8-bit levels.
PIXEL_BOUND = 1


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return load_image(SAMPLES_DIR / "kodim07.png").to_tensor()


@pytest.fixture(scope="module")
def default_pair(cuda) -> tuple[torch.nn.Module, torch.nn.Module, float | None]:
    """The default codec's quality-3 weights, once on the CPU and once on CUDA, and the quality
    to code at (None for a fixed-rate checkpoint; 3 for a variable-rate default)."""
    point = next(p for p in shipped_points() if p.quality == 3)
    return lic.load_codec(point.path), lic.load_codec(point.path, device=cuda), point.coding_quality


def _largest_difference(a: torch.Tensor, b: torch.Tensor) -> int:
    a_pixels, b_pixels = tensor_to_pixels(a).astype(np.int16), tensor_to_pixels(b)
    return int(np.abs(a_pixels - b_pixels).max())


def test_a_cpu_file_decodes_on_cuda_within_the_bound(default_pair, photo) -> None:
    on_cpu, on_cuda, quality = default_pair
    data = coding.encode(on_cpu, photo, quality)
    decoded_cpu = coding.decode(on_cpu, data)
    decoded_cuda = coding.decode(on_cuda, data)
    assert decoded_cuda.is_cuda and decoded_cuda.shape == photo.shape
    assert _largest_difference(decoded_cuda, decoded_cpu) <= PIXEL_BOUND


def test_a_cuda_file_decodes_on_both_devices_within_the_bound(default_pair, photo) -> None:
    on_cpu, on_cuda, quality = default_pair
    data = coding.encode(on_cuda, photo, quality)
    assert coding.encode(on_cuda, photo, quality) == data  # repeatable on the same device
    decoded_cuda = coding.decode(on_cuda, data)
    decoded_cpu = coding.decode(on_cpu, data)
    assert decoded_cpu.shape == decoded_cuda.shape == photo.shape
    assert _largest_difference(decoded_cuda, decoded_cpu) <= PIXEL_BOUND
    cpu_bytes = len(coding.encode(on_cpu, photo, quality))
    assert abs(len(data) - cpu_bytes) <= 0.01 * cpu_bytes  # the same rate, if not the same bytes


@pytest.mark.xfail(
    reason="not designed: g_a runs in float (TF32 convolutions on CUDA by default), so a latent "
    "near a rounding boundary can quantise differently; gpu_checks.py counts it over Kodak",
    strict=False,
)
def test_a_cuda_encode_gives_the_bytes_of_a_cpu_encode(default_pair, photo) -> None:
    on_cpu, on_cuda, quality = default_pair
    assert coding.encode(on_cuda, photo, quality) == coding.encode(on_cpu, photo, quality)


def test_decompress_reproduces_the_eval_forward_on_cuda_within_the_bound(cuda) -> None:
    """As on the CPU (tests/codecs/test_roundtrip.py), the decoder is the eval forward pass, but
    on CUDA only up to the float synthesis: the first GPU run (H100, 2026-11-23) found the two
    reconstructions unequal bit for bit, since cuDNN (TF32 by default) does not promise the same
    float result from two calls. The designed bound is the cross-device one: one 8-bit level."""
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    codec = perturbed_codec("teacher-tiny", image, steps=10).to(cuda)
    x = image.to(cuda)
    with torch.no_grad():
        out = codec(x)
        decoded = codec.decompress(codec.compress(x))
    assert decoded.is_cuda and decoded.shape == image.shape
    assert _largest_difference(decoded, out.x_hat.clamp(0, 1)) <= PIXEL_BOUND


def test_encode_and_decode_commands_on_cuda(tmp_path, capsys) -> None:
    from lic.cli import main

    source = SAMPLES_DIR / "kodim19.png"
    encoded, decoded = tmp_path / "a.lic", tmp_path / "a.png"
    assert main(["encode", str(source), "-o", str(encoded), "--device", "cuda"]) == 0
    assert main(["decode", str(encoded), "-o", str(decoded), "--device", "cuda"]) == 0
    assert load_image(decoded).pixels.shape == load_image(source).pixels.shape
    assert main(["decode", str(encoded), "-o", str(tmp_path / "b.png")]) == 0  # on the CPU
    difference = np.abs(
        load_image(decoded).pixels.astype(np.int16) - load_image(tmp_path / "b.png").pixels
    )
    assert difference.max() <= PIXEL_BOUND
    capsys.readouterr()
