#!/usr/bin/env python
"""When does a run's hyperprior collapse, and which setting keeps it alive?

    python scripts/hyperprior_probe.py [--run student-scratch] [--steps 2000] [--every 250]
        [--variant NAME:KEY=VALUE,...]... [--threads 1] [-o docs/campaign/hyperprior-probe.json]
    python scripts/hyperprior_probe.py --history RUN [RUN ...] [-o docs/campaign/hyperprior.json]

Trains the first ``--steps`` steps of a campaign run from scratch (``recipes/campaign/default.yaml``,
the campaign's own :class:`RunTrainer` step: same data, schedule, precision, EMA) once per variant,
each a set of :class:`RunSpec` overrides (``lr=5e-4``, ``precision=fp32``, ``warmup=2000``, ...;
the base run as it is when no variant is given), and every ``--every`` steps measures the raw
weights on the held-out crops as the campaign does (:func:`lic.training.campaign.measure_crops`):
bpp, PSNR, ``bpp_z`` (the hyper-latent's bits) and its live channels. A collapsed hyperprior
codes z in ~0 bits: the codec then codes its first latent slice without side information. Prints a table and writes JSON (the state of these probe runs is thrown away).

``--history`` measures instead every state of those campaign runs that git history holds (each
commit that changed the run's ``state.json``): the raw and the EMA weights on the same held-out
crops. It needs the repository's history (a full clone) and trains nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lic.errors import UsageError
from lic.files import write_json
from lic.paths import shared_dir


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    """``"name:lr=5e-4,precision=fp32"`` -> ``("name", {"lr": 5e-4, "precision": "fp32"})``."""
    name, _, body = text.partition(":")
    overrides: dict[str, object] = {}
    for item in filter(None, body.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"variant {text!r}: expected KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return name or "base", overrides


def probe(plan, spec, steps: int, every: int, threads: int) -> list[dict]:
    import torch

    from lic.training.campaign import ResidentImages, RunTrainer, training_split

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        plan = dataclasses.replace(plan, runs=(spec,), state_dir=Path(tmp))
        trainer = RunTrainer(plan, spec, torch.device("cpu"), threads)
        train, held = training_split(plan)
        images = ResidentImages(train)
        crops = ResidentImages(held).center_crops(plan.eval_crop, plan.eval_images)
        rows, running, tick = [], [], time.time()
        for step in range(1, steps + 1):
            terms = trainer.step(images)
            if terms is not None:
                running.append(terms["bpp"])
            if step % every == 0 or step == steps:
                row = {"step": step, "train_bpp": sum(running) / max(len(running), 1)}
                row |= trainer.evaluate_crops(crops, ema=False)
                row["seconds"] = round(time.time() - tick, 1)
                rows.append(row)
                running = []
                print(
                    f"  {spec.name:>14} step {step:>6}: held-out {row['bpp']:.3f} bpp "
                    f"(z {row['bpp_z']:.4f}, {row['live_z_channels']} live channels) {row['psnr']:.2f} dB",
                    flush=True,
                )
    return rows


def history(plan, runs: list[str], threads: int) -> dict[str, list[dict]]:
    """Measure every committed state of ``runs`` (see the module doc)."""
    import torch

    from lic.training.campaign_history import measure_history

    def show(run: str, row: dict) -> None:
        print(
            f"  {run:>16} {row['commit']} step {row['step']:>6} {row['weights']:>3}: {row['bpp']:.4f} bpp "
            f"(z {row['bpp_z']:.5f}), {row['psnr']:.2f} dB, live z channels "
            f"{row['live_z_channels']}/{row['z_channels']}",
            flush=True,
        )

    torch.set_num_threads(threads)
    return measure_history(REPO, plan, runs, show)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=str(REPO / "recipes" / "campaign" / "default.yaml"))
    parser.add_argument("--run", default="student-scratch")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--history", nargs="+", metavar="RUN", help="measure committed states")
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args(argv)

    from lic.training.campaign import load_plan

    try:
        plan = load_plan(args.plan, shared_dir(), Path(tempfile.gettempdir()))
        if args.history:
            report = {
                "plan": Path(args.plan).name,
                "history": history(plan, args.history, args.threads),
            }
            return _write(report, args.output)
        base = plan.run(args.run)
        variants = [parse_variant(v) for v in args.variant] or [("base", {})]
        specs = []
        for name, overrides in variants:
            unknown = set(overrides) - {f.name for f in dataclasses.fields(base)}
            if unknown:
                raise UsageError(f"variant {name!r}: unknown run settings {sorted(unknown)}")
            specs.append(
                dataclasses.replace(base, name=name, init=None, after={}, keep="all", **overrides)
            )
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = {}
    for (name, overrides), spec in zip(variants, specs):
        print(f"{name}: {args.run} with {overrides or 'the plan as it is'}", flush=True)
        results[name] = {
            "overrides": overrides,
            "rows": probe(plan, spec, args.steps, args.every, args.threads),
        }
    report = {
        "run": args.run,
        "plan": Path(args.plan).name,
        "steps": args.steps,
        "variants": results,
    }
    return _write(report, args.output)


def _write(report: dict, output: str | None) -> int:
    if output:
        print(f"wrote {write_json(output, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
