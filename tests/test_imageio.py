"""Every input form becomes 8-bit RGB, with a one-line notice when converted."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lic.errors import ImageError
from lic.imageio import atomic_output, load_image, save_png
from tests.images import gradient, write_mode

CASES = {
    "RGB": None,
    "jpeg": None,
    "1": "1-bit image converted to 8-bit RGB",
    "L": "grayscale image converted to 8-bit RGB",
    "LA": "grayscale image converted to 8-bit RGB (alpha dropped)",
    "P": "palette image converted to 8-bit RGB",
    "P+transparency": "palette image converted to 8-bit RGB (alpha dropped)",
    "RGBA": "RGBA image converted to 8-bit RGB (alpha dropped)",
    "gray16": "16-bit grayscale converted to 8-bit RGB",
    "rgb16": "16-bit RGB reduced to 8-bit",
}


@pytest.mark.parametrize("mode", list(CASES))
def test_every_input_mode_becomes_rgb8(tmp_path, mode: str) -> None:
    path = write_mode(tmp_path / f"in.{'jpg' if mode == 'jpeg' else 'png'}", mode)
    loaded = load_image(path)
    assert loaded.pixels.dtype == np.uint8 and loaded.pixels.shape == (37, 53, 3)
    assert loaded.notice == CASES[mode]
    if loaded.notice:
        assert "\n" not in loaded.notice


def test_sixteen_bit_samples_are_scaled_not_clipped(tmp_path) -> None:
    expected = gradient(37, 53)
    gray = load_image(write_mode(tmp_path / "g.png", "gray16")).pixels
    assert np.array_equal(gray[..., 0], expected[..., 0]) and np.array_equal(
        gray[..., 2], expected[..., 0]
    )
    rgb = load_image(write_mode(tmp_path / "c.png", "rgb16")).pixels
    assert np.array_equal(rgb, expected)


def test_rgb_pixels_are_exact(tmp_path) -> None:
    loaded = load_image(write_mode(tmp_path / "x.png", "RGB"))
    assert np.array_equal(loaded.pixels, gradient(37, 53))
    assert loaded.to_tensor().shape == (1, 3, 37, 53)


def test_unreadable_files_are_clear_errors(tmp_path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="not an image format"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "missing.png")
    good = write_mode(tmp_path / "t.png", "RGB").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(tmp_path / "truncated.png")


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    save_png(gradient(4, 5), target)
    assert np.array_equal(np.asarray(Image.open(target)), gradient(4, 5))
