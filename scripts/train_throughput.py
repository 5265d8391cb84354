#!/usr/bin/env python
"""Training throughput (steps/s, images/s) of each codec, through the real training module.

    python scripts/train_throughput.py [--codecs teacher,student,...] [--batch 8] [--crop 256]
                                       [--steps 3] [--warmup 1] [--device cpu|cuda]
                                       [-o docs/train-throughput-cpu.json]

Each codec runs ``warmup + steps`` training steps of :class:`RateDistortionModule` (forward,
rate–distortion + aux loss, backward, clipping, both optimizers) under a Lightning Trainer on
random crops; the timed steps exclude the warm-up. Prints a table and saves JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

import lic
from lic.coding import resolve_device

warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message="You defined a `validation_step`")


def measure(
    name: str, batch: int, crop: int, steps: int, warmup: int, device: torch.device
) -> dict:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from lic.codecs.timing import synchronize
    from lic.training.losses import RateDistortionLoss
    from lic.training.module import RateDistortionModule

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.durations: list[float] = []

        def on_train_batch_start(self, *args) -> None:
            synchronize(device)
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args) -> None:
            synchronize(device)
            self.durations.append(time.perf_counter() - self.start)

    codec = lic.create_codec(name)
    module = RateDistortionModule(
        codec,
        RateDistortionLoss(0.013),
        optimizer=lambda p: torch.optim.Adam(p, lr=1e-4),
        aux_optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
    )
    images = torch.rand(
        batch * (steps + warmup), 3, crop, crop, generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(
        TensorDataset(images),
        batch_size=batch,
        collate_fn=lambda rows: torch.stack([r[0] for r in rows]),
    )
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=1,
        max_steps=steps + warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    seconds = statistics.median(timer.durations[warmup:])
    return {
        "parameters": sum(p.numel() for p in codec.parameters()),
        "seconds_per_step": seconds,
        "steps_per_s": 1 / seconds,
        "images_per_s": batch / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", default=",".join(lic.list_codecs()))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    device = resolve_device(args.device)
    results = {}
    print(
        f"{'codec':<20}{'parameters':>14}{'s/step':>10}{'steps/s':>10}{'images/s':>10}", flush=True
    )
    for name in args.codecs.split(","):
        r = measure(name, args.batch, args.crop, args.steps, args.warmup, device)
        results[name] = r
        print(
            f"{name:<20}{r['parameters']:>14,}{r['seconds_per_step']:>10.3f}"
            f"{r['steps_per_s']:>10.3f}{r['images_per_s']:>10.2f}",
            flush=True,
        )
    report = {
        "batch": args.batch,
        "crop": args.crop,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "codecs": results,
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"saved {args.output}")


if __name__ == "__main__":
    main()
