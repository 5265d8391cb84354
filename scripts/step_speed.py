#!/usr/bin/env python
"""Speed of one campaign training step under each option: precision, layout, threads, runs side by side.

    python scripts/step_speed.py [--codecs student-small,teacher-small] [--crop 128] [--batch 8]
                                 [--steps 12] [--variants fp32,cl,bf16,bf16+cl] [--repeats 1]
                                 [--device cpu|cuda] [--compile]
                                 [-o docs/campaign/step-speed-cpu.json]

Every measurement is a fresh process that builds the campaign's own :class:`RunTrainer` (the
step the campaign runs: resident crops, RD + aux loss, backward, clipping, both optimizers, EMA
update) and times ``--steps`` steps after 3 warm-up steps (median step time); with
``--repeats N`` every configuration alone is measured in N rounds of fresh processes and the
median is reported (a shared VM's speed drifts by 10% from one minute to the next). Variants:

- ``fp32``, ``cl`` (channels-last), ``bf16`` (bf16 autocast of the transforms; entropy model in
  float32), ``bf16+cl``, and any of them with ``+compile`` (``torch.compile`` of the codec's
  transforms) or ``+glibc`` (glibc's default malloc thresholds instead of the campaign
  worker's, ``lic.training.campaign.MALLOC_ENV``); ``--compile`` adds the campaign's variant
  with ``+compile``;
- on CPU, for the campaign's variant (``--campaign-variant``; by default what the campaign's
  ``precision: auto`` picks on this machine: ``bf16+cl`` where the CPU has bf16 instructions,
  ``fp32`` where bf16 would be emulated): each codec with 1 and 2 threads, and pairs of
  single-thread runs side by side (``teacher-small + student-small``,
  ``student-small + student-small``), which is the choice the campaign's ``--jobs`` makes;
- the data path: a batch cut from resident crops against a batch decoded from PNGs each time
  (the Lightning ``ImageFolder`` without its cache).

Prints a table and writes JSON. A quiet machine gives the figures: stop the campaign first.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lic.paths import shared_dir


def measure_one(
    codec: str, variant: str, threads: int, crop: int, batch: int, steps: int, device: str
) -> dict:
    """Time the campaign step in this process."""
    import torch

    from lic.codecs.timing import synchronize
    from lic.training.campaign import Plan, ResidentImages, RunSpec, RunTrainer, training_split

    torch.set_num_threads(threads)
    parts = set(variant.split("+"))
    spec = RunSpec(
        name="speed",
        codec=codec,
        lmbda=0.013,
        steps=10**9,
        batch=batch,
        crops=((0, crop),),
        precision="bf16" if "bf16" in parts else "fp32",
        channels_last="cl" in parts,
        warmup=1,
    )
    with tempfile.TemporaryDirectory() as tmp:
        train_dir = shared_dir() / "datasets" / "train"
        plan = Plan(name="speed", runs=(spec,), train_dir=train_dir, state_dir=Path(tmp))
        trainer = RunTrainer(plan, spec, torch.device(device), threads)
        if "compile" in parts:  # each transform stage (the codec taps features between them)
            for transform in (trainer.codec.g_a, trainer.codec.g_s):
                for index in range(len(transform)):
                    transform[index] = torch.compile(transform[index])
        train, _ = training_split(plan)
        images = ResidentImages(train[:64], torch.device(device))
        durations = []
        for index in range(3 + steps):
            tick = time.perf_counter()
            trainer.step(images)
            synchronize(device)
            if index >= 3:
                durations.append(time.perf_counter() - tick)
    seconds = statistics.median(durations)
    return {
        "codec": codec,
        "variant": variant,
        "threads": threads,
        "seconds_per_step": seconds,
        "images_per_s": batch / seconds,
    }


def data_path(crop: int, batch: int, batches: int = 10) -> dict:
    """Seconds per batch: resident crops against PNG decoding per sample."""
    import torch

    from lic.training.campaign import Plan, ResidentImages, training_split
    from lic.training.data import ImageFolder

    torch.set_num_threads(1)
    train_dir = shared_dir() / "datasets" / "train"
    train, _ = training_split(Plan(name="speed", runs=(), train_dir=train_dir))
    resident = ResidentImages(train)
    generator = torch.Generator().manual_seed(0)
    tick = time.perf_counter()
    for _ in range(batches):
        resident.sample(batch, crop, generator)
    resident_s = (time.perf_counter() - tick) / batches
    folder = ImageFolder(train_dir, crop)
    tick = time.perf_counter()
    for b in range(batches):
        torch.stack([folder[(b * batch + i) % len(folder)] for i in range(batch)])
    decoded_s = (time.perf_counter() - tick) / batches
    return {"resident_seconds_per_batch": resident_s, "png_decode_seconds_per_batch": decoded_s}


def _child(args: argparse.Namespace, codec: str, variant: str, threads: int) -> subprocess.Popen:
    command = [
        sys.executable,
        __file__,
        "--child",
        f"{codec}:{variant}:{threads}",
        "--crop",
        str(args.crop),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
    ]
    from lic.training.campaign import MALLOC_ENV, worker_environment

    env = worker_environment(threads)  # what a campaign worker runs with
    if "glibc" in variant.split("+"):
        for key in MALLOC_ENV:
            env.pop(key, None)
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"step_speed: a measurement failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", default="student-small,teacher-small")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--variants",
        default="fp32,cl,bf16,bf16+cl",
        help="comma-separated; each may end in +compile",
    )
    parser.add_argument(
        "--campaign-variant",
        default="auto",
        help="the variant timed with 2 threads and side by side (auto: bf16+cl where the CPU "
        "has bf16 instructions, else fp32)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of fresh processes over every configuration alone (median reported)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--compile", action="store_true", help="also measure torch.compile of the transforms"
    )
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        codec, variant, threads = args.child.split(":")
        print(
            json.dumps(
                measure_one(
                    codec, variant, int(threads), args.crop, args.batch, args.steps, args.device
                )
            )
        )
        return

    import torch

    from lic.training.campaign import cpu_name

    codecs = args.codecs.split(",")
    from lic.training.precision import autocast_dtype, cpu_has_bf16

    paired = args.campaign_variant
    if paired == "auto":  # what the campaign's precision: auto trains in on this device
        bf16 = autocast_dtype("auto", torch.device(args.device)) is not None
        paired = "bf16+cl" if bf16 else "fp32"
    variants = args.variants.split(",")
    if paired not in variants:
        variants.append(paired)
    if args.compile:
        variants.append(f"{paired}+compile")
    known = {"fp32", "cl", "bf16", "bf16+cl"}
    unknown = {
        v for v in variants if v.removesuffix("+glibc").removesuffix("+compile") not in known
    }
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    thread_counts = [1, 2] if args.device == "cpu" else [1]
    rows = []
    width = max(len("codec"), *map(len, codecs)) + 2  # the widest codec name, then two spaces
    print(
        f"{'codec':<{width}}{'variant':<18}{'threads':>8}{'ms/step':>10}{'images/s':>10}",
        flush=True,
    )
    configs = [
        (codec, variant, threads)
        for codec in codecs
        for variant in variants
        for threads in (thread_counts if variant == paired else thread_counts[:1])
    ]
    # --repeats: every configuration once per round, rounds one after another, so that a slow
    # spell of a shared machine falls on all of them; the row is the median over rounds
    samples: dict[tuple, list[float]] = {config: [] for config in configs}
    for _ in range(args.repeats):
        for config in configs:
            samples[config].append(_result(_child(args, *config))["seconds_per_step"])
    for (codec, variant, threads), seconds in samples.items():
        median = statistics.median(seconds)
        row = {
            "codec": codec,
            "variant": variant,
            "threads": threads,
            "seconds_per_step": median,
            "images_per_s": args.batch / median,
            "rounds": seconds,
        }
        rows.append(row)
        print(
            f"{codec:<{width}}{variant:<18}{threads:>8}{median * 1e3:>10.0f}{row['images_per_s']:>10.1f}",
            flush=True,
        )
    pairs = []
    if args.device == "cpu" and len(codecs) >= 1:
        combos = [(codecs[0], codecs[0])] + ([(codecs[1], codecs[0])] if len(codecs) > 1 else [])
        for first, second in combos:
            processes = [_child(args, first, paired, 1), _child(args, second, paired, 1)]
            results = [_result(p) for p in processes]
            pairs.append(
                {
                    "runs": [first, second],
                    "variant": paired,
                    "threads_each": 1,
                    "seconds_per_step": [r["seconds_per_step"] for r in results],
                }
            )
            print(
                f"side by side {first} + {second}: "
                + ", ".join(
                    f"{r['codec']} {r['seconds_per_step'] * 1e3:.0f} ms/step" for r in results
                ),
                flush=True,
            )
    data = data_path(args.crop, args.batch) if args.device == "cpu" else None
    if data:
        print(
            f"data: resident crops {data['resident_seconds_per_batch'] * 1e3:.1f} ms/batch, "
            f"PNG decoding {data['png_decode_seconds_per_batch'] * 1e3:.1f} ms/batch",
            flush=True,
        )
    report = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu_name(),
        "machine": platform.machine(),
        "cpu_bf16": cpu_has_bf16() if args.device == "cpu" else None,
        "campaign_variant": paired,
        "torch": torch.__version__,
        "crop": args.crop,
        "batch": args.batch,
        "timed_steps": args.steps,
        "repeats": args.repeats,
        "alone": rows,
        "side_by_side": pairs,
        "data": data,
    }
    if args.output:
        from lic.files import atomic_output

        args.output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(args.output) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        print(f"saved {args.output}")


if __name__ == "__main__":
    main()
