"""Every Pillow anchor round-trips a real image, with bpp from its real bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lic.errors import UsageError
from lic.evaluation.anchors import ANCHORS, get_anchor
from lic.evaluation.metrics import ms_ssim_rgb, psnr_rgb
from tests.images import gradient

PILLOW_ANCHORS = ["jpeg", "webp", "avif", "jpeg2000", "jxl"]


def _photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = gradient(176, 200).astype(int)
    return np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", PILLOW_ANCHORS)
def test_anchor_round_trip_and_rate_from_bytes(name: str) -> None:
    anchor = get_anchor(name)
    pixels = _photo()
    low, high = anchor.code(pixels, anchor.settings[0]), anchor.code(pixels, anchor.settings[-1])
    for encoded in (low, high):
        assert encoded.decoded.shape == pixels.shape and encoded.decoded.dtype == np.uint8
        assert encoded.num_bytes > 0
    assert high.num_bytes > low.num_bytes, "the sweep must raise the rate"
    assert psnr_rgb(pixels, high.decoded) > psnr_rgb(pixels, low.decoded)
    assert psnr_rgb(pixels, high.decoded) > 25


def test_jpeg_bytes_are_the_real_file() -> None:
    pixels = _photo()
    encoded = get_anchor("jpeg").code(pixels, 75)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=75)
    assert encoded.num_bytes == len(buffer.getvalue())


def test_metrics() -> None:
    pixels = _photo()
    assert psnr_rgb(pixels, pixels) == float("inf")
    noisy = np.clip(pixels.astype(int) + 1, 0, 255).astype(np.uint8)
    assert 45 < psnr_rgb(pixels, noisy) < 50
    assert ms_ssim_rgb(pixels, pixels) == pytest.approx(1.0)
    assert np.isnan(ms_ssim_rgb(pixels[:64], pixels[:64]))


def test_unknown_or_missing_anchors_are_usage_errors(monkeypatch) -> None:
    with pytest.raises(UsageError, match="unknown anchor"):
        get_anchor("heic")
    if not ANCHORS["bpg"].available():
        with pytest.raises(UsageError, match="not available"):
            get_anchor("bpg")
