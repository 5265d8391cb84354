"""What coding in tiles costs: BD-rate of tiled against whole-image coding on the CLIC images.

Every image is coded with the shipped default codec at each of its rate points (each
checkpoint of a fixed-rate set, each trained level of a variable-rate model), whole and in
tiles of each ``--setting`` (``TILE/OVERLAP``), through real bitstreams (``lic.coding.encode``
and ``decode_pixels``). Per setting: the BD-rate against whole-image coding over the mean
curve of the set (bpp and PSNR averaged over images per rate point), and the PSNR near the
cuts between tiles against the whole-coded image's PSNR on the same pixels (a seam would show
there first).

    python scripts/tiling_cost.py --threads 1 -o docs/large-images/tiling-cost
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from lic import bitstream, coding, pretrained, tiling
from lic.checkpoint import load_codec
from lic.evaluation.bd import bd_psnr, bd_rate
from lic.evaluation.metrics import psnr_rgb
from lic.files import list_images
from lic.imageio import load_image
from lic.paths import portable_path, shared_dir

DEFAULT_SETTINGS = ["1024/32", "512/32", "512/0"]


def _near_cuts(height: int, width: int, tile: int, overlap: int) -> np.ndarray:
    """True on pixels within ``max(overlap, 8)`` of a cut between tiles."""
    mask = np.zeros((height, width), dtype=bool)
    reach = max(overlap, 8)
    for axis, length in ((0, height), (1, width)):
        for start, _ in tiling.segments(length, tile, overlap)[1:]:
            cut = start + overlap // 2
            band = slice(max(0, cut - reach), min(length, cut + reach))
            mask[(band, slice(None)) if axis == 0 else (slice(None), band)] = True
    return mask


def _rate_points() -> tuple[list[tuple[int, Path, float | None]], str]:
    """The default codec's rate points as ``(quality, checkpoint, quality to code at)``, lowest
    rate first (the last None for a fixed-rate checkpoint), and the points in words."""
    points = [(p.quality, p.path, p.coding_quality) for p in pretrained.rate_points()]
    if points[0][2] is None:
        return points, f"the default codec's {len(points)} rate points"
    return points, (
        f"the default codec's {len(points)} trained levels (qualities {points[0][0]} to "
        f"{points[-1][0]} of one variable-rate model)"
    )


def _measure(
    codec, paths: list[Path], settings: list[tuple[int, int]], quality: float | None = None
) -> dict[str, dict]:
    """One rate point: mean bpp, PSNR and PSNR near the cuts (vs whole) per setting."""
    rows: dict[str, list[tuple]] = {f"{t}/{o}": [] for t, o in settings}
    for path in paths:
        loaded = load_image(path)
        image, original = loaded.to_tensor(), loaded.pixels
        height, width = original.shape[:2]
        whole = None
        for tile, overlap in settings:
            data = coding.encode(codec, image, quality, tile=tile, overlap=overlap)
            decoded = coding.decode_pixels(codec, bitstream.unpack(data), height * width)
            whole = decoded if tile == 0 else whole
            near = None
            if tile and tiling.count(height, width, tile, overlap) > 1:
                mask = _near_cuts(height, width, tile, overlap)
                near = psnr_rgb(original[mask], decoded[mask]) - psnr_rgb(
                    original[mask], whole[mask]
                )
            rows[f"{tile}/{overlap}"].append(
                (8 * len(data) / (height * width), psnr_rgb(original, decoded), near)
            )
    out = {}
    for key, values in rows.items():
        near = [v[2] for v in values if v[2] is not None]
        out[key] = {
            "bpp": statistics.mean(v[0] for v in values),
            "psnr": statistics.mean(v[1] for v in values),
            "near_cuts_vs_whole_db": statistics.mean(near) if near else None,
        }
    return out


def _markdown(table: list[dict], count: int, folder: str, rate_points: str) -> str:
    lines = [
        "# What coding in tiles costs (default codec, CLIC images)",
        "",
        (
            "Regenerate: `python scripts/tiling_cost.py -o docs/large-images/tiling-cost`. "
            f"{count} images of {folder}, {rate_points}; "
            "BD-rate against the same images coded whole (positive: tiles cost bits). Near the "
            "cuts: PSNR within 8 px (or the overlap) of a cut between tiles minus the "
            "whole-coded image's PSNR on the same pixels, averaged over rate points."
        ),
        "",
        "| tile / overlap | BD-rate vs whole | BD-PSNR | PSNR near the cuts vs whole |",
        "|---|---:|---:|---:|",
    ]
    for row in table:
        near = row["near_cuts_vs_whole_db"]
        near_text = f"{near:+.2f} dB" if near is not None else "n/a"
        lines.append(
            f"| {row['setting']} | {row['bd_rate']:+.2f}% | {row['bd_psnr']:+.3f} dB | {near_text} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="a folder (default: the shared CLIC images)")
    parser.add_argument(
        "--setting", action="append", help=f"TILE/OVERLAP (default {', '.join(DEFAULT_SETTINGS)})"
    )
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--threads", type=int)
    parser.add_argument("-o", "--output", type=Path, help="write OUTPUT.json and OUTPUT.md")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    folder = args.images or shared_dir() / "datasets" / "clic"
    paths = list_images(folder)[: args.limit]
    settings = [(0, 0)] + [
        tuple(int(v) for v in text.split("/")) for text in (args.setting or DEFAULT_SETTINGS)
    ]
    points, described = _rate_points()
    start = time.perf_counter()
    curves: dict[str, list[dict]] = {f"{t}/{o}": [] for t, o in settings}
    codecs = {}  # a variable-rate default: one checkpoint for every point
    for quality, path, coding_quality in points:
        if path not in codecs:
            codecs[path] = load_codec(path)
        codec = codecs[path]
        for key, point in _measure(codec, paths, settings, coding_quality).items():
            curves[key].append({"quality": quality} | point)
        print(f"quality {quality} done, {time.perf_counter() - start:.0f} s", flush=True)
    whole = curves["0/0"]
    table = []
    for key, curve in curves.items():
        if key == "0/0":
            continue
        points = (
            [p["bpp"] for p in whole],
            [p["psnr"] for p in whole],
            [p["bpp"] for p in curve],
            [p["psnr"] for p in curve],
        )
        near = [p["near_cuts_vs_whole_db"] for p in curve if p["near_cuts_vs_whole_db"] is not None]
        table.append(
            {
                "setting": key,
                "bd_rate": bd_rate(*points),
                "bd_psnr": bd_psnr(*points),
                "near_cuts_vs_whole_db": statistics.mean(near) if near else None,
            }
        )
    markdown = _markdown(table, len(paths), portable_path(folder), described)
    print(markdown)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        payload = {"images": portable_path(folder), "count": len(paths)}
        payload |= {"curves": curves, "table": table}
        args.output.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
