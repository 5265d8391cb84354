"""Images to ``.lic`` bytes and back: the glue between a codec and the container.

Everything the ``lic encode`` / ``lic decode`` commands do is reachable from here.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lic import bitstream, tiling
from lic.bitstream import Bitstream, fingerprint_prefix
from lic.checkpoint import load_codec
from lic.codecs import Compressed
from lic.codecs.refine import Refinement, refine_latents
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


def encode(
    codec: nn.Module,
    images: torch.Tensor,
    quality: float | None = None,
    tile: int | None = None,
    overlap: int = tiling.DEFAULT_OVERLAP,
    refine: int = 0,
) -> bytes:
    """Compress a batch ``(B, 3, H, W)`` in ``[0, 1]`` into container bytes.

    A variable-rate codec codes at ``quality`` (default: its middle level); the file records
    the quality and the λ the codec was trained for there. Fixed-rate codecs take no quality.

    A single image larger than ``tile`` pixels on a side (default :func:`lic.tiling.tile_setting`;
    0: never) is coded in overlapping tiles one at a time, so memory is bounded by the tile
    size (:mod:`lic.tiling`); the file records the tiling.

    ``refine`` > 0 refines the latents of each image (or tile) by that many gradient steps on
    the codec's rate–distortion objective before coding them (:mod:`lic.codecs.refine`):
    slower encoding, the same decoder.
    """
    tile = tiling.tile_setting(tile)
    height, width = images.shape[-2:]
    if tile and images.shape[0] == 1 and max(height, width) > tile:
        try:
            boxes = tiling.grid(height, width, tile, overlap)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        parts = [
            _stream(
                codec,
                images[..., b.top : b.top + b.height, b.left : b.left + b.width],
                quality,
                refine,
            )
            for b in boxes
        ]
        header = replace(parts[0], image_size=(height, width))
        return bitstream.pack(header.tiled((tile, overlap), parts))
    return bitstream.pack(_stream(codec, images, quality, refine))


def _stream(
    codec: nn.Module, images: torch.Tensor, quality: float | None, refine: int = 0
) -> Bitstream:
    """Code ``images`` whole into a :class:`Bitstream` (see :func:`encode`)."""
    device = next(codec.parameters()).device
    images = images.to(device)
    if not getattr(codec, "variable_rate", False):
        if quality is not None:
            raise UsageError(f"{codec.codec_name} is a fixed-rate codec: it takes no quality")
    else:
        try:
            quality = codec.check_quality(quality)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    latents = None
    if refine:
        try:
            result = refine_latents(codec, images, quality, Refinement(steps=refine))
        except ValueError as exc:
            raise UsageError(f"--refine: {exc}") from None
        latents = (result.y, result.z)
    compressed: Compressed = codec.compress(images, quality=quality, latents=latents)
    metadata = getattr(codec, "metadata", {}) or {}
    lmbda = metadata.get("lmbda")
    if compressed.quality is not None:
        lmbda = codec.lmbda_at(compressed.quality)
    return Bitstream(
        codec=codec.codec_name,
        fingerprint=_fingerprint_bytes(codec),
        lmbda=lmbda,
        metric=metadata.get("metric"),
        image_size=compressed.image_size,
        padding=compressed.padding,
        shapes=compressed.shapes,
        strings=compressed.strings,
        quality=compressed.quality,
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


def decode_pixels(codec: nn.Module, stream: Bitstream, max_pixels: int | None = None) -> np.ndarray:
    """Decode a one-image container into ``(H, W, 3)`` uint8 pixels, tile by tile if tiled.

    Only one tile's tensors are alive at a time beside the image's float32 canvas.
    """
    if stream.tiling is None:
        return tensor_to_pixels(decode_stream(codec, stream, max_pixels))
    return _blend(codec, stream, max_pixels).pixels()


def _blend(codec: nn.Module, stream: Bitstream, max_pixels: int | None) -> tiling.Blender:
    height, width = stream.image_size
    _check_header(stream, codec, max_pixels)
    tile, overlap = stream.tiling
    blender = tiling.Blender(height, width, overlap)
    for box, part in zip(tiling.grid(height, width, tile, overlap), stream.tiles, strict=True):
        decoded = decode_stream(codec, part, max_pixels)
        blender.add(box, decoded[0].permute(1, 2, 0).cpu().numpy())
    return blender


def _check_header(stream: Bitstream, codec: nn.Module, max_pixels: int | None) -> None:
    """The weights match and the batch's pixels are within the limit."""
    check_compatible(stream, codec)
    height, width = stream.image_size
    what = f"bitstream of {stream.batch_size} x {height}x{width}"
    try:
        check_pixels(stream.batch_size * height * width, what, max_pixels)
    except LicError as exc:
        raise BitstreamError(str(exc)) from None


