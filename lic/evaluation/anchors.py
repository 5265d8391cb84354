"""Classical codecs as anchors: bpp from the real encoded bytes, quality from the decoded image.

Pillow codecs: JPEG (libjpeg-turbo), WebP, AVIF, JPEG 2000 (OpenJPEG), JPEG XL
(pillow-jxl-plugin). External codecs are used when their binaries are on ``PATH``: BPG
(``bpgenc``/``bpgdec``). Each anchor sweeps its quality setting over ``settings`` chosen to
cover about 0.05–2 bpp on Kodak.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lic.errors import UsageError


@dataclass(frozen=True)
class Encoded:
    """One image coded by an anchor at one setting."""

    num_bytes: int
    decoded: np.ndarray  # (H, W, 3) uint8


@dataclass(frozen=True)
class Anchor:
    """A classical codec and the settings it is swept over.

    Attributes:
        name: short name used on the command line (``jpeg``, ``webp``...).
        label: name in results files and plots.
        settings: quality settings, from lowest to highest rate.
        code: ``(pixels, setting) -> Encoded``.
        available: whether the codec can run here.
        setting_name: what a setting is (``quality``, ``qp``...).
    """

    name: str
    label: str
    settings: tuple[float, ...]
    code: Callable[[np.ndarray, float], Encoded] = field(repr=False)
    available: Callable[[], bool] = field(repr=False, default=lambda: True)
    setting_name: str = "quality"


def _pillow(
    format_name: str, options: Callable[[float], dict]
) -> Callable[[np.ndarray, float], Encoded]:
    def code(pixels: np.ndarray, setting: float) -> Encoded:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=format_name, **options(setting))
        data = buffer.getvalue()
        with Image.open(io.BytesIO(data)) as image:
            decoded = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
        return Encoded(len(data), decoded)

    return code


def _pillow_can(format_name: str) -> Callable[[], bool]:
    def check() -> bool:
        if format_name == "JXL":
            try:
                import pillow_jxl  # noqa: F401
            except ImportError:
                return False
        from PIL import features

        key = {"JPEG": "jpg", "WEBP": "webp", "AVIF": "avif", "JPEG2000": "jpg_2000"}.get(
            format_name
        )
        return key is None or bool(features.check(key))

    return check


def _bpg(pixels: np.ndarray, qp: float) -> Encoded:
    with tempfile.TemporaryDirectory() as tmp:
        source, stream, output = Path(tmp, "in.png"), Path(tmp, "out.bpg"), Path(tmp, "out.png")
        Image.fromarray(pixels).save(source)
        run = {"check": True, "capture_output": True, "timeout": 600}
        subprocess.run(
            ["bpgenc", "-f", "444", "-q", str(int(qp)), "-o", str(stream), str(source)], **run
        )
        subprocess.run(["bpgdec", "-o", str(output), str(stream)], **run)
        with Image.open(output) as image:
            return Encoded(stream.stat().st_size, np.asarray(image.convert("RGB")).copy())


def _jpeg2000_options(bpp: float) -> dict:
    # OpenJPEG takes a compression ratio against 24-bit RGB.
    return {"quality_mode": "rates", "quality_layers": [24.0 / bpp], "irreversible": True}


ANCHORS: dict[str, Anchor] = {
    a.name: a
    for a in [
        Anchor(
            "jpeg",
            "JPEG (libjpeg-turbo, 4:2:0)",
            (2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
            _pillow("JPEG", lambda q: {"quality": int(q)}),
            _pillow_can("JPEG"),
        ),
        Anchor(
            "webp",
            "WebP (libwebp)",
            (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
            _pillow("WEBP", lambda q: {"quality": int(q), "method": 6}),
            _pillow_can("WEBP"),
        ),
        Anchor(
            "avif",
            "AVIF (libavif)",
            (5, 15, 25, 35, 45, 55, 65, 75, 85, 92),
            _pillow("AVIF", lambda q: {"quality": int(q), "speed": 6, "subsampling": "4:4:4"}),
            _pillow_can("AVIF"),
        ),
        Anchor(
            "jpeg2000",
            "JPEG 2000 (OpenJPEG)",
            (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0),
            _pillow("JPEG2000", _jpeg2000_options),
            _pillow_can("JPEG2000"),
            "target bpp",
        ),
        Anchor(
            "jxl",
            "JPEG XL (libjxl)",
            (5, 15, 25, 35, 45, 55, 65, 75, 85, 92),
            _pillow("JXL", lambda q: {"quality": int(q), "effort": 7}),
            _pillow_can("JXL"),
        ),
        Anchor(
            "bpg",
            "BPG (4:4:4)",
            (51, 47, 43, 40, 37, 34, 31, 28, 25),
            _bpg,
            lambda: bool(shutil.which("bpgenc") and shutil.which("bpgdec")),
            "qp",
        ),
    ]
}


def get_anchor(name: str) -> Anchor:
    """The anchor called ``name``, checked to be usable here."""
    try:
        anchor = ANCHORS[name]
    except KeyError:
        raise UsageError(f"unknown anchor {name!r}; known: {', '.join(ANCHORS)}") from None
    if not anchor.available():
        raise UsageError(f"anchor {name!r} is not available on this machine")
    return anchor
