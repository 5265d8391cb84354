#!/usr/bin/env python
"""How encoder-side refinement's settings were chosen: a sweep on held-out training photos.

    python scripts/refine_sweep.py [--photos 2] [--steps 20] [--factors 0.4,1,2.5]
        [--schedules constant] [-o docs/default-model/refine-sweep.json]

For the shipped default codec, at qualities 1, 3, 5 and 8, on 256x384 crops of the first held-out
photos of the campaign's training folder (never Kodak, CLIC or Tecnick), it refines the latents
(``lic.codecs.refine``) for each number of steps, learning-rate schedule and multiple of the
default learning rate ``LR_PER_SQRT_LMBDA · sqrt(λ)`` asked for, and reports the lowest relaxed
rate–distortion cost reached, relative to the unrefined latents' (1.0 = no gain). Prints a
markdown table (one column per setting) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import torch
from PIL import Image

import lic
from lic import pretrained
from lic.codecs import refine
from lic.paths import shared_dir
from lic.training.campaign import manifest_names, split_holdout

QUALITIES = (1.0, 3.0, 5.0, 8.0)


def _numbers(kind):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")

    return parse


def _schedules(text: str) -> tuple[str, ...]:
    names = tuple(text.split(","))
    unknown = [n for n in names if n not in refine.SCHEDULES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown schedule {unknown[0]!r}: {refine.SCHEDULES}")
    return names


def _label(steps: int, schedule: str, factor: float) -> str:
    return f"{steps} {schedule} {factor:g}×"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2, help="held-out photos (default 2)")
    parser.add_argument(
        "--steps", type=_numbers(int), default=(refine.DEFAULT_STEPS,), help="e.g. 20,50"
    )
    parser.add_argument(
        "--factors", type=_numbers(float), default=(0.4, 1.0, 2.5), help="of the default rate"
    )
    parser.add_argument("--schedules", type=_schedules, default=(refine.DEFAULT_SCHEDULE,))
    parser.add_argument("--every", type=int, default=20, help="the campaign's holdout_every")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("docs/default-model/refine-sweep.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    folder = shared_dir() / "datasets" / "train"
    photos = sorted(folder.glob("*.png"))
    if not photos:
        sys.exit(f"refine_sweep: no training photos in {folder} (set LIC_SHARED)")
    _, held = split_holdout(photos, args.every, manifest_names(folder))
    codec = lic.load_codec(pretrained.default_checkpoint())
    settings = [
        (steps, schedule, factor)
        for steps in args.steps
        for schedule in args.schedules
        for factor in args.factors
    ]
    rows = []
    for path in held[: args.photos]:
        pixels = np.asarray(Image.open(path).convert("RGB"))[:256, :384].copy()
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
        for quality in QUALITIES:
            lmbda = refine.objective_lmbda(codec, quality)
            default = refine.Refinement().learning_rate(lmbda)
            for steps, schedule, factor in settings:
                start = time.perf_counter()
                result = refine.refine_latents(
                    codec, x, quality, refine.Refinement(steps, default * factor, schedule)
                )
                rows.append(
                    {
                        "photo": path.name,
                        "quality": quality,
                        "lmbda": lmbda,
                        "steps": steps,
                        "schedule": schedule,
                        "lr_factor": factor,
                        "lr": default * factor,
                        "best_relative_cost": min(result.costs) / result.costs[0],
                        "final_relative_cost": result.costs[-1] / result.costs[0],
                        "seconds": time.perf_counter() - start,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"codec": codec.fingerprint, "photos": args.photos, "rows": rows}, indent=1)
        + "\n"
    )
    print("\n| quality | λ | " + " | ".join(_label(*s) for s in settings) + " |")
    print("|---:|---:|" + "---:|" * len(settings))
    for quality in QUALITIES + (None,):
        cells = []
        for steps, schedule, factor in settings:
            values = [
                r["best_relative_cost"]
                for r in rows
                if quality in (None, r["quality"])
                and (r["steps"], r["schedule"], r["lr_factor"]) == (steps, schedule, factor)
            ]
            cells.append(f"{(float(np.mean(values)) - 1) * 100:+.1f}%")
        if quality is None:
            print("| mean | | " + " | ".join(cells) + " |")
        else:
            lmbda = next(r["lmbda"] for r in rows if r["quality"] == quality)
            print(f"| {quality:g} | {lmbda:.4g} | " + " | ".join(cells) + " |")
    print(args.output)


if __name__ == "__main__":
    main()
