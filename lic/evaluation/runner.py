"""Run learned codecs and anchors over a dataset; write CompressAI-style results and a CSV.

For every codec (checkpoints of one registry codec form one curve, one point per checkpoint)
and every anchor (one point per setting), every image is coded through the real bitstream,
decoded, and measured on the 8-bit decoded image: bits per pixel from the bytes, PSNR over RGB,
MS-SSIM, encoding and decoding time. Per-point values are means over images.
"""

from __future__ import annotations

import csv
import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lic import coding
from lic.checkpoint import load_codec
from lic.codecs import refine as refinement
from lic.codecs.timing import synchronize
from lic.errors import UsageError
from lic.evaluation.anchors import Anchor, get_anchor
from lic.evaluation.metrics import ms_ssim_rgb, psnr_rgb
from lic.files import atomic_output
from lic.imageio import load_image, tensor_to_pixels
from lic.paths import recorded_path

RESULT_KEYS = ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time")


@dataclass
class ImageResult:
    """One image coded at one rate point."""

    curve: str
    point: str
    image: str
    bpp: float
    psnr_rgb: float
    ms_ssim_rgb: float
    encoding_time: float
    decoding_time: float


def _images(paths: list[Path]) -> Iterable[tuple[str, np.ndarray]]:
    for path in paths:
        yield path.name, load_image(path).pixels


def _measure(
    curve: str,
    point: str,
    name: str,
    original: np.ndarray,
    num_bytes: int,
    decoded: np.ndarray,
    enc: float,
    dec: float,
) -> ImageResult:
    height, width = original.shape[:2]
    return ImageResult(
        curve,
        point,
        name,
        8 * num_bytes / (height * width),
        psnr_rgb(original, decoded),
        ms_ssim_rgb(original, decoded),
        enc,
        dec,
    )


def evaluate_checkpoint(
    path: Path,
    images: list[Path],
    device: torch.device,
    curve: str | None = None,
    progress: tqdm | None = None,
    qualities: list[float] | None = None,
    refine: int = 0,
) -> tuple[list[ImageResult], list[dict]]:
    """Code every image with one codec checkpoint (curve name: the codec's, unless given).

    A fixed-rate checkpoint is one rate point. A variable-rate checkpoint is a whole curve:
    one point per quality of ``qualities`` (default: each trained level, 1 to L). ``refine``
    steps of encoder-side refinement per image (:mod:`lic.codecs.refine`; counted in the
    encoding time).
    """
    codec = load_codec(path, device=device)
    curve = curve or codec.codec_name
    if getattr(codec, "variable_rate", False):
        low, high = codec.quality_range
        try:
            points = [codec.check_quality(q) for q in (qualities or range(int(low), int(high) + 1))]
        except ValueError as exc:
            raise UsageError(f"--qualities: {exc}") from None
        if progress is not None:
            progress.total += len(images) * (len(points) - 1)
            progress.refresh()
    else:
        points = [None]
    results, infos = [], []
    for quality in points:
        lmbda = codec.metadata.get("lmbda") if quality is None else codec.lmbda_at(quality)
        if quality is not None:
            point = f"quality={quality:g}"
        else:
            point = f"lmbda={lmbda}" if lmbda is not None else path.stem
        for name, pixels in _images(images):
            x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(255).to(device)
            synchronize(device)
            start = time.perf_counter()
            data = coding.encode(codec, x, quality, refine=refine)
            synchronize(device)
            middle = time.perf_counter()
            decoded = coding.decode(codec, data)
            synchronize(device)
            end = time.perf_counter()
            results.append(
                _measure(
                    curve,
                    point,
                    name,
                    pixels,
                    len(data),
                    tensor_to_pixels(decoded),
                    middle - start,
                    end - middle,
                )
            )
            if progress is not None:
                progress.update()
        infos.append(
            {
                "codec": codec.codec_name,
                "parameters": sum(p.numel() for p in codec.parameters()),
                "fingerprint": codec.fingerprint,
                "lmbda": lmbda,
                "checkpoint": recorded_path(path),
            }
            | (
                {
                    "refine_steps": refine,
                    "refine_schedule": refinement.DEFAULT_SCHEDULE,
                    "refine_lr_per_sqrt_lmbda": refinement.LR_PER_SQRT_LMBDA,
                }
                if refine
                else {}
            )
            | ({"quality": quality} if quality is not None else {})
        )
    return results, infos