def decode_stream(
    codec: nn.Module, stream: Bitstream, max_pixels: int | None = None
) -> torch.Tensor:
    """Decode a parsed container into images ``(B, 3, H, W)`` in ``[0, 1]``.

    The header is untrusted: the weights must match, the batch's pixels must be within the
    limit (:func:`lic.imageio.max_pixels`), and shapes and padding must be what this codec
    writes for that image size, all before anything is allocated from them. A tiled stream
    is decoded tile by tile and blended (:mod:`lic.tiling`).

    Raises:
        CheckpointError: the file was written with other weights.
        BitstreamError: too many pixels, or a payload that does not decode.
    """
    if stream.tiling is not None:
        canvas = _blend(codec, stream, max_pixels).canvas
        return torch.from_numpy(canvas).permute(2, 0, 1)[None].clamp_(0, 1)
    _check_header(stream, codec, max_pixels)
    if getattr(codec, "variable_rate", False) or stream.quality is not None:
        try:
            if stream.quality is None:
                raise ValueError(f"{codec.codec_name} is variable-rate but the file gives none")
            if not hasattr(codec, "check_quality"):
                raise ValueError(f"{codec.codec_name} is a fixed-rate codec")
            codec.check_quality(stream.quality)
        except ValueError as exc:
            raise BitstreamError(f"quality field: {exc}") from None
    compressed = Compressed(
        strings=stream.strings,
        shapes={name: tuple(shape) for name, shape in stream.shapes.items()},
        image_size=stream.image_size,
        padding=stream.padding,
        quality=stream.quality,
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
    quality: float | None = None
    psnr: float | None = None
    search: str | None = None

    @property
    def bpp(self) -> float:
        return 8 * self.num_bytes / (self.height * self.width)


@dataclass
class Trial:
    """One encode of a quality search: the quality, the file's bytes, its bpp and PSNR."""

    quality: float | None
    data: bytes
    bpp: float
    psnr: float | None


def _trial(
    codec: nn.Module,
    image: torch.Tensor,
    quality: float | None,
    psnr: bool,
    label=None,
    tile: int | None = None,
    refine: int = 0,
) -> Trial:
    data = encode(codec, image, quality, tile=tile, refine=refine)
    bpp = 8 * len(data) / (image.shape[-2] * image.shape[-1])
    value = None
    if psnr:
        pixels = image.shape[-2] * image.shape[-1]
        decoded = decode_pixels(codec, bitstream.unpack(data), max_pixels=pixels)
        original = tensor_to_pixels(image)
        mse = float(((decoded.astype("float64") - original) ** 2).mean())
        value = 10 * math.log10(255**2 / max(mse, 1e-12))
    return Trial(quality if label is None else label, data, bpp, value)


def search_quality(
    codecs: list[nn.Module],
    image: torch.Tensor,
    target_bpp: float | None = None,
    target_psnr: float | None = None,
    tolerance: float = 0.01,
    max_encodes: int = 12,
    labels: list[float] | None = None,
    psnr_tolerance: float = 0.05,
    tile: int | None = None,
    refine: int = 0,
) -> tuple[Trial, int]:
    """Find the quality that meets a target: a file size or a quality level.

    ``--target-bpp B`` takes the largest quality whose file is at most ``B`` bits per pixel
    (cwebp ``-size``); ``--target-psnr P`` the smallest quality whose decoded image reaches
    ``P`` dB (cwebp ``-psnr``). A variable-rate codec (one in ``codecs``) is bisected over its
    continuous quality, assuming rate and PSNR rise with it, until the result is within
    ``tolerance`` (relative, for bpp) or ``psnr_tolerance`` (dB) of the target or ``max_encodes``
    encodes are spent; fixed-rate codecs (several, lowest rate first) are tried in turn. When
    no quality meets the target, the nearest reachable one is returned.

    Args:
        labels: the quality numbers of fixed-rate ``codecs`` (reported in the chosen trial).
        tile: the tile size every encode uses (:func:`encode`).
        refine: refinement steps of every encode (:func:`encode`).

    Returns:
        The chosen trial and how many encodes the search took.
    """
    if (target_bpp is None) == (target_psnr is None):
        raise UsageError("give one of --target-bpp and --target-psnr")
    target = target_bpp if target_bpp is not None else target_psnr
    if not (math.isfinite(target) and target > 0):
        raise UsageError(f"the target must be a positive number, got {target}")
    by_psnr = target_psnr is not None

    def value(trial: Trial) -> float:
        return trial.psnr if by_psnr else trial.bpp

    def meets(trial: Trial) -> bool:
        return value(trial) >= target if by_psnr else value(trial) <= target

    def close(trial: Trial) -> bool:
        gap = value(trial) - target
        return abs(gap) <= (psnr_tolerance if by_psnr else tolerance * target)

    encodes = 0
    if len(codecs) == 1 and getattr(codecs[0], "variable_rate", False):
        codec = codecs[0]
        low, high = codec.quality_range
        trials = {}
        for quality in (low, high):
            trials[quality] = _trial(codec, image, quality, by_psnr, tile=tile, refine=refine)
            encodes += 1
        if not meets(trials[low] if not by_psnr else trials[high]):
            return (trials[low] if not by_psnr else trials[high]), encodes  # out of reach
        if meets(trials[high] if not by_psnr else trials[low]):
            return (trials[high] if not by_psnr else trials[low]), encodes  # every quality meets
        best = trials[low] if not by_psnr else trials[high]
        while encodes < max_encodes and not close(best):
            middle = _trial(codec, image, (low + high) / 2, by_psnr, tile=tile, refine=refine)
            encodes += 1
            if meets(middle):
                best = middle
                low, high = (middle.quality, high) if not by_psnr else (low, middle.quality)
            else:
                low, high = (low, middle.quality) if not by_psnr else (middle.quality, high)
        return best, encodes
    trials = []
    for index, codec in enumerate(codecs):
        label = labels[index] if labels else None
        trials.append(_trial(codec, image, None, by_psnr, label, tile=tile, refine=refine))
        encodes += 1
    meeting = [t for t in trials if meets(t)]
    if not meeting:  # nearest reachable: the smallest file, or the best PSNR
        return (trials[0] if not by_psnr else trials[-1]), encodes
    return (meeting[-1] if not by_psnr else meeting[0]), encodes


def encode_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    max_pixels: int | None = None,
    quality: float | None = None,
    target_bpp: float | None = None,
    target_psnr: float | None = None,
    tile: int | None = None,
    refine: int = 0,
) -> EncodeReport:
    """Encode one image file into a ``.lic`` file (written atomically).

    Without ``checkpoint`` the default codec shipped with lic codes it (see
    :mod:`lic.pretrained`): a fixed-rate default at one of its rate points (whole ``quality``
    numbers), a variable-rate default at any ``quality`` of its range; both at the manifest's
    ``default_quality`` when none is given. A variable-rate checkpoint takes any ``quality`` in
    its range. ``target_bpp`` / ``target_psnr`` search the quality instead
    (:func:`search_quality`): over the rate points of a fixed-rate default, continuously over
    one variable-rate codec. The report gives the quality used.
    Images larger than ``tile`` pixels a side are coded in tiles (:func:`encode`);
    ``refine`` steps refine the latents before coding (:func:`encode`).
    """
    from lic import pretrained

    searching = target_bpp is not None or target_psnr is not None
    if quality is not None and searching:
        raise UsageError("give --quality or a target (--target-bpp, --target-psnr), not both")
    target = resolve_device(device)
    tile = tiling.tile_setting(tile)
    image = load_image(source, max_pixels)
    labels, fixed_quality = None, None
    if checkpoint is None and not pretrained.is_variable_rate():
        if quality is not None and float(quality) != int(quality):
            raise UsageError(f"--quality of the default codec is a whole number, got {quality}")
        if not searching:
            if quality is None:
                quality = pretrained.default_quality()
            labels = [float(quality)]
            paths = [pretrained.default_checkpoint(int(quality))]
        else:
            models = pretrained.default_models()
            labels = [float(m.quality) for m in models]
            paths = [m.path for m in models]
        codecs = [load_codec(path, device=target) for path in paths]
        fixed_quality, quality = labels[0], None
    else:
        explicit = checkpoint is not None
        if not explicit:  # the default codec: one variable-rate checkpoint
            checkpoint = pretrained.default_checkpoint(quality)  # checks the manifest's range
            if quality is None and not searching:
                quality = pretrained.default_quality()
        codecs = [load_codec(checkpoint, device=target)]
        if explicit and quality is not None and not getattr(codecs[0], "variable_rate", False):
            raise UsageError(
                "--quality needs a variable-rate checkpoint or the default codec "
                "(this checkpoint has one rate)"
            )
    tensor = image.to_tensor()
    start = time.perf_counter()
    search = None
    if target_bpp is None and target_psnr is None:
        data = encode(codecs[0], tensor, quality, tile=tile, refine=refine)
        chosen = quality if quality is not None else getattr(codecs[0], "default_quality", None)
        chosen = fixed_quality if chosen is None else chosen
        psnr = None
    else:
        trial, encodes = search_quality(
            codecs, tensor, target_bpp, target_psnr, labels=labels, tile=tile, refine=refine
        )
        data, chosen, psnr = trial.data, trial.quality, trial.psnr
        goal = f"{target_bpp} bpp" if target_bpp is not None else f"{target_psnr} dB"
        search = f"target {goal}: {encodes} encodes"
    seconds = time.perf_counter() - start
    with atomic_output(output) as tmp:
        tmp.write_bytes(data)
    height, width = image.pixels.shape[:2]
    return EncodeReport(
        Path(output), len(data), height, width, seconds, image.notice, chosen, psnr, search
    )


