"""The ``.lic`` container: a versioned, self-checking file around a codec's strings.

It knows bytes, not networks. Layout (big-endian)::

    offset  size  field
    0       4     magic  b"\\x89LIC"
    4       1     format version (2)
    5       1     flags: bit 0 = a quality field follows the lambda; bit 1 = tiled; others 0
    6       1     metric: 0 unknown, 1 mse, 2 ms-ssim
    7       4     lambda, float32 (NaN when unknown)
    (11     4     quality, float32: only with flag bit 0, for variable-rate codecs)
    11      8     weights fingerprint (first 8 bytes of the checkpoint's sha256)
    19      1+n   codec registry name (u8 length, UTF-8)
            2     batch size B (u16, >= 1)
            4+4   original height, width (u32 each)
            4×2   padding left, right, top, bottom (u16 each)
            1     number of latents L
            L×    latent name (u8 length, UTF-8), ndim (u8), ndim × u32 spatial dims
            L×B×  string (u32 length, bytes), latents in header order, images in batch order
    end-4   4     CRC32 of every byte before it

A tiled file (flag bit 1, :mod:`lic.tiling`; batch size 1) has, after the original height and
width, the tiling: tile size (u32) and overlap (u16). Then, for each tile of the grid those
give, in raster order, the same fields as above from the padding on (padding, latents, one
string per latent): each tile is an image of its own to the codec, with the header's codec,
λ and quality.

A file is checked in this order: magic, version, CRC, then the fields; every length is checked
against the bytes actually present before anything is read or allocated. Files of fixed-rate
codecs have no quality field and flags 0, byte for byte as before the field existed.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from lic import tiling as tiling_grid
from lic.errors import BitstreamError

MAGIC = b"\x89LIC"
#: 2: entropy parameters in fixed point (lic.codecs.exact); version-1 files used float ones
#: and cannot be decoded reliably by this decoder, so they are refused by version.
FORMAT_VERSION = 2
#: Bytes of the weights fingerprint (a sha256, :func:`lic.checkpoint.weights_fingerprint`) that a
#: file carries, and so that identify weights wherever they are shown.
FINGERPRINT_SIZE = 8
#: Header flag: a float32 quality follows the lambda (variable-rate codecs).
FLAG_QUALITY = 0x01
#: Header flag: the image is coded in tiles (:mod:`lic.tiling`).
FLAG_TILED = 0x02
#: The distortions a codec is trained for (``RateDistortionLoss``, checkpoint metadata). A file
#: codes them by position from 1 (0: unknown), so append to this tuple, never reorder it.
METRICS = ("mse", "ms-ssim")
_METRICS = {None: 0, **{name: code for code, name in enumerate(METRICS, start=1)}}
_METRIC_NAMES = {code: name for name, code in _METRICS.items()}
_MIN_SIZE = 4 + 1 + 1 + 1 + 4 + FINGERPRINT_SIZE + 1 + 2 + 8 + 8 + 1 + 4


def fingerprint_prefix(fingerprint: str) -> bytes:
    """The first :data:`FINGERPRINT_SIZE` bytes of a hex weights fingerprint (what files carry)."""
    return bytes.fromhex(fingerprint)[:FINGERPRINT_SIZE]


def short_fingerprint(fingerprint: str) -> str:
    """A hex weights fingerprint as shown to people: the hex of :func:`fingerprint_prefix`."""
    return fingerprint[: 2 * FINGERPRINT_SIZE]


@dataclass(frozen=True)
class Bitstream:
    """Everything a ``.lic`` file holds.

    Attributes:
        codec: registry name of the codec that wrote it.
        fingerprint: first bytes of that codec's weights fingerprint.
        lmbda: rate–distortion lambda of those weights (None if unknown).
        metric: distortion those weights were trained for (None if unknown).
        image_size: original ``(height, width)``.
        padding: ``(left, right, top, bottom)``.
        shapes: per latent name, its spatial shape.
        strings: per latent name, one string per image (all latents have the same count).
        quality: the quality a variable-rate codec coded at (None: a fixed-rate codec).
        tiling: ``(tile, overlap)`` of a tiled file (None: coded whole).
        tiles: of a tiled file, one :class:`Bitstream` per tile of
            :func:`lic.tiling.grid` (in its order), each with that tile's size and the same
            codec fields; the tiled stream's own padding, shapes and strings are empty.
    """

    codec: str
    fingerprint: bytes
    lmbda: float | None
    metric: str | None
    image_size: tuple[int, int]
    padding: tuple[int, int, int, int]
    shapes: dict[str, tuple[int, ...]]
    strings: dict[str, list[bytes]]
    quality: float | None = None
    tiling: tuple[int, int] | None = None
    tiles: tuple[Bitstream, ...] = ()

    @property
    def batch_size(self) -> int:
        if self.tiling is not None:
            return 1
        return len(next(iter(self.strings.values())))

    def tiled(self, tiling: tuple[int, int], tiles: list[Bitstream]) -> Bitstream:
        """This stream's header around coded ``tiles`` (for :func:`pack`)."""
        return replace(
            self, padding=(0, 0, 0, 0), shapes={}, strings={}, tiling=tiling, tiles=tuple(tiles)
        )