def evaluate_anchor(
    anchor: Anchor, images: list[Path], progress: tqdm | None = None
) -> list[ImageResult]:
    """Code every image with an anchor at each of its settings."""
    results = []
    for name, pixels in _images(images):
        for setting in anchor.settings:
            start = time.perf_counter()
            encoded = anchor.code(pixels, setting)
            elapsed = time.perf_counter() - start
            # Pillow encodes and decodes in one call; the split is not observable here.
            results.append(
                _measure(
                    anchor.label,
                    f"{anchor.setting_name}={setting}",
                    name,
                    pixels,
                    encoded.num_bytes,
                    encoded.decoded,
                    elapsed,
                    float("nan"),
                )
            )
            if progress is not None:
                progress.update()
    return results


def summarize(name: str, description: str, rows: list[ImageResult], **extra) -> dict:
    """Mean per rate point, sorted by rate, in CompressAI's results-JSON shape."""
    by_point: dict[str, list[ImageResult]] = defaultdict(list)
    for row in rows:
        by_point[row.point].append(row)
    points = []
    for point, members in by_point.items():

        def mean(attr: str, members: list[ImageResult] = members) -> float:
            values = [getattr(m, attr) for m in members]
            finite = [v for v in values if np.isfinite(v)]
            return float(np.mean(finite)) if finite else float("nan")

        points.append(
            (
                mean("bpp"),
                point,
                {
                    "bpp": mean("bpp"),
                    "psnr-rgb": mean("psnr_rgb"),
                    "ms-ssim-rgb": mean("ms_ssim_rgb"),
                    "encoding_time": mean("encoding_time"),
                    "decoding_time": mean("decoding_time"),
                },
            )
        )
    points.sort(key=lambda p: p[0])
    results = {key: [p[2][key] for p in points] for key in RESULT_KEYS}
    return {
        "name": name,
        "description": description,
        "results": results,
        "points": [p[1] for p in points],
        "images": len({r.image for r in rows}),
        **extra,
    }


def _json_safe(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-").lower()


def run_evaluation(
    images: list[Path],
    checkpoints: list[Path],
    output: Path,
    anchors: list[str] = (),
    device: str = "cpu",
    name: str | None = None,
    dataset: str = "",
    qualities: list[float] | None = None,
    refine: int = 0,
) -> list[Path]:
    """Evaluate checkpoints and anchors on ``images``; returns the results JSON files written.

    ``qualities``: the points of variable-rate checkpoints (default: every trained level).
    ``refine``: encoder-side refinement steps for the checkpoints (:func:`evaluate_checkpoint`).
    """
    if not images:
        raise UsageError("no images to evaluate")
    target = coding.resolve_device(device)
    anchor_objects = [get_anchor(a) for a in anchors]
    if not checkpoints and not anchor_objects:
        raise UsageError("nothing to evaluate: give --checkpoint and/or --anchors")
    output.mkdir(parents=True, exist_ok=True)
    total = len(images) * (len(checkpoints) + sum(len(a.settings) for a in anchor_objects))
    rows: list[ImageResult] = []
    written = []
    with tqdm(total=total, desc="evaluate", unit="image", leave=False) as progress:
        curves: dict[str, list[ImageResult]] = defaultdict(list)
        infos: dict[str, list[dict]] = defaultdict(list)
        for path in checkpoints:
            found, info = evaluate_checkpoint(
                path, images, target, name, progress, qualities, refine
            )
            curves[found[0].curve] += found
            infos[found[0].curve] += info
        for curve, members in curves.items():
            description = f"lic {infos[curve][0]['codec']} on {dataset or 'images'} ({target.type})"
            summary = summarize(
                curve,
                description,
                members,
                parameters=infos[curve][0]["parameters"],
                device=str(target),
                checkpoints=infos[curve],
            )
            written.append(_write_json(output / f"{_slug(curve)}.json", summary))
            rows += members
        for anchor in anchor_objects:
            found = evaluate_anchor(anchor, images, progress)
            summary = summarize(
                anchor.label,
                f"{anchor.label} through Pillow/CLI on {dataset or 'images'}",
                found,
                anchor=anchor.name,
                settings=list(anchor.settings),
            )
            written.append(_write_json(output / f"{anchor.name}.json", summary))
            rows += found
    with atomic_output(output / "per-image.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0]).keys()))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    return written


def _write_json(path: Path, payload: dict) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(payload), indent=2) + "\n")
    return path
