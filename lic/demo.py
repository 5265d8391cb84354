"""``lic demo``: the default codec on a few photos, next to JPEG at the same quality.

Each image is encoded to a real ``.lic`` file with the shipped default codec, decoded back from
that file, and measured (bpp from the file size, PSNR over RGB of the 8-bit PNG). Then Pillow's
JPEG (libjpeg, 4:2:0) is searched for its smallest file at least as good in PSNR, so the last
column says how much larger JPEG is for the same quality.

The times are the coding alone: encoding (analysis transform and entropy coding) and decoding
(entropy decoding and synthesis), each measured around the codec call; loading the checkpoint,
reading the image and writing the ``.lic`` and ``.png`` files are not counted.

Without images, ``lic demo`` codes photos from the shared Kodak set, else the few small sample
photos shipped in ``lic/samples/`` (:func:`sample_photos`; see ``SOURCE.md`` there).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lic import coding, pretrained
from lic.errors import UsageError
from lic.evaluation.metrics import psnr_rgb
from lic.imageio import load_image

#: Small crops of Kodak photos that ship with the package (origin and license in SOURCE.md).
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


@dataclass
class DemoRow:
    image: str
    width: int
    height: int
    lic_bytes: int
    psnr: float
    jpeg_bytes: int | None  # None: no JPEG quality reaches the PSNR
    jpeg_quality: int | None
    jpeg_psnr: float | None
    encode_seconds: float  # the codec's encode call only (no checkpoint loading, no file I/O)
    decode_seconds: float  # the codec's decode call only

    @property
    def bpp(self) -> float:
        return 8 * self.lic_bytes / (self.width * self.height)

    @property
    def jpeg_bpp(self) -> float | None:
        return None if self.jpeg_bytes is None else 8 * self.jpeg_bytes / (self.width * self.height)


def _jpeg(pixels: np.ndarray, quality: int) -> tuple[int, float]:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        decoded = np.asarray(image.convert("RGB"))
    return len(buffer.getvalue()), psnr_rgb(pixels, decoded)


def sample_photos() -> list[Path]:
    """The sample photos shipped with lic, by name (empty if the package has none)."""
    return sorted(SAMPLES_DIR.glob("*.png")) if SAMPLES_DIR.is_dir() else []


def jpeg_at_psnr(pixels: np.ndarray, target: float) -> tuple[int, int, float] | None:
    """Smallest JPEG quality (1-100) whose PSNR reaches ``target``: (quality, bytes, psnr).

    Bisection over quality (PSNR rises with it); ``None`` if even quality 100 falls short.
    """
    low, high = 1, 100
    num_bytes, value = _jpeg(pixels, high)
    if value < target:
        return None
    best = (high, num_bytes, value)
    while low <= high:
        middle = (low + high) // 2
        num_bytes, value = _jpeg(pixels, middle)
        if value >= target:
            best = (middle, num_bytes, value)
            high = middle - 1
        else:
            low = middle + 1
    return best


def run_demo(
    images: list[Path],
    output: Path,
    quality: float | None = None,
    device: str = "cpu",
    checkpoint: Path | None = None,
) -> list[DemoRow]:
    """Code ``images`` into ``output`` (``.lic`` and decoded ``.png``) with the default codec at
    ``quality`` (default: the manifest's; any number of its range for a variable-rate default),
    or with the codec checkpoint ``checkpoint`` (a training run's ``codec.ckpt``)."""
    if not images:
        raise UsageError("no images to code")
    if checkpoint is not None and quality is not None:
        raise UsageError("give --quality (a default-codec quality) or --checkpoint, not both")
    output.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        pretrained.default_checkpoint(quality)  # a quality the default codec has, before coding
    rows = []
    for path in images:
        stream, decoded_path = output / f"{path.stem}.lic", output / f"{path.stem}.png"
        # Both report the time of the codec call alone, without loading or writing files.
        report = coding.encode_file(path, stream, checkpoint, device=device, quality=quality)
        decode_seconds = coding.decode_file(stream, decoded_path, checkpoint, device=device)
        original = load_image(path).pixels
        decoded = load_image(decoded_path).pixels
        value = psnr_rgb(original, decoded)
        match = jpeg_at_psnr(original, value)
        rows.append(
            DemoRow(
                path.name,
                report.width,
                report.height,
                report.num_bytes,
                value,
                None if match is None else match[1],
                None if match is None else match[0],
                None if match is None else match[2],
                report.seconds,
                decode_seconds,
            )
        )
    return rows


def format_rows(rows: list[DemoRow]) -> str:
    lines = [
        (
            f"{'image':<16}{'size':>10}{'lic bpp':>9}{'PSNR':>8}{'JPEG bpp':>10}{'JPEG q':>8}"
            f"{'JPEG/lic':>10}{'encode':>9}{'decode':>9}"
        )
    ]
    for r in rows:
        jpeg = (
            ("n/a", "-", "-")
            if r.jpeg_bytes is None
            else (f"{r.jpeg_bpp:.3f}", str(r.jpeg_quality), f"{r.jpeg_bytes / r.lic_bytes:.2f}x")
        )
        lines.append(
            f"{r.image:<16}{f'{r.width}x{r.height}':>10}{r.bpp:>9.3f}{r.psnr:>8.2f}"
            f"{jpeg[0]:>10}{jpeg[1]:>8}{jpeg[2]:>10}"
            f"{r.encode_seconds:>8.2f}s{r.decode_seconds:>8.2f}s"
        )
    matched = [r for r in rows if r.jpeg_bytes is not None]
    total_lic = sum(r.lic_bytes for r in matched)
    if matched:
        ratio = sum(r.jpeg_bytes for r in matched) / total_lic
        lines.append(
            f"{len(rows)} images: JPEG needs {ratio:.2f}x the bytes of lic for the same PSNR"
            f" ({len(matched)} compared)"
        )
    lines.append("encode/decode: seconds of coding alone (not loading the codec or writing files)")
    return "\n".join(lines)
