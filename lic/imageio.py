"""Reading images into 8-bit RGB tensors, and writing them as PNG.

Codecs work on 8-bit RGB. Other inputs are converted, with a one-line notice saying what was
done: grayscale (1, 2, 4, 8 or 16 bit) is replicated to three channels, palettes are expanded,
16-bit samples are scaled to 8 bits (rounding ``v / 257``), alpha is dropped (not composited).
Interlaced PNGs and every PNG bit depth decode through Pillow like any other.

Images larger than :func:`max_pixels` (``DEFAULT_MAX_PIXELS``, 2**25 ≈ 33.5 million pixels,
enough for 8K UHD; raise it with ``LIC_MAX_PIXELS`` or ``--max-pixels``) are refused from the
header, before any pixel is decoded; the same limit bounds what a ``.lic`` header may claim.

PNG files are checked chunk by chunk before Pillow decodes them (:func:`check_png`), since
Pillow does not verify the CRC of image data: a corrupt file is refused, as libpng refuses it.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lic.errors import ImageError, LicError
from lic.files import atomic_output

#: Default limit on the pixels of one image (and of a decoded batch): 2**25.
DEFAULT_MAX_PIXELS = 2**25


def max_pixels(override: int | None = None) -> int:
    """The pixel limit: ``override``, else ``$LIC_MAX_PIXELS``, else ``DEFAULT_MAX_PIXELS``."""
    if override is not None:
        value, source = override, "--max-pixels"
    else:
        text = os.environ.get("LIC_MAX_PIXELS")
        if text is None:
            return DEFAULT_MAX_PIXELS
        source = "LIC_MAX_PIXELS"
        try:
            value = int(text)
        except ValueError:
            raise LicError(f"{source} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise LicError(f"{source} must be a positive integer, got {value}")
    return value


def check_pixels(count: int, what: str, limit: int | None = None) -> None:
    """Refuse ``count`` pixels above the limit, naming how to raise it."""
    allowed = max_pixels(limit)
    if count > allowed:
        raise ImageError(
            f"{what}: {count:,} pixels exceeds the limit of {allowed:,} "
            "(raise it with --max-pixels or LIC_MAX_PIXELS)"
        )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Bit depths allowed for each PNG colour type (PNG specification, table 11.1).
PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}

_PNG_MAX_LENGTH = 2**31 - 1
_CRITICAL = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}


def _looks_like_png(head: bytes) -> bool:
    """A PNG signature, or one damaged in a few bytes (bit errors, CR/LF conversion)."""
    same = sum(a == b for a, b in zip(head, PNG_SIGNATURE))
    return same >= 5 or head[1:4] == b"PNG"


def check_png(path: str | os.PathLike[str]) -> bool:
    """Walk the chunks of a PNG file before anything decodes it; False if it is no PNG.

    Checked, as libpng does: the 8-byte signature; every chunk's length, type and CRC32
    (ancillary chunks included); IHDR first, once, 13 bytes, with a non-zero size, a valid
    bit depth for its colour type (:data:`PNG_BIT_DEPTHS`) and methods 0; PLTE (required for
    palette images) before the image data with 1 to ``2**bit_depth`` entries; at least one
    IDAT, all consecutive and not all empty; no unknown critical chunk; IEND, empty, last,
    with nothing after it. The file is read in blocks, never whole.

    Raises:
        ImageError: ``"{path}: corrupt PNG: {problem}"``, in one line.
    """
    path = Path(path)

    def corrupt(problem: str) -> ImageError:
        return ImageError(f"{path}: corrupt PNG: {problem}")

    with path.open("rb") as file:
        head = file.read(8)
        if head != PNG_SIGNATURE:
            if _looks_like_png(head):
                raise corrupt(f"bad signature {head.hex()} (expected {PNG_SIGNATURE.hex()})")
            return False
        header: tuple[int, ...] | None = None
        seen: set[bytes] = set()
        last = b""
        idat_data = 0
        idat_ended = False
        offset = 8
        while True:
            prefix = file.read(8)
            if not prefix:
                raise corrupt("no IEND chunk (file truncated?)")
            if len(prefix) < 8:
                raise corrupt(f"truncated chunk header at byte {offset}")
            length, kind = struct.unpack(">I", prefix[:4])[0], prefix[4:]
            name = kind.decode("latin-1")
            if not kind.isalpha():
                raise corrupt(f"invalid chunk type {kind!r} at byte {offset}")
            if length > _PNG_MAX_LENGTH:
                raise corrupt(f"{name} chunk at byte {offset} claims {length:,} bytes")
            if not seen and kind != b"IHDR":
                raise corrupt(f"first chunk is {name}, not IHDR")
            if kind == b"IHDR" and length != 13:
                raise corrupt(f"IHDR chunk of {length} bytes (expected 13)")
            if kind == b"PLTE" and (length % 3 or not 3 <= length <= 768):
                raise corrupt(f"PLTE chunk of {length} bytes")
            crc = zlib.crc32(kind)
            keep = kind in (b"IHDR", b"PLTE")
            kept = bytearray()
            left = length
            while left:
                block = file.read(min(left, 1 << 20))
                if not block:
                    raise corrupt(f"{name} chunk at byte {offset} is truncated")
                crc = zlib.crc32(block, crc)
                if keep:
                    kept += block
                left -= len(block)
            stored = file.read(4)
            if len(stored) < 4:
                raise corrupt(f"{name} chunk at byte {offset} is truncated (no CRC)")
            if struct.unpack(">I", stored)[0] != crc:
                raise corrupt(f"{name} chunk at byte {offset} fails its CRC")
            # Order and contents.
            if kind == b"IHDR":
                if seen:
                    raise corrupt("second IHDR chunk")
                header = struct.unpack(">IIBBBBB", kept)
                width, height, depth, colour, compression, filtering, interlace = header
                if not (0 < width <= _PNG_MAX_LENGTH and 0 < height <= _PNG_MAX_LENGTH):
                    raise corrupt(f"image size {width}x{height}")
                if colour not in PNG_BIT_DEPTHS:
                    raise corrupt(f"colour type {colour}")
                if depth not in PNG_BIT_DEPTHS[colour]:
                    raise corrupt(f"bit depth {depth} with colour type {colour}")
                if compression or filtering or interlace > 1:
                    raise corrupt(
                        f"compression {compression}, filter {filtering}, interlace {interlace}"
                    )
            elif kind == b"PLTE":
                if b"PLTE" in seen:
                    raise corrupt("second PLTE chunk")
                if b"IDAT" in seen:
                    raise corrupt("PLTE chunk after the image data")
                if header[3] == 3 and length > 3 << header[2]:
                    raise corrupt(
                        f"PLTE chunk of {length // 3} entries for {header[2]}-bit indexes"
                    )
            elif kind == b"IDAT":
                if idat_ended:
                    raise corrupt("IDAT chunks are not consecutive")
                if header[3] == 3 and b"PLTE" not in seen:
                    raise corrupt("palette image without a PLTE chunk")
                idat_data += length
            elif kind == b"IEND":
                if b"IDAT" not in seen:
                    raise corrupt("no IDAT chunk")
                if not idat_data:
                    raise corrupt("IDAT chunks hold no data")
                if length:
                    raise corrupt(f"IEND chunk of {length} bytes")
                trailing = len(file.read(1 << 20))
                if trailing:
                    raise corrupt(f"data after the IEND chunk (at byte {offset + 12})")
                return True
            elif kind[0:1].isupper() and kind not in _CRITICAL:
                raise corrupt(f"unknown critical chunk {name}")
            if last == b"IDAT" and kind != b"IDAT":
                idat_ended = True
            seen.add(kind)
            last = kind
            offset += 12 + length


@dataclass
class LoadedImage:
    """An image as 8-bit RGB, with a note of any conversion applied (None if none)."""

    pixels: np.ndarray  # (H, W, 3) uint8
    notice: str | None = None

    def to_tensor(self) -> torch.Tensor:
        """``(1, 3, H, W)`` float32 in ``[0, 1]``."""
        return torch.from_numpy(self.pixels).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def _sixteen_bit_to_8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _is_16bit_rgb(image: Image.Image) -> bool:
    """Pillow decodes 48/64-bit PNGs straight to 8-bit RGB(A); only the raw mode says 16."""
    tiles = getattr(image, "tile", None) or []
    if not tiles:
        return False
    args = tiles[0].args
    raw_mode = args[0] if isinstance(args, tuple) else args
    return isinstance(raw_mode, str) and raw_mode.endswith(";16B")


def convert_to_rgb8(image: Image.Image) -> LoadedImage:
    """Convert any Pillow image to 8-bit RGB, describing the conversion."""
    mode = image.mode
    sixteen = _is_16bit_rgb(image)
    image.load()
    if mode == "RGB":
        pixels = np.asarray(image, dtype=np.uint8)
        return LoadedImage(pixels.copy(), "16-bit RGB reduced to 8-bit" if sixteen else None)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        gray = _sixteen_bit_to_8(np.asarray(image))
        return LoadedImage(
            np.repeat(gray[..., None], 3, axis=2), "16-bit grayscale converted to 8-bit RGB"
        )
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return LoadedImage(
            np.repeat(gray[..., None], 3, axis=2), "floating-point grayscale converted to 8-bit RGB"
        )
    has_alpha = (
        mode in ("RGBA", "LA", "PA", "La", "RGBa")
        or (mode == "P" and "transparency" in image.info)
        or (mode in ("L", "RGB", "1") and "transparency" in image.info)
    )
    descriptions = {
        "1": "1-bit image",
        "L": "grayscale image",
        "LA": "grayscale image",
        "P": "palette image",
        "PA": "palette image",
        "RGBA": "RGBA image",
        "CMYK": "CMYK image",
        "YCbCr": "YCbCr image",
        "LAB": "Lab image",
        "HSV": "HSV image",
    }
    what = descriptions.get(mode, f"{mode} image")
    if sixteen:
        what = "16-bit " + what
    rgb = image.convert("RGBA" if mode == "P" and has_alpha else "RGB")
    if rgb.mode == "RGBA":
        rgb = rgb.convert("RGB")
    note = f"{what} converted to 8-bit RGB" + (" (alpha dropped)" if has_alpha else "")
    return LoadedImage(np.asarray(rgb, dtype=np.uint8).copy(), note)


def load_image(path: str | os.PathLike[str], limit: int | None = None) -> LoadedImage:
    """Read an image file as 8-bit RGB.

    Args:
        path: image file (anything Pillow reads; the first frame of an animation).
        limit: pixel limit (default :func:`max_pixels`), checked from the header.

    Raises:
        ImageError: missing, unreadable, unsupported, corrupt or too large a file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"no such image file: {path}")
    try:
        check_png(path)
        with warnings.catch_warnings():
            # lic applies its own limit below; Pillow's bomb warning would only duplicate it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
        with image:
            width, height = image.size
            check_pixels(width * height, f"{path} ({width}x{height})", limit)
            return convert_to_rgb8(image)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image format Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused, too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({' '.join(str(exc).split())})") from None


def tensor_to_pixels(x: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` or ``(1, 3, H, W)`` in ``[0, 1]`` to ``(H, W, 3)`` uint8 (rounded)."""
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    return x.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def save_png(pixels: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write ``(H, W, 3)`` uint8 pixels to a PNG atomically."""
    with atomic_output(path) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")
