"""Peak memory and time of ``lic encode`` / ``lic decode`` on large images, whole and in tiles.

Each measurement is one ``lic`` process (as a user runs it), on ``--threads`` threads; its peak
resident memory comes from the kernel (``wait4``'s ``ru_maxrss``) and its time from the command's
own report (the coding alone) beside the process's wall time (with start-up, model and image
I/O). The test images are a real photo (the first shared CLIC image unless ``--source``)
resized with Lanczos to each size, with its aspect ratio.

Codecs: ``default`` (the shipped default codec at its default quality), a registered codec name (its
initial weights: memory and transform time are those of the architecture; entropy coding is
faster than with trained weights, whose latents carry more symbols) or ``NAME=CHECKPOINT``.
A run whose time, or a whole-image run whose memory, extrapolated linearly from the largest
smaller size measured, would pass ``--max-seconds`` / ``--max-gb`` is not run, and says so.

    python scripts/large_images.py --codec default --codec student \\
        --codec teacher-small=runs/campaign/default/teacher.ckpt --codec teacher \\
        --megapixels 1 4 12 33 --threads 1 --max-seconds 300 -o docs/large-images/memory-time
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from lic.paths import portable_path, shared_dir

LIC = [sys.executable, "-c", "import sys; from lic.cli import main; sys.exit(main())"]


def _measure(args: list[str], threads: int) -> dict:
    """One ``lic`` command, reaped by ``wait4`` for its own peak memory, and its times."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(LIC + args, stdout=out, stderr=err, env=env, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"lic {args[0]} failed: {stderr.strip()[-300:]}")
    seconds = re.search(r"(?:encoded|decoded) in ([0-9.]+) s", stdout)
    return {
        "wall_s": round(wall, 2),
        "coding_s": float(seconds.group(1)),
        "peak_gb": round(usage.ru_maxrss / 1e6, 3),
    }


def _checkpoint(spec: str, folder: Path) -> tuple[str, str | None]:
    """``(label, checkpoint or None for the default codec)`` of a ``--codec`` argument."""
    if spec == "default":
        from lic import pretrained

        codec = pretrained.default_models()[0].codec
        return f"default ({codec} q{pretrained.default_quality():g})", None
    if "=" in spec:
        name, path = spec.split("=", 1)
        return name, path
    import torch

    import lic
    from lic.codecs import create_codec

    torch.manual_seed(0)
    codec = create_codec(spec).eval()
    codec.update(force=True)
    path = folder / f"{spec}.ckpt"
    lic.save_codec(codec, path, lmbda=0.013, metric="mse")
    return f"{spec} (initial weights)", str(path)


def _image(source: Path, megapixels: float, folder: Path) -> tuple[Path, tuple[int, int]]:
    with Image.open(source) as image:
        width, height = image.size
        scale = (megapixels * 1e6 / (width * height)) ** 0.5
        size = (round(width * scale), round(height * scale))
        path = folder / f"{megapixels:g}mp.png"
        if not path.exists():
            image.convert("RGB").resize(size, Image.Resampling.LANCZOS).save(path, compress_level=1)
    return path, size


def _predict(
    rows: list[dict], codec: str, megapixels: float, key: str, whole: bool = True
) -> float | None:
    """Linear extrapolation of a figure from the largest smaller size measured (whole only)."""
    done = [r for r in rows if r["codec"] == codec and key in r["encode"]]
    done = [r for r in done if r["megapixels"] < megapixels and (r["tile"] == 0 or not whole)]
    if not done:
        return None
    last = max(done, key=lambda r: r["megapixels"])
    worst = max(last["encode"][key], last["decode"][key])
    return worst * megapixels / last["megapixels"]


def _markdown(rows: list[dict], threads: int, tile: int, cpu: str) -> str:
    lines = [
        "# Large images: peak memory and time of `lic encode` / `lic decode`",
        "",
        (
            f"Regenerate: `python scripts/large_images.py` (see its docstring). {cpu}, "
            f"{threads} thread(s). Coding seconds are what the command reports (the codec alone); "
            "peak memory is the process's maximum resident set. Tiled: `--tile "
            f"{tile}`, overlap 32 (the default overlap)."
        ),
        "",
        "| codec | MP | size | coding | encode s | decode s | encode peak GB | decode peak GB |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        mode = "whole" if r["tile"] == 0 else f"tiles of {r['tile']} ({r['tiles']})"
        if "skipped" in r:
            lines.append(
                f"| {r['codec']} | {r['megapixels']:g} | {r['size']} | {mode} | "
                f"not run: {r['skipped']} | | | |"
            )
            continue
        e, d = r["encode"], r["decode"]
        lines.append(
            f"| {r['codec']} | {r['megapixels']:g} | {r['size']} | {mode} | {e['coding_s']:.1f} | "
            f"{d['coding_s']:.1f} | {e['peak_gb']:.2f} | {d['peak_gb']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", action="append", help="default, a codec name or NAME=CHECKPOINT")
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1, 4, 12, 33])
    parser.add_argument("--source", type=Path, help="the photo to resize (default: first CLIC)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tile", type=int, default=2048, help="the tiled runs' --tile")
    parser.add_argument("--max-gb", type=float, default=12.0)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("-o", "--output", type=Path, help="write OUTPUT.json and OUTPUT.md")
    args = parser.parse_args(argv)
    codecs = args.codec or ["default"]
    source = args.source or min((shared_dir() / "datasets" / "clic").glob("*.png"))
    from lic import tiling
    from lic.training.campaign import cpu_name

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for spec in codecs:
            label, checkpoint = _checkpoint(spec, folder)
            extra = ["--checkpoint", checkpoint] if checkpoint else []
            for megapixels in args.megapixels:
                image, (width, height) = _image(source, megapixels, folder)
                pixels = ["--max-pixels", str(width * height)]
                for tile in (0, args.tile):
                    tiles = tiling.count(height, width, tile, 32) if tile else 1
                    if tile and tiles == 1:
                        continue  # fits one tile: coded whole, as measured
                    row = {"codec": label, "megapixels": megapixels, "size": f"{width}x{height}"}
                    row |= {"tile": tile, "tiles": tiles, "encode": {}, "decode": {}}
                    gb = _predict(rows, label, megapixels, "peak_gb") if not tile else None
                    seconds = _predict(rows, label, megapixels, "coding_s", whole=False)
                    if gb is not None and gb > args.max_gb:
                        row["skipped"] = f"about {gb:.0f} GB predicted (> {args.max_gb:g})"
                    elif seconds is not None and seconds > args.max_seconds:
                        row["skipped"] = f"about {seconds:.0f} s predicted (> {args.max_seconds:g})"
                    if "skipped" not in row:
                        coded = folder / "image.lic"
                        row["encode"] = _measure(
                            ["encode", str(image), "-o", str(coded), "--tile", str(tile)]
                            + extra
                            + pixels,
                            args.threads,
                        )
                        row["bytes"] = coded.stat().st_size
                        row["decode"] = _measure(
                            ["decode", str(coded), "-o", str(folder / "out.png")] + extra + pixels,
                            args.threads,
                        )
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    cpu = cpu_name()
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        meta = {"cpu": cpu, "threads": args.threads, "source": portable_path(source)}
        payload = meta | {"tile": args.tile, "rows": rows}
        args.output.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(_markdown(rows, args.threads, args.tile, cpu))
    print(_markdown(rows, args.threads, args.tile, cpu))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
