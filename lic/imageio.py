"""Reading images into 8-bit RGB tensors, and writing them as PNG.

Codecs work on 8-bit RGB. Other inputs are converted, with a one-line notice saying what was
done: grayscale (1, 2, 4, 8 or 16 bit) is replicated to three channels, palettes are expanded,
16-bit samples are scaled to 8 bits (rounding ``v / 257``), alpha is dropped (not composited).
Interlaced PNGs and every PNG bit depth decode through Pillow like any other.

Images larger than :func:`max_pixels` (``DEFAULT_MAX_PIXELS``, 2**25 ≈ 33.5 million pixels,
enough for 8K UHD; raise it with ``LIC_MAX_PIXELS`` or ``--max-pixels``) are refused from the
header, before any pixel is decoded; the same limit bounds what a ``.lic`` header may claim.
"""

from __future__ import annotations

import os
import warnings
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