def _name(text: str, what: str) -> bytes:
    data = text.encode("utf-8")
    if not 0 < len(data) < 256:
        raise BitstreamError(f"{what} must be 1 to 255 bytes of UTF-8, got {len(data)}")
    return struct.pack(">B", len(data)) + data


def pack(stream: Bitstream) -> bytes:
    """Serialise a :class:`Bitstream` (validating it) into the container bytes."""
    if len(stream.fingerprint) != FINGERPRINT_SIZE:
        raise BitstreamError(f"fingerprint must be {FINGERPRINT_SIZE} bytes")
    if stream.metric not in _METRICS:
        raise BitstreamError(f"unknown metric {stream.metric!r}")
    height, width = stream.image_size
    lmbda = math.nan if stream.lmbda is None else stream.lmbda
    if stream.quality is not None and not math.isfinite(stream.quality):
        raise BitstreamError(f"quality must be a finite number, got {stream.quality}")
    flags = (0 if stream.quality is None else FLAG_QUALITY) | (
        0 if stream.tiling is None else FLAG_TILED
    )
    out = bytearray(MAGIC)
    out += struct.pack(">BBBf", FORMAT_VERSION, flags, _METRICS[stream.metric], lmbda)
    if stream.quality is not None:
        out += struct.pack(">f", stream.quality)
    out += stream.fingerprint
    out += _name(stream.codec, "codec name")
    if stream.tiling is None:
        out += struct.pack(">HII", _batch(stream), height, width)
        _pack_body(out, stream)
    else:
        tile, overlap = stream.tiling
        try:
            boxes = tiling_grid.grid(height, width, tile, overlap)
        except ValueError as exc:
            raise BitstreamError(str(exc)) from None
        if [(t.image_size) for t in stream.tiles] != [(b.height, b.width) for b in boxes]:
            raise BitstreamError("the tiles do not match the grid of the image size and tiling")
        out += struct.pack(">HIIIH", 1, height, width, tile, overlap)
        for part in stream.tiles:
            if _batch(part) != 1:
                raise BitstreamError("a tile holds one string per latent")
            _pack_body(out, part)
    out += struct.pack(">I", zlib.crc32(out))
    return bytes(out)


def _batch(stream: Bitstream) -> int:
    if set(stream.shapes) != set(stream.strings) or not stream.strings:
        raise BitstreamError("every latent needs both a shape and strings")
    counts = {len(strings) for strings in stream.strings.values()}
    if len(counts) != 1 or not 1 <= (batch := counts.pop()) < 2**16:
        raise BitstreamError("every latent must hold one string per image (1 to 65535 images)")
    return batch


def _pack_body(out: bytearray, stream: Bitstream) -> None:
    """Padding, latents and strings of one coded image (or tile)."""
    out += struct.pack(">4H", *stream.padding)
    out += struct.pack(">B", len(stream.shapes))
    for name, shape in stream.shapes.items():
        out += _name(name, "latent name") + struct.pack(f">B{len(shape)}I", len(shape), *shape)
    for name in stream.shapes:
        for string in stream.strings[name]:
            out += struct.pack(">I", len(string)) + string


