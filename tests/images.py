"""Test images in every input form lic accepts, written by the tests themselves."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_png_rgb16(path: Path, pixels: np.ndarray) -> None:
    """A 48-bit RGB PNG, written by hand (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


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
