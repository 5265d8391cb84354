"""Images to ``.lic`` bytes and back: the glue between a codec and the container.

Everything the ``lic encode`` / ``lic decode`` commands do is reachable from here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lic import bitstream
from lic.bitstream import Bitstream, fingerprint_prefix
from lic.checkpoint import load_codec
from lic.codecs import Compressed
from lic.errors import BitstreamError, CheckpointError, LicError, UsageError
from lic.files import atomic_output
from lic.imageio import check_pixels, load_image, save_png, tensor_to_pixels


def resolve_device(name: str) -> torch.device:
    """``"cpu"`` or ``"cuda"[:N]``; asking for CUDA where there is none is a usage error."""
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} requested but no CUDA device is available")
        return torch.device(name)
    raise UsageError(f"unknown device {name!r} (use cpu or cuda)")


def _fingerprint_bytes(codec: nn.Module) -> bytes:
    fingerprint = getattr(codec, "fingerprint", None)
    if fingerprint is None:
        raise CheckpointError("codec has no weights fingerprint: load it with lic.load_codec")
    return fingerprint_prefix(fingerprint)


def encode(codec: nn.Module, images: torch.Tensor) -> bytes:
    """Compress a batch ``(B, 3, H, W)`` in ``[0, 1]`` into container bytes."""
    device = next(codec.parameters()).device
    compressed: Compressed = codec.compress(images.to(device))
    metadata = getattr(codec, "metadata", {}) or {}
    return bitstream.pack(
        Bitstream(
            codec=codec.codec_name,
            fingerprint=_fingerprint_bytes(codec),
            lmbda=metadata.get("lmbda"),
            metric=metadata.get("metric"),
            image_size=compressed.image_size,
            padding=compressed.padding,
            shapes=compressed.shapes,
            strings=compressed.strings,
        )
    )


def check_compatible(stream: Bitstream, codec: nn.Module) -> None:
    """Refuse to decode a file with a codec other than the one that wrote it."""
    expected = _fingerprint_bytes(codec)
    if stream.codec != codec.codec_name or stream.fingerprint != expected:
        raise CheckpointError(
            f"bitstream was written by {stream.codec} weights {stream.fingerprint.hex()}, "
            f"but the checkpoint holds {codec.codec_name} weights {expected.hex()}"
        )


def decode(codec: nn.Module, data: bytes, max_pixels: int | None = None) -> torch.Tensor:
    """Decode container bytes into images ``(B, 3, H, W)`` in ``[0, 1]``.

    Any byte string either decodes or raises a :class:`~lic.errors.LicError`; see
    :func:`decode_stream`.
    """
    return decode_stream(codec, bitstream.unpack(data), max_pixels)


def decode_stream(
    codec: nn.Module, stream: Bitstream, max_pixels: int | None = None
) -> torch.Tensor:
    """Decode a parsed container into images ``(B, 3, H, W)`` in ``[0, 1]``.

    The header is untrusted: the weights must match, the batch's pixels must be within the
    limit (:func:`lic.imageio.max_pixels`), and shapes and padding must be what this codec
    writes for that image size, all before anything is allocated from them.

    Raises:
        CheckpointError: the file was written with other weights.
        BitstreamError: too many pixels, or a payload that does not decode.
    """
    check_compatible(stream, codec)
    height, width = stream.image_size
    what = f"bitstream of {stream.batch_size} x {height}x{width}"
    try:
        check_pixels(stream.batch_size * height * width, what, max_pixels)
    except LicError as exc:
        raise BitstreamError(str(exc)) from None
    compressed = Compressed(
        strings=stream.strings,
        shapes={name: tuple(shape) for name, shape in stream.shapes.items()},
        image_size=stream.image_size,
        padding=stream.padding,
    )
    try:
        return codec.decompress(compressed)
    except (ValueError, RuntimeError, KeyError, IndexError, OverflowError) as exc:
        raise BitstreamError(
            f"payload does not decode with this codec: {' '.join(str(exc).split())[:200]}"
        ) from None


@dataclass
class EncodeReport:
    """What ``lic encode`` prints."""

    output: Path
    num_bytes: int
    height: int
    width: int
    seconds: float
    notice: str | None

    @property
    def bpp(self) -> float:
        return 8 * self.num_bytes / (self.height * self.width)


def encode_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    max_pixels: int | None = None,
    quality: int | None = None,
) -> EncodeReport:
    """Encode one image file into a ``.lic`` file (written atomically).

    Without ``checkpoint`` the default codec shipped with lic codes it, at ``quality``
    (see :mod:`lic.pretrained`).
    """
    from lic import pretrained

    if checkpoint is not None and quality is not None:
        raise UsageError("give --checkpoint or --quality, not both (a checkpoint has one rate)")
    target = resolve_device(device)
    if checkpoint is None:
        checkpoint = pretrained.default_checkpoint(quality)
    image = load_image(source, max_pixels)
    codec = load_codec(checkpoint, device=target)
    start = time.perf_counter()
    data = encode(codec, image.to_tensor())
    seconds = time.perf_counter() - start
    with atomic_output(output) as tmp:
        tmp.write_bytes(data)
    height, width = image.pixels.shape[:2]
    return EncodeReport(Path(output), len(data), height, width, seconds, image.notice)


def read_bitstream_file(path: str | os.PathLike[str]) -> Bitstream:
    """Read and verify a ``.lic`` file."""
    path = Path(path)
    if not path.is_file():
        raise BitstreamError(f"no such file: {path}")
    try:
        return bitstream.unpack(path.read_bytes())
    except BitstreamError as exc:
        raise BitstreamError(f"{path}: {exc}") from None


def decode_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None,
    device: str = "cpu",
    max_pixels: int | None = None,
) -> float:
    """Decode a ``.lic`` file (one image) into a PNG written atomically; returns seconds.

    Without ``checkpoint`` the default weights whose fingerprint the file names are used.
    """
    from lic import pretrained

    target = resolve_device(device)
    stream = read_bitstream_file(source)
    if stream.batch_size != 1:
        raise BitstreamError(
            f"{source}: holds {stream.batch_size} images; decode it from Python with lic.coding.decode"
        )
    if checkpoint is None:
        checkpoint = pretrained.find_by_fingerprint(stream.fingerprint)
    if checkpoint is None:
        raise UsageError(
            f"--checkpoint is required: no installed weights match {stream.codec} "
            f"fingerprint {stream.fingerprint.hex()}"
        )
    codec = load_codec(checkpoint, device=target)
    start = time.perf_counter()
    images = decode_stream(codec, stream, max_pixels)
    seconds = time.perf_counter() - start
    save_png(tensor_to_pixels(images), output)
    return seconds
