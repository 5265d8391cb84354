"""Every input form becomes 8-bit RGB, with a one-line notice when converted."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from lic.errors import ImageError, LicError
from lic.files import atomic_output
from lic.imageio import load_image, save_png
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
    "gray2": "grayscale image converted to 8-bit RGB",
    "gray4": "grayscale image converted to 8-bit RGB",
    "palette4": "palette image converted to 8-bit RGB",
    "rgba16": "16-bit RGBA image converted to 8-bit RGB (alpha dropped)",
    "interlaced": None,
    "interlaced-gray16": "16-bit grayscale converted to 8-bit RGB",
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
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    save_png(gradient(4, 5), target)
    assert np.array_equal(np.asarray(Image.open(target)), gradient(4, 5))


def test_low_bit_depths_scale_to_the_full_range_and_interlacing_is_exact(tmp_path) -> None:
    expected = gradient(37, 53)
    for bits in (2, 4):
        gray = load_image(write_mode(tmp_path / f"g{bits}.png", f"gray{bits}")).pixels
        levels = (1 << bits) - 1
        assert np.array_equal(gray[..., 1], (expected[..., 0] >> (8 - bits)) * (255 // levels))
    assert np.array_equal(load_image(write_mode(tmp_path / "i.png", "interlaced")).pixels, expected)
    gray16 = load_image(write_mode(tmp_path / "i16.png", "interlaced-gray16")).pixels
    assert np.array_equal(gray16[..., 2], expected[..., 0])


def _png_with_size(path, width: int, height: int):
    """A PNG whose header claims ``width`` x ``height`` over a tiny (useless) IDAT."""
    from tests.images import _chunk

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )
    return path


def test_decompression_bombs_are_refused_from_the_header(tmp_path, monkeypatch) -> None:
    bomb = _png_with_size(tmp_path / "bomb.png", 100_000, 100_000)  # 10 gigapixels, 100 bytes
    with pytest.raises(ImageError, match=r"10,000,000,000 pixels exceeds the limit of 33,554,432"):
        load_image(bomb)
    # Between Pillow's own limits and lic's: still refused, by lic, with lic's message.
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(_png_with_size(tmp_path / "b2.png", 10_000, 5_000))
    small = write_mode(tmp_path / "ok.png", "RGB")
    with pytest.raises(ImageError, match="exceeds the limit of 1,000"):
        load_image(small, limit=1000)
    monkeypatch.setenv("LIC_MAX_PIXELS", "1000")
    with pytest.raises(ImageError, match="exceeds the limit of 1,000"):
        load_image(small)
    monkeypatch.setenv("LIC_MAX_PIXELS", "lots")
    with pytest.raises(LicError, match="LIC_MAX_PIXELS must be a positive integer"):
        load_image(small)


def test_corrupt_and_unsupported_files_are_one_line_errors(tmp_path) -> None:
    good = write_mode(tmp_path / "good.png", "RGB").read_bytes()
    idat = good.index(b"IDAT")
    broken = bytearray(good)
    for i in range(idat + 8, idat + 40):  # scramble compressed pixels (chunk CRC now wrong too)
        broken[i] ^= 0x5A
    cases = {
        "crc.png": bytes(broken),
        "header-only.png": good[:idat],
        "empty.png": b"",
        "text.png": b"hello, I am not a picture\n" * 10,
        "pdf.png": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        "jpeg-truncated.jpg": write_mode(tmp_path / "j.jpg", "jpeg").read_bytes()[:200],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError) as info:
            load_image(tmp_path / name)
        assert "\n" not in str(info.value), name