def read_bitstream_file(path: str | os.PathLike[str]) -> Bitstream:
    """Read and verify a ``.lic`` file (:func:`lic.bitstream.read_file`)."""
    return bitstream.read_file(path)


def decode_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None,
    device: str = "cpu",
    max_pixels: int | None = None,
) -> float:
    """Decode a ``.lic`` file (one image) into a PNG written atomically; returns seconds.

    Without ``checkpoint`` the default weights whose fingerprint the file names are used; a
    file made by earlier default weights that are no longer installed fails with a usage error
    saying where those are (the manifest's ``retired`` list).
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
        retired = pretrained.find_retired(stream.fingerprint)
        if retired is not None:
            where = f"{retired.file} in {retired.until}" if retired.file else retired.until
            raise UsageError(
                f"{source} was made by an earlier default codec ({retired.describe()}) whose "
                f"weights lic no longer ships; they are {where}: decode it with --checkpoint "
                "and that file"
            )
        raise UsageError(
            f"--checkpoint is required: no installed weights match {stream.codec} "
            f"fingerprint {stream.fingerprint.hex()}"
        )
    codec = load_codec(checkpoint, device=target)
    start = time.perf_counter()
    pixels = decode_pixels(codec, stream, max_pixels)
    seconds = time.perf_counter() - start
    save_png(pixels, output)
    return seconds
