#!/usr/bin/env python
"""One variable-rate model against fixed-rate models trained with the same compute.

    python scripts/vr_vs_fixed.py [--vr RUN ...] [--dataset kodak] [--limit N]
                                  [-o docs/variable-rate/vs-fixed/]

The campaign's ``student-vr`` (``student-small-vr``: the scratch student plus a gain per
trained λ, 20,000 steps at random qualities) against its ``student-fixed-1`` … ``-8``: eight
fine-tunes of the same scratch student at the eight λ the variable-rate model is trained for,
2,500 steps each, so 20,000 steps in all (``recipes/campaign/default.yaml``). Both start from
``student-scratch``; the compute each spent after it comes from their records. Beside them,
``student-vr-2``: ``student-vr``'s recipe from ``student-scratch-2`` (``--vr`` lists the
variable-rate runs). Every codec is built from the campaign state
(``lic.training.campaign.export_run``) and evaluated through real bitstreams: a variable-rate
one at its eight trained qualities, each fixed one at its λ. The shipped default codec is
evaluated beside them for reference: each checkpoint of a fixed-rate default, every trained
level of a variable-rate one (when those are one of the runs' own weights, its curve is
reused and the table says so). BD-rates (pchip) are over the curves' common PSNR range;
positive means more bits than the reference. Runs that have not reached their target are
reported as such and left out of the fixed-rate curve.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

import lic
from lic import pretrained
from lic.evaluation.bd import bd_rate
from lic.evaluation.datasets import resolve_images
from lic.evaluation.runner import evaluate_checkpoint, summarize
from lic.files import atomic_output
from lic.paths import shared_dir
from lic.training import campaign as cp

VR_RUNS = ("student-vr", "student-vr-2")
FIXED_PREFIX = "student-fixed-"


def _curve(
    name: str, checkpoints: list[Path], images: list[Path], qualities: list[float] | None = None
) -> dict:
    """One curve through real bitstreams: each fixed-rate checkpoint at its λ, a variable-rate
    one at ``qualities`` (default: every trained level)."""
    rows = []
    for path in checkpoints:
        rows += evaluate_checkpoint(
            path, images, torch.device("cpu"), curve=name, qualities=qualities
        )[0]
    return summarize(name, name, rows)


def _default_codec() -> tuple[str, list[Path], list[float] | None, str]:
    """The shipped default codec: its curve's name, checkpoints, qualities (every trained level
    of a variable-rate default; None for a fixed-rate set) and weights fingerprint (the first)."""
    points = pretrained.rate_points()
    model = pretrained.default_models()[0]
    name = (
        f"shipped default codec ({model.codec}, qualities "
        f"{points[0].quality} to {points[-1].quality})"
    )
    paths = list(dict.fromkeys(p.path for p in points))  # one file for a variable-rate default
    qualities = None if points[0].coding_quality is None else [p.coding_quality for p in points]
    return name, paths, qualities, model.fingerprint


def _bd(curve: dict, reference: dict) -> float | None:
    try:
        return bd_rate(
            reference["results"]["bpp"],
            reference["results"]["psnr-rgb"],
            curve["results"]["bpp"],
            curve["results"]["psnr-rgb"],
        )
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(REPO / "recipes" / "campaign" / "default.yaml"))
    parser.add_argument("--state-dir", type=Path, default=REPO / "campaign")
    parser.add_argument(
        "--vr", nargs="+", default=VR_RUNS, metavar="RUN", help="variable-rate campaign runs"
    )
    parser.add_argument("--dataset", default="kodak")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, help="a folder for the report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shared = shared_dir()
    plan = cp.load_plan(args.plan, shared, args.state_dir)
    label, images = resolve_images(args.dataset, shared=shared / "datasets")
    images = images[: args.limit]
    records = {spec.name: record for spec, record in cp.iter_records(plan)}
    fixed_runs = [s.name for s in plan.runs if s.name.startswith(FIXED_PREFIX)]
    status = {}
    vr_runs = list(args.vr)
    for name in [*vr_runs, *fixed_runs]:
        record = records.get(name)
        steps = record["step"] if record else 0
        status[name] = {
            "steps": steps,
            "target": plan.run(name).steps,
            "core_hours": record["compute"]["cpu_core_hours"] if record else 0.0,
            "gpu_hours": record["compute"]["gpu_hours"] if record else 0.0,
            "lmbda": plan.run(name).lmbda,
        }
    done = [n for n in fixed_runs if status[n]["steps"] >= status[n]["target"]]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        curves = []
        measured = {}  # weights fingerprint -> (run, its curve)
        for run in vr_runs:
            if status[run]["steps"] > 0:
                vr = cp.export_run(plan, run, folder / f"{run}.ckpt")
                curves.append(_curve(f"{run} ({status[run]['steps']} steps)", [vr], images))
                measured[lic.load_codec(vr).fingerprint] = (run, curves[-1])
        if done:
            paths = [cp.export_run(plan, n, folder / f"{n}.ckpt") for n in done]
            curves.append(
                _curve(f"student-fixed ({len(done)} of {len(fixed_runs)})", paths, images)
            )
        name, default, qualities, fingerprint = _default_codec()
        if fingerprint in measured:  # the shipped default is one of the runs: measured above
            run, curve = measured[fingerprint]
            name = f"{name[:-1]}: {run}'s weights)"
            curves.append(curve | {"name": name, "description": name})
        else:
            curves.append(_curve(name, default, images, qualities))
    vr_compute = ", ".join(
        f"{run} {status[run]['steps']:,} steps, "
        f"{status[run]['core_hours'] + status[run]['gpu_hours']:.2f} core-h"
        for run in vr_runs
    )
    fixed_compute = sum(status[n]["core_hours"] + status[n]["gpu_hours"] for n in done)
    table = []
    for curve in curves:
        table.append(
            {
                "curve": curve["name"],
                "points": len(curve["points"]),
                "bpp_range": [min(curve["results"]["bpp"]), max(curve["results"]["bpp"])],
                "psnr_range": [
                    min(curve["results"]["psnr-rgb"]),
                    max(curve["results"]["psnr-rgb"]),
                ],
                "bd_vs": {
                    other["name"]: _bd(curve, other) for other in curves if other is not curve
                },
            }
        )
    lines = [
        f"# Variable rate against fixed rate at equal compute ({label}, {len(images)} images)",
        "",
        (
            "Regenerate: `python scripts/vr_vs_fixed.py -o docs/variable-rate/vs-fixed` (needs the "
            "campaign state). Each run starts from a scratch student (its `init`: "
            + ", ".join(f"{run} from `{plan.run(run).init}`" for run in [*vr_runs, fixed_runs[0]])
            + f"); compute after it: {vr_compute}; the fixed-rate runs "
            f"{sum(status[n]['steps'] for n in done):,} steps, {fixed_compute:.2f} core-h "
            f"({len(done)} of {len(fixed_runs)} finished)."
        ),
        "",
        "| curve | points | bpp | PSNR dB | "
        + " | ".join(f"BD-rate vs {c['name']}" for c in curves)
        + " |",
        "|---|---:|---|---|" + "---:|" * len(curves),
    ]
    for row in table:
        cells = []
        for curve in curves:
            value = row["bd_vs"].get(curve["name"])
            cells.append(
                "—"
                if curve["name"] == row["curve"]
                else ("n/a" if value is None else f"{value:+.1f}%")
            )
        bpp, psnr = row["bpp_range"], row["psnr_range"]
        lines.append(
            f"| {row['curve']} | {row['points']} | {bpp[0]:.3f}–{bpp[1]:.3f} | "
            f"{psnr[0]:.2f}–{psnr[1]:.2f} | " + " | ".join(cells) + " |"
        )
    lines += ["", "| run | λ | steps | target | core-h |", "|---|---:|---:|---:|---:|"]
    for name, entry in status.items():
        lines.append(
            f"| {name} | {entry['lmbda']:g} | {entry['steps']:,} | {entry['target']:,} | "
            f"{entry['core_hours'] + entry['gpu_hours']:.2f} |"
        )
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    if args.output:
        _write(args.output, markdown, curves, label, shared)
        payload = {"dataset": label, "images": len(images), "runs": status, "table": table}
        with atomic_output(args.output / "summary.json") as tmp:
            tmp.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _write(folder: Path, markdown: str, curves: list[dict], label: str, shared: Path) -> None:
    """``README.md`` (the table above), one results JSON per curve, and ``lic report``'s
    ``report.md`` and plots against the fixed-rate curve (the published WebP curve beside,
    on Kodak)."""
    from lic.evaluation.report import write_report

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for curve in curves:
        path = folder / f"{curve['name'].split(' ')[0]}.json"
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(curve, indent=2) + "\n")
        paths.append(path)
    webp = shared / "reference" / "compressai" / "kodak" / "webp.json"
    if label == "kodak" and webp.is_file():
        paths.append(webp)
    fixed = next((c["name"] for c in curves if c["name"].startswith("student-fixed")), None)
    write_report(paths, fixed or curves[0]["name"], folder)
    with atomic_output(folder / "README.md") as tmp:
        tmp.write_text(markdown + "\nPlots and `lic report`'s table: [report.md](report.md).\n")


if __name__ == "__main__":
    raise SystemExit(main())
