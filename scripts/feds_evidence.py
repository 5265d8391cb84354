#!/usr/bin/env python
"""FEDS evidence from the training campaign, in one command.

    python scripts/feds_evidence.py [--datasets kodak,clic] [--limit N] [--min-points 4]
                                    [-o docs/feds-study/campaign]

Every distilled run of the campaign plan (``recipes/campaign/default.yaml``) against the run
trained the same way without a teacher, and against its teacher
(:mod:`lic.training.campaign_study` says how runs are paired):

- at one λ, from the campaign state alone: held-out RD loss at equal steps and at equal
  compute, the steps and compute needed to reach the baseline's final loss, the teacher's
  forward passes, the effective channel count;
- over λ (the fine-tunes of one distilled run, with at least ``--min-points`` λ at which the
  fine-tune, its baseline and its teacher have finished): every codec exported from the state
  and coded through real bitstreams on each dataset; BD-rates (pchip) against the baseline
  curve and the teacher curve, with plots.

Writes ``summary.json`` and ``README.md`` into the output folder, and per curve and dataset the
results JSONs and reports (``<curve>/<dataset>/vs-baseline/``, ``.../vs-teacher/``). Curves
that are not ready are listed with the runs they wait for.
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

import lic  # noqa: F401  (the torchvision shim before compressai)
from lic.errors import LicError
from lic.evaluation.datasets import resolve_images
from lic.files import atomic_output
from lic.paths import shared_dir
from lic.training import campaign as cp
from lic.training import campaign_study as study


def _num(value, pattern: str, missing: str = "–", suffix: str = "") -> str:
    """``value`` formatted with ``pattern`` and ``suffix``, or ``missing`` (no suffix)."""
    return missing if value is None else format(value, pattern) + suffix


def _single_rate_table(rows: list[dict]) -> list[str]:
    lines = [
        (
            "| run | baseline | steps | teacher passes | compute h (baseline) | held-out loss "
            "(baseline) | Δ loss, equal steps | Δ loss, equal compute | to baseline's final loss: "
            "steps, compute h | Kodak bpp / dB (baseline) | effective channels | trained on (baseline) |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        kodak, base_kodak = r.get("kodak"), r.get("baseline_kodak")
        lines.append(
            f"| {r['run']} | {r['baseline']} | {r['step']:,} of {r['target']:,} "
            f"| {r['teacher_passes']:,} "
            f"| {_num(r['compute_hours'], '.2f')} ({_num(r.get('baseline_compute_hours'), '.2f')}) "
            f"| {r['heldout_loss']:.4f} ({_num(r.get('baseline_loss'), '.4f')}) "
            f"| {_num(r.get('loss_vs_baseline_equal_steps_percent'), '+.2f', suffix='%')} "
            f"| {_num(r.get('loss_vs_baseline_equal_compute_percent'), '+.2f', suffix='%')} "
            f"| {_num(r.get('steps_to_baseline_final'), ',.0f', 'not reached')}, "
            f"{_num(r.get('compute_to_baseline_final'), '.2f', '–')} "
            f"| {_num(kodak and kodak['bpp'], '.3f')} / {_num(kodak and kodak['psnr'], '.2f')} "
            f"({_num(base_kodak and base_kodak['bpp'], '.3f')} / "
            f"{_num(base_kodak and base_kodak['psnr'], '.2f')}) "
            f"| {_num(r['effective_channels'], '.1f')} "
            f"| {r['trained_on']} ({r.get('baseline_trained_on', '–')}) |"
        )
    return lines


def _seeds_table(rows: list[dict]) -> list[str]:
    """Each distilled run against the mean of its baseline's seeds, where it has several."""
    rows = [r for r in rows if "baseline_seeds" in r]
    if not rows:
        return []
    lines = [
        "Against every seed of the baseline (held-out loss at the run's step; the range is where",
        "the baseline's own seeds fall around their mean, the yardstick for the difference):",
        "",
        "| run | step | held-out loss | baseline seeds | their mean | Δ vs the mean | seeds' range |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        seeds = r["baseline_seeds"]
        low, high = r["baseline_seeds_range_percent"]
        lines.append(
            f"| {r['run']} | {r['step']:,} | {r['heldout_loss']:.4f} "
            f"| {', '.join(f'{k} {v:.4f}' for k, v in seeds.items())} "
            f"| {r['baseline_seeds_mean']:.4f} "
            f"| {r['loss_vs_baseline_seeds_mean_percent']:+.2f}% | {low:+.2f}% to {high:+.2f}% |"
        )
    return [*lines, ""]


def _spread_lines(spread: list[dict]) -> list[str]:
    """How far two runs of one recipe land apart (runs repeated under another seed)."""
    if not spread:
        return ["Seed spread: no run repeated under another seed has been measured yet."]
    return [
        f"Seed spread: {r['run']} ({r['repeats']}'s recipe under another seed) at {r['step']:,} "
        f"steps: held-out loss {r['heldout_loss']:.4f} against {r['twin_loss']:.4f}, "
        f"{r['loss_vs_twin_percent']:+.2f}%."
        for r in spread
    ]


def _bd_cell(row: dict | None) -> str:
    if row is None:
        return "–"
    if row["bd_rate_psnr"] is None:
        return f"n/a ({row['note']})"
    return f"{row['bd_rate_psnr']:+.2f}%"


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except LicError as exc:
        print(f"feds_evidence: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(REPO / "recipes" / "campaign" / "default.yaml"))
    parser.add_argument("--state-dir", type=Path, default=REPO / "campaign")
    parser.add_argument("--shared", type=Path, default=None, help="default: lic.paths.shared_dir()")
    parser.add_argument("--datasets", default="kodak,clic")
    parser.add_argument("--limit", type=int, help="only the first N images of each dataset")
    parser.add_argument(
        "--min-points", type=int, default=4, help="λ a curve needs before it is evaluated"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "-o", "--output", type=Path, default=REPO / "docs" / "feds-study" / "campaign"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shared = args.shared or shared_dir()
    plan = cp.load_plan(args.plan, shared, args.state_dir)
    datasets = {}
    for name in args.datasets.split(","):
        label, images = resolve_images(name, shared=shared / "datasets")  # a name or a folder
        datasets[label] = images[: args.limit]
    rows = study.single_rate_rows(plan)
    spread = study.replicates(plan)
    curves = study.rate_curves(plan)
    summary: dict = {"plan": plan.name, "single_rate": rows, "replicates": spread, "curves": []}
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for curve in curves:
            entry = {
                "root": curve.root,
                "runs": {role: list(getattr(curve, role)) for role in study.ROLES},
                "lambdas": [plan.run(n).lmbda for n in curve.distilled],
                "waiting_for": list(curve.missing),
                "compute_hours": {
                    role: study.compute_hours(plan, getattr(curve, role)) for role in study.ROLES
                },
                "datasets": {},
            }
            if len(curve.distilled) >= args.min_points:
                for name, images in datasets.items():
                    print(f"{curve.root}: {len(curve.distilled)} λ on {name}", flush=True)
                    entry["datasets"][name] = study.evaluate_curve(
                        plan, curve, images, args.output / curve.root / name, Path(tmp), name
                    )
            summary["curves"].append(entry)
    lines = [
        "# FEDS evidence from the training campaign",
        "",
        "Regenerate: `python scripts/feds_evidence.py` (the campaign state in `campaign/`, the plan",
        "in `recipes/campaign/default.yaml`; pairing rules in `lic/training/campaign_study.py`).",
        "",
        "## At one λ (held-out RD loss, the campaign's own measurements)",
        "",
        *(_single_rate_table(rows) if rows else ["No distilled run has been measured yet."]),
        "",
        "Δ loss: the run's held-out RD loss against its baseline's (negative: better). Equal",
        "compute: both learning curves at the smaller of the two compute totals, in CPU",
        "core-hours, which include the teacher's forward passes; a step trained on a GPU counts",
        "at the run's own CPU cost per step (or, for a run trained only on a GPU, at that of the",
        "run it starts from), since a GPU shared by several runs gives no comparable hours; `–`",
        "where there is no CPU cost to count it at. Effective channels: `1/Σw²` of the channel",
        "term's weights, over the steps that used it. Trained on: where the steps ran and with",
        "what precision of the transforms (bf16 autocast or fp32; the entropy model is fp32).",
        "",
        *_spread_lines(spread),
        "",
        *_seeds_table(rows),
        "",
        "## Over λ (real bitstreams; BD-rate, pchip, over the common PSNR range)",
        "",
        (
            "| curve | dataset | λ | BD-rate vs baseline | BD-rate vs teacher | teacher's BD-rate "
            "vs baseline | compute h (distilled / baseline / teacher) |"
        ),
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for entry in summary["curves"]:
        hours = " / ".join(_num(entry["compute_hours"][r], ".2f") for r in study.ROLES)
        lambdas = ", ".join(f"{v:g}" for v in entry["lambdas"]) or "none finished"
        if not entry["datasets"]:
            waiting = ", ".join(entry["waiting_for"]) or "nothing"
            lines.append(
                f"| {entry['root']} | – | {lambdas} | not evaluated: fewer than "
                f"{args.min_points} λ; waits for {waiting} | | | {hours} |"
            )
        for name, reports in entry["datasets"].items():
            cells = [
                _bd_cell(next((r for r in reports[k] if f"({role}," in r["name"]), None))
                for k, role in (
                    ("vs-baseline", "distilled"),
                    ("vs-teacher", "distilled"),
                    ("vs-baseline", "teacher"),
                )
            ]
            lines.append(
                f"| {entry['root']} | {name} | {lambdas} | {' | '.join(cells)} | {hours} |"
            )
    if not summary["curves"]:
        lines.append("| – | – | – | the plan has no distilled fine-tunes | | | |")
    with atomic_output(args.output / "summary.json") as tmp_file:
        tmp_file.write_text(json.dumps(summary, indent=2) + "\n")
    with atomic_output(args.output / "README.md") as tmp_file:
        tmp_file.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
