"""Large images in bounded memory: coding an image as overlapping tiles, blended back seamlessly.

A codec's memory grows with the image (the default codec needs about 0.3 GB per megapixel to
encode or decode, a teacher several times that; ``scripts/large_images.py``), so an image larger
than the tile size is coded as a grid of tiles, each an independent image to the codec, and the
decoder blends them back. Peak memory is then bounded by the tile size (``--tile``), plus the
image itself.

The grid is a pure function of ``(height, width, tile, overlap)``, so a file records only the
two numbers (:mod:`lic.bitstream`) and encoder and decoder agree on every box. Along each axis
of length ``L > tile`` the image is cut into the fewest tiles of at most ``tile`` pixels
(rounded down to a multiple of 64) that overlap their neighbours by ``overlap`` pixels. All
tiles but the last have the same size, a multiple of 64, so the codec pads none of them (padding
inside the image would be coded for nothing); the last takes the rest. An axis no longer than
``tile`` is one segment: an image that fits in one tile is not tiled at all.

Seams: in each shared band the two tiles are cross-faded with linear weights that sum to one
(a separable partition of unity, so corners of four tiles also sum to one), which hides the
block edge that independent coding leaves. The cost is the overlap coded twice and each tile's
own side information; ``scripts/tiling_cost.py`` measures it as BD-rate on the CLIC images.

This module is torch-free (numpy only): the container reader uses the grid.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from lic.errors import UsageError

#: Default tile side in pixels: images up to 2048 pixels a side (4.2 megapixels) are coded
#: whole; larger ones in tiles, which keeps the default codec near 1.5 GB (README, "Large images").
DEFAULT_TILE = 2048
#: Default shared band between neighbouring tiles, in pixels.
DEFAULT_OVERLAP = 32
#: The codecs pad images to a multiple of this (a ×64 downsampling to the hyper-latent): tiles
#: are cut to multiples of it where they can be, so that no padding is coded inside the image.
ALIGN = 64
#: The smallest tile: one hyper-latent position.
MIN_TILE = ALIGN
#: The largest tile and overlap a file can record (u32 and u16 fields).
MAX_TILE = 2**32 - 1
MAX_OVERLAP = 2**16 - 1


@dataclass(frozen=True)
class Box:
    """One tile: its top-left corner and size in pixels of the whole image."""

    top: int
    left: int
    height: int
    width: int


def check_tiling(tile: int, overlap: int) -> None:
    """Refuse a tiling no grid can be made of: ``tile >= 64``, ``0 <= overlap <= tile / 4``.

    A quarter keeps every core at least as wide as the overlap (a core is more than 3/7 of a
    tile), so no pixel lies in two shared bands and the weights stay a partition of unity.

    Raises:
        ValueError: with a one-line reason.
    """
    if not MIN_TILE <= tile <= MAX_TILE:
        raise ValueError(f"tile size must be {MIN_TILE} to {MAX_TILE} pixels, got {tile}")
    if not 0 <= overlap <= min(tile // 4, MAX_OVERLAP):
        raise ValueError(f"tile overlap must be 0 to {min(tile // 4, MAX_OVERLAP)}, got {overlap}")


def _along(length: int, tile: int, overlap: int) -> int:
    """Tiles along an axis: the fewest of at most ``tile`` (rounded down to 64) pixels."""
    if length <= tile:
        return 1
    cap = tile // ALIGN * ALIGN
    return math.ceil((length - overlap) / (cap - overlap))


def segments(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, size)`` of the tiles along one axis of ``length`` pixels (see module doc)."""
    count = _along(length, tile, overlap)
    if count == 1:
        return [(0, length)]
    covered = length + (count - 1) * overlap  # pixels coded along this axis, bands twice
    size = ALIGN * math.ceil(covered / count / ALIGN)
    last = covered - (count - 1) * size
    if last >= overlap:  # every tile but the last a multiple of ALIGN: no padding to code
        return [(i * (size - overlap), size) for i in range(count - 1)] + [(length - last, last)]
    cuts = [round(i * length / count) for i in range(count + 1)]  # rare: tiny tiles, many
    before, after = overlap // 2, overlap - overlap // 2
    out = []
    for i in range(count):
        start = cuts[i] - (before if i > 0 else 0)
        end = cuts[i + 1] + (after if i < count - 1 else 0)
        out.append((start, end - start))
    return out


def count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles :func:`grid` makes, without listing them (cheap for any size)."""
    return _along(height, tile, overlap) * _along(width, tile, overlap)


def grid(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """The tiles of a ``height × width`` image in raster order (rows, then columns)."""
    check_tiling(tile, overlap)
    return [
        Box(top, left, rows, cols)
        for top, rows in segments(height, tile, overlap)
        for left, cols in segments(width, tile, overlap)
    ]


def _ramp(length: int, start: int, size: int, overlap: int) -> np.ndarray:
    """Weights of one segment along one axis: 1 inside, linear fades across shared bands."""
    weights = np.ones(size, dtype=np.float32)
    if overlap == 0:
        return weights
    fade = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    if start > 0:
        weights[:overlap] = fade
    if start + size < length:
        weights[size - overlap :] = fade[::-1]
    return weights


class Blender:
    """Accumulates decoded tiles (``(h, w, 3)`` float arrays in ``[0, 1]``) into the image.

    Each tile is added with its cross-fade weights as soon as it is decoded, so only one tile is
    held at a time beside the float32 canvas. :meth:`pixels` gives the blended image as 8-bit.
    """

    def __init__(self, height: int, width: int, overlap: int) -> None:
        self.height, self.width, self.overlap = height, width, overlap
        self.canvas = np.zeros((height, width, 3), dtype=np.float32)

    def add(self, box: Box, tile: np.ndarray) -> None:
        rows = _ramp(self.height, box.top, box.height, self.overlap)
        cols = _ramp(self.width, box.left, box.width, self.overlap)
        weights = (rows[:, None] * cols[None, :])[..., None]
        region = self.canvas[box.top : box.top + box.height, box.left : box.left + box.width]
        region += weights * tile.astype(np.float32, copy=False)

    def pixels(self) -> np.ndarray:
        """The blended image, ``(H, W, 3)`` uint8 (rounded as :func:`lic.imageio.tensor_to_pixels`)."""
        return np.clip(np.rint(self.canvas * 255.0), 0, 255).astype(np.uint8)


def tile_setting(tile: int | None = None) -> int:
    """The tile size: ``tile``, else ``$LIC_TILE``, else :data:`DEFAULT_TILE` (0: never tile).

    Raises:
        UsageError: a value that is not 0 or a whole number of at least :data:`MIN_TILE`.
    """
    source = "--tile"
    if tile is None:
        text = os.environ.get("LIC_TILE")
        if text is None:
            return DEFAULT_TILE
        source = "LIC_TILE"
        try:
            tile = int(text)
        except ValueError:
            raise UsageError(f"{source} must be a whole number of pixels, got {text!r}") from None
    if tile != 0 and not MIN_TILE <= tile <= MAX_TILE:
        raise UsageError(f"{source} must be 0 (no tiling) or {MIN_TILE} to {MAX_TILE}, got {tile}")
    return tile
