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
    with pytest.raises(ImageError, match="corrupt PNG: IDAT chunk at byte 33 is truncated"):
        load_image(tmp_path / "truncated.png")
    jpeg = write_mode(tmp_path / "t.jpg", "jpeg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(tmp_path / "truncated.jpg")


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


# -- PNG chunk checks ------------------------------------------------------------------------

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, data) chunks of a valid PNG."""
    out, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        out.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def _png(chunks, signature: bytes = SIGNATURE) -> bytes:
    from tests.images import _chunk

    return signature + b"".join(_chunk(kind, data) for kind, data in chunks)


def _ihdr(width=53, height=37, depth=8, colour=2, compression=0, filtering=0, interlace=0):
    return b"IHDR", struct.pack(
        ">IIBBBBB", width, height, depth, colour, compression, filtering, interlace
    )


def _with_crc(data: bytes, kind: bytes, xor: int = 1) -> bytes:
    """``data`` with the CRC of its first ``kind`` chunk changed."""
    at = data.index(kind) - 4
    length = struct.unpack(">I", data[at : at + 4])[0]
    crc = at + 8 + length
    return data[:crc] + bytes([data[crc] ^ xor]) + data[crc + 1 :]


def _corrupt_pngs(tmp_path) -> dict[str, bytes]:
    """Every kind of damage a PNG conformance suite (PngSuite's x*.png) covers, and more."""
    rgb = write_mode(tmp_path / "base-rgb.png", "RGB").read_bytes()
    pal = write_mode(tmp_path / "base-p.png", "P").read_bytes()
    c, p = _chunks(rgb), _chunks(pal)
    ihdr, idat, iend = c[0], [x for x in c if x[0] == b"IDAT"], c[-1]
    assert ihdr[0] == b"IHDR" and iend[0] == b"IEND" and idat
    whole = b"".join(d for _, d in idat)
    halves = [(b"IDAT", whole[:100]), (b"IDAT", whole[100:])]
    text = (b"tEXt", b"Comment\x00hello")
    plte = next(x for x in p if x[0] == b"PLTE")
    p_idat = [x for x in p if x[0] == b"IDAT"]
    idat_at = rgb.index(b"IDAT")
    flipped = bytearray(rgb)
    flipped[idat_at + 20] ^= 0x10  # compressed pixels changed, CRC left as it was
    cases = {
        # signature (PngSuite xs1n0g01, xs2n0g01, xs4n0g01, xs7n0g01, xcrn0g04, xlfn0g04)
        "signature-high-bit": b"\x09" + rgb[1:],
        "signature-byte-2": rgb[:2] + b"Q" + rgb[3:],
        "signature-lowercase": rgb[:3] + b"g" + rgb[4:],
        "signature-byte-7": rgb[:6] + b" " + rgb[7:],
        "signature-added-cr": rgb.replace(b"\n", b"\r\n"),
        "signature-added-lf": rgb.replace(b"\r", b"\r\n"),
        "signature-lf-only": rgb.replace(b"\r\n", b"\n"),
        # chunk CRCs (xcsn0g01, xhdn0g08)
        "crc-ihdr": _with_crc(rgb, b"IHDR"),
        "crc-idat": _with_crc(rgb, b"IDAT"),
        "crc-idat-data": bytes(flipped),
        "crc-plte": _with_crc(pal, b"PLTE", 0x80),
        "crc-iend": _with_crc(rgb, b"IEND"),
        "crc-ancillary": _with_crc(_png([ihdr, text, *idat, iend]), b"tEXt"),
        # IHDR missing, misplaced, repeated, wrong size
        "no-ihdr": _png([*idat, iend]),
        "ihdr-not-first": _png([text, ihdr, *idat, iend]),
        "two-ihdr": _png([ihdr, ihdr, *idat, iend]),
        "ihdr-short": _png([(b"IHDR", ihdr[1][:12]), *idat, iend]),
        "ihdr-long": _png([(b"IHDR", ihdr[1] + b"\x00"), *idat, iend]),
        # IDAT missing, split, empty (xdtn0g01)
        "no-idat": _png([ihdr, iend]),
        "idat-not-consecutive": _png([ihdr, halves[0], text, halves[1], iend]),
        "idat-empty": _png([ihdr, (b"IDAT", b""), iend]),
        # PLTE missing, misplaced, malformed
        "plte-missing": _png([x for x in p if x[0] != b"PLTE"]),
        "plte-after-idat": _png([p[0], *p_idat, plte, p[-1]]),
        "plte-length": _png([p[0], (b"PLTE", plte[1][:-1]), *p_idat, p[-1]]),
        "plte-too-long": _png([p[0], (b"PLTE", bytes(771)), *p_idat, p[-1]]),
        "plte-twice": _png([p[0], plte, plte, *p_idat, p[-1]]),
        "plte-over-bit-depth": _png([_ihdr(depth=1, colour=3), (b"PLTE", bytes(9)), *idat, iend]),
        # IEND missing, not empty, not last
        "no-iend": _png([ihdr, *idat]),
        "iend-not-empty": _png([ihdr, *idat, (b"IEND", b"x")]),
        "chunk-after-iend": _png([ihdr, *idat, iend, text]),
        "bytes-after-iend": rgb + b"\x00" * 7,
        # chunk types and lengths
        "unknown-critical-chunk": _png([ihdr, (b"ABCD", b"1234"), *idat, iend]),
        "chunk-type-not-letters": _png([ihdr, (b"ID4T", whole), iend]),
        "chunk-length-over-2-31": rgb[: idat_at - 4] + b"\xff\xff\xff\xff" + rgb[idat_at:],
        # bit depth and colour type (xc1n0g08, xc9n2c08, xd0n2c08, xd3n2c08, xd9n2c08)
        "colour-type-1": _png([_ihdr(colour=1), *idat, iend]),
        "colour-type-5": _png([_ihdr(colour=5), *idat, iend]),
        "colour-type-9": _png([_ihdr(colour=9), *idat, iend]),
        "bit-depth-0": _png([_ihdr(depth=0), *idat, iend]),
        "bit-depth-3": _png([_ihdr(depth=3, colour=0), *idat, iend]),
        "bit-depth-99": _png([_ihdr(depth=99), *idat, iend]),
        "rgb-4-bit": _png([_ihdr(depth=4, colour=2), *idat, iend]),
        "palette-16-bit": _png([_ihdr(depth=16, colour=3), plte, *idat, iend]),
        "gray-alpha-4-bit": _png([_ihdr(depth=4, colour=4), *idat, iend]),
        "rgba-1-bit": _png([_ihdr(depth=1, colour=6), *idat, iend]),
        "compression-method-1": _png([_ihdr(compression=1), *idat, iend]),
        "filter-method-1": _png([_ihdr(filtering=1), *idat, iend]),
        "interlace-method-2": _png([_ihdr(interlace=2), *idat, iend]),
        "width-0": _png([_ihdr(width=0), *idat, iend]),
        "height-0": _png([_ihdr(height=0), *idat, iend]),
        "width-2-31": _png([_ihdr(width=2**31), *idat, iend]),
        # zero-length and truncated files
        "signature-only": SIGNATURE,
        "signature-cut": SIGNATURE[:5],
        "cut-in-chunk-header": rgb[:12],
        "cut-in-ihdr": rgb[:20],
        "cut-in-idat": rgb[: idat_at + 30],
        "cut-in-idat-crc": rgb[: idat_at + 4 + len(idat[0][1]) + 2],
        "cut-before-iend": rgb[:-12],
        "cut-in-iend": rgb[:-3],
    }
    return cases


def test_valid_pngs_pass_the_chunk_check_and_load_as_before(tmp_path) -> None:
    """Every PNG kind Pillow writes (and the hand-written ones) loads as Pillow decodes it."""
    from lic.imageio import check_png, convert_to_rgb8

    kinds = ["L", "LA", "RGB", "RGBA", "P", "P+transparency", "gray16", "1"]
    kinds += ["gray2", "gray4", "palette4", "rgb16", "rgba16", "interlaced", "interlaced-gray16"]
    for kind in kinds:
        path = write_mode(tmp_path / f"{kind}.png", kind)
        assert check_png(path), kind
        with Image.open(path) as image:
            expected = convert_to_rgb8(image)
        loaded = load_image(path)
        assert np.array_equal(loaded.pixels, expected.pixels), kind
        assert loaded.notice == expected.notice, kind
    assert not check_png(write_mode(tmp_path / "x.jpg", "jpeg"))
    # Split and empty IDATs, and unknown ancillary chunks, are valid PNG.
    rgb = _chunks(write_mode(tmp_path / "base.png", "RGB").read_bytes())
    whole = b"".join(d for k, d in rgb if k == b"IDAT")
    parts = [(b"IDAT", whole[:50]), (b"IDAT", b""), (b"IDAT", whole[50:])]
    path = tmp_path / "split.png"
    path.write_bytes(_png([rgb[0], (b"tEXt", b"a\x00b"), (b"prVt", b"x"), *parts, rgb[-1]]))
    assert check_png(path)
    assert np.array_equal(load_image(path).pixels, gradient(37, 53))


def test_corrupt_pngs_are_refused_by_load_image(tmp_path) -> None:
    for name, data in _corrupt_pngs(tmp_path).items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        with pytest.raises(ImageError) as info:
            load_image(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(str(path)), (name, message)
        assert "corrupt PNG" in message, (name, message)


def test_lic_encode_refuses_corrupt_pngs_in_one_line_and_writes_nothing(tmp_path, capsys):
    from lic.cli import main

    cases = _corrupt_pngs(tmp_path)
    cases["empty"] = b""
    for name, data in cases.items():
        source, output = tmp_path / f"{name}.png", tmp_path / f"{name}.lic"
        source.write_bytes(data)
        assert main(["encode", str(source), "-o", str(output)]) == 1, name
        err = capsys.readouterr().err
        assert err.startswith("lic: error: ") and err.count("\n") == 1, (name, err)
        assert not output.exists(), name
    assert not list(tmp_path.glob("*.lic*")) and not list(tmp_path.glob(".*"))