class _Reader:
    """Bounds-checked sequential reads; running out of bytes is a clear error."""

    def __init__(self, data: bytes, end: int) -> None:
        self.data, self.pos, self.end = data, 0, end

    def take(self, size: int, what: str) -> bytes:
        if size > self.end - self.pos:
            raise BitstreamError(
                f"truncated: {what} needs {size} bytes, {self.end - self.pos} left"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def name(self, what: str) -> str:
        (length,) = self.unpack(">B", what)
        try:
            return self.take(length, what).decode("utf-8")
        except UnicodeDecodeError:
            raise BitstreamError(f"{what} is not valid UTF-8") from None


def read_version(data: bytes) -> int:
    """Check the magic bytes and return the format version (any, even unsupported)."""
    if len(data) < 5 or data[:4] != MAGIC:
        raise BitstreamError("not a lic bitstream (wrong magic bytes)")
    return data[4]


def unpack(data: bytes) -> Bitstream:
    """Parse and verify container bytes.

    Raises:
        BitstreamError: wrong magic, unsupported version, CRC mismatch, truncation, or
            inconsistent fields.
    """
    version = read_version(data)
    if version != FORMAT_VERSION:
        raise BitstreamError(
            f"unsupported bitstream format version {version} (this lic reads version {FORMAT_VERSION})"
        )
    if len(data) < _MIN_SIZE:
        raise BitstreamError(f"truncated: {len(data)} bytes is shorter than any valid file")
    (stored,) = struct.unpack(">I", data[-4:])
    computed = zlib.crc32(data[:-4])
    if stored != computed:
        raise BitstreamError(
            f"CRC32 mismatch (stored {stored:08x}, computed {computed:08x}): file is corrupt or truncated"
        )
    reader = _Reader(data, len(data) - 4)
    reader.take(5, "magic and version")
    flags, metric_code, lmbda = reader.unpack(">BBf", "header")
    if flags & ~(FLAG_QUALITY | FLAG_TILED):
        raise BitstreamError(f"unknown header flags {flags:#04x}")
    quality = None
    if flags & FLAG_QUALITY:
        (quality,) = reader.unpack(">f", "quality")
        if not math.isfinite(quality):
            raise BitstreamError(f"quality field is not a finite number ({quality})")
    if metric_code not in _METRIC_NAMES:
        raise BitstreamError(f"unknown metric code {metric_code}")
    fingerprint = reader.take(FINGERPRINT_SIZE, "fingerprint")
    codec = reader.name("codec name")
    batch, height, width = reader.unpack(">HII", "image size")
    if batch == 0 or height == 0 or width == 0:
        raise BitstreamError(f"empty image: batch {batch}, size {height}x{width}")
    header = Bitstream(
        codec=codec,
        fingerprint=fingerprint,
        lmbda=None if math.isnan(lmbda) else lmbda,
        metric=_METRIC_NAMES[metric_code],
        image_size=(height, width),
        padding=(0, 0, 0, 0),
        shapes={},
        strings={},
        quality=quality,
    )
    if flags & FLAG_TILED:
        stream = _read_tiles(reader, header, batch)
    else:
        stream = _read_body(reader, header, batch)
    if reader.pos != reader.end:
        raise BitstreamError(f"{reader.end - reader.pos} unexpected bytes after the last string")
    return stream


#: The fewest bytes a tile can take: padding, a latent count, one latent of rank 0, one string.
_MIN_TILE_SIZE = 8 + 1 + 2 + 1 + 4


def _read_tiles(reader: _Reader, header: Bitstream, batch: int) -> Bitstream:
    if batch != 1:
        raise BitstreamError(f"a tiled file holds one image, not {batch}")
    tile, overlap = reader.unpack(">IH", "tiling")
    height, width = header.image_size
    try:
        tiling_grid.check_tiling(tile, overlap)
    except ValueError as exc:
        raise BitstreamError(f"tiling: {exc}") from None
    needed = tiling_grid.count(height, width, tile, overlap)
    if needed * _MIN_TILE_SIZE > reader.end - reader.pos:
        raise BitstreamError(f"truncated: {needed} tiles cannot fit in the bytes left")
    tiles = [
        _read_body(reader, replace(header, image_size=(box.height, box.width)), 1)
        for box in tiling_grid.grid(height, width, tile, overlap)
    ]
    return header.tiled((tile, overlap), tiles)


def _read_body(reader: _Reader, header: Bitstream, batch: int) -> Bitstream:
    """Padding, latents and strings of one coded image (or tile), around ``header``'s fields."""
    padding = reader.unpack(">4H", "padding")
    (num_latents,) = reader.unpack(">B", "latent count")
    if num_latents == 0:
        raise BitstreamError("no latents")
    shapes: dict[str, tuple[int, ...]] = {}
    for _ in range(num_latents):
        name = reader.name("latent name")
        (ndim,) = reader.unpack(">B", "latent rank")
        if name in shapes:
            raise BitstreamError(f"latent {name!r} appears twice")
        shapes[name] = reader.unpack(f">{ndim}I", f"shape of latent {name!r}")
    strings: dict[str, list[bytes]] = {}
    for name in shapes:
        strings[name] = []
        for _ in range(batch):
            (length,) = reader.unpack(">I", f"length of a {name!r} string")
            strings[name].append(reader.take(length, f"{name!r} string"))
    return replace(header, padding=tuple(padding), shapes=shapes, strings=strings)


def read_file(path: str | os.PathLike[str]) -> Bitstream:
    """Read and verify a ``.lic`` file (bytes only: no torch, so ``lic info`` starts fast)."""
    path = Path(path)
    if not path.is_file():
        raise BitstreamError(f"no such file: {path}")
    try:
        return unpack(path.read_bytes())
    except BitstreamError as exc:
        raise BitstreamError(f"{path}: {exc}") from None
