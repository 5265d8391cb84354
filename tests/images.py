"""Test images in every input form lic accepts, written by the tests themselves."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ADAM7 = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _scanlines(samples: np.ndarray, bit_depth: int) -> bytes:
    """Rows of ``(h, w, c)`` samples packed at ``bit_depth``, each with filter byte 0."""
    rows = []
    for row in samples:
        flat = row.reshape(-1).astype(np.uint16)
        if bit_depth == 16:
            data = flat.astype(">u2").tobytes()
        elif bit_depth == 8:
            data = flat.astype(np.uint8).tobytes()
        else:  # 1, 2, 4 bits, most significant first, last byte zero-padded
            per_byte = 8 // bit_depth
            padded = np.zeros(-(-len(flat) // per_byte) * per_byte, dtype=np.uint16)
            padded[: len(flat)] = flat
            groups = padded.reshape(-1, per_byte)
            shifts = bit_depth * np.arange(per_byte - 1, -1, -1)
            data = (groups << shifts).sum(axis=1).astype(np.uint8).tobytes()
        rows.append(b"\x00" + data)
    return b"".join(rows)


def write_png(
    path: Path,
    samples: np.ndarray,
    bit_depth: int,
    color_type: int,
    palette: bytes | None = None,
    transparency: bytes | None = None,
    interlace: bool = False,
) -> Path:
    """Write a PNG by hand: any bit depth and colour type, optionally Adam7-interlaced.

    ``samples`` is ``(h, w, c)``: c=1 for grayscale (type 0) or palette indexes (type 3),
    3 for RGB (type 2), 4 for RGBA (type 6).
    """
    height, width = samples.shape[:2]
    if interlace:
        raw = b"".join(
            _scanlines(samples[y0::dy, x0::dx], bit_depth)
            for x0, y0, dx, dy in ADAM7
            if samples[y0::dy, x0::dx].size
        )
    else:
        raw = _scanlines(samples, bit_depth)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, int(interlace))
    chunks = [_chunk(b"IHDR", header)]
    if palette is not None:
        chunks.append(_chunk(b"PLTE", palette))
    if transparency is not None:
        chunks.append(_chunk(b"tRNS", transparency))
    chunks += [_chunk(b"IDAT", zlib.compress(raw)), _chunk(b"IEND", b"")]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(chunks))
    return path


def write_png_rgb16(path: Path, pixels: np.ndarray) -> None:
    """A 48-bit RGB PNG (Pillow cannot write one)."""
    write_png(path, pixels, 16, 2)


def gradient(height: int, width: int) -> np.ndarray:
    """8-bit RGB test pattern."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack(
        [xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], -1
    ).astype(np.uint8)


def write_mode(path: Path, mode: str, height: int = 37, width: int = 53) -> Path:
    """Write a PNG (or JPEG for ``jpeg``) of the given kind; returns the path."""
    rgb = gradient(height, width)
    if mode == "rgb16":
        write_png_rgb16(path, rgb.astype(np.uint16) * 257)
        return path
    if mode in ("gray2", "gray4"):
        bits = int(mode[-1])
        return write_png(path, rgb[..., :1] >> (8 - bits), bits, 0)
    if mode == "palette4":  # 4-bit palette without transparency
        palette = bytes(np.repeat(np.arange(16, dtype=np.uint8) * 17, 3))
        return write_png(path, rgb[..., :1] >> 4, 4, 3, palette=palette)
    if mode == "rgba16":
        alpha = np.full(rgb.shape[:2] + (1,), 40000, dtype=np.uint16)
        return write_png(path, np.concatenate([rgb.astype(np.uint16) * 257, alpha], -1), 16, 6)
    if mode == "interlaced":
        return write_png(path, rgb, 8, 2, interlace=True)
    if mode == "interlaced-gray16":
        return write_png(path, rgb[..., :1].astype(np.uint16) * 257, 16, 0, interlace=True)
    if mode == "gray16":
        Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(path)
        return path
    image = Image.fromarray(rgb)
    if mode == "jpeg":
        image.save(path, format="JPEG", quality=90)
    elif mode == "P+transparency":
        image.convert("P").save(path, transparency=0)
    else:
        image.convert(mode).save(path)
    return path
