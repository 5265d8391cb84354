#!/usr/bin/env python
"""Training throughput (steps/s, images/s) of each codec, through the real training module.

    python scripts/train_throughput.py [--codecs teacher,student,...] [--batch 8] [--crop 256]
                                       [--steps 3] [--warmup 1] [--device cpu|cuda]
                                       [--teacher teacher] [--precision fp32|bf16|auto]
                                       [--channels-last] [--reference 3,6]
                                       [-o docs/train-throughput-cpu.json]

Each codec runs ``warmup + steps`` training steps of :class:`RateDistortionModule` (forward,
rate–distortion + aux loss, backward, clipping, both optimizers) under a Lightning Trainer on
random crops; the timed steps exclude the warm-up. With ``--teacher NAME`` each codec is
distilled instead (:class:`DistillationModule`, one phase weighing FEDS's feature and channel
terms, so every step includes the teacher's forward pass). ``--reference`` adds CompressAI's
own training loop (``examples/train.py``: RD loss, backward, clipping, main step, aux loss,
aux step) around ``compressai.zoo.mbt2018_mean`` at those qualities, randomly initialised, for
a comparison on the same machine. Prints a table and saves JSON.
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


LMBDA = 0.013


def _images(batch: int, crop: int, count: int) -> torch.Tensor:
    return torch.rand(batch * count, 3, crop, crop, generator=torch.Generator().manual_seed(0))


def measure(
    name: str,
    batch: int,
    crop: int,
    steps: int,
    warmup: int,
    device: torch.device,
    teacher: str | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> dict:
    """Median step time of ``name`` under Lightning; distilled from ``teacher`` when given."""
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
    common = {
        "optimizer": lambda p: torch.optim.Adam(p, lr=1e-4),
        "aux_optimizer": lambda p: torch.optim.Adam(p, lr=1e-3),
        "transform_precision": precision,
        "channels_last": channels_last,
    }
    teacher_codec = None
    if teacher is None:
        module = RateDistortionModule(codec, RateDistortionLoss(LMBDA), **common)
    else:
        from lic.distill import Phase, PhaseSchedule
        from lic.training.distill_module import DistillationModule

        teacher_codec = lic.create_codec(teacher)
        teacher_codec.metadata = {"lmbda": LMBDA}
        both = Phase("joint", steps + warmup, feature_weight=1.0, channel_weight=1.0)
        module = DistillationModule(
            codec,
            RateDistortionLoss(LMBDA),
            teacher=teacher_codec,
            schedule=PhaseSchedule([both]),
            **common,
        )
    images = _images(batch, crop, steps + warmup)
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
    result = {
        "parameters": sum(p.numel() for p in codec.parameters()),
        "seconds_per_step": seconds,
        "steps_per_s": 1 / seconds,
        "images_per_s": batch / seconds,
        "precision": precision,
        "channels_last": channels_last,
    }
    if teacher_codec is not None:
        result["teacher"] = teacher
        result["teacher_parameters"] = sum(p.numel() for p in teacher_codec.parameters())
    return result


def reference_model(quality: int) -> torch.nn.Module:
    """CompressAI's ``mbt2018-mean`` at ``quality`` (1–8), randomly initialised: no download."""
    from compressai.zoo import mbt2018_mean

    return mbt2018_mean(quality=quality, metric="mse", pretrained=False)


def measure_reference(
    model: torch.nn.Module, batch: int, crop: int, steps: int, warmup: int, device: torch.device
) -> dict:
    """Median step time of CompressAI's training loop (``examples/train.py``) around ``model``.

    Per step, as there: zero both gradients, forward, ``λ·255²·MSE + bpp``, backward, clip the
    gradient norm to 1, main Adam step (lr 1e-4), then the aux loss, its backward and the aux
    Adam step (lr 1e-3) on the entropy bottleneck's quantiles. The clock runs from the batch on
    the device to the end of the aux step (as the Lightning timer of :func:`measure`).
    """
    import math

    from lic.codecs.timing import synchronize

    model = model.to(device).train()
    named = dict(model.named_parameters())
    main = [named[n] for n in sorted(named) if not n.endswith(".quantiles")]
    aux = [named[n] for n in sorted(named) if n.endswith(".quantiles")]
    optimizer = torch.optim.Adam(main, lr=1e-4)
    aux_optimizer = torch.optim.Adam(aux, lr=1e-3)
    durations = []
    for images in _images(batch, crop, steps + warmup).split(batch):
        d = images.to(device)
        synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        out = model(d)
        pixels = d.shape[0] * d.shape[2] * d.shape[3]
        bpp = sum(
            torch.log(lik).sum() / (-math.log(2) * pixels) for lik in out["likelihoods"].values()
        )
        loss = LMBDA * 255**2 * torch.nn.functional.mse_loss(out["x_hat"], d) + bpp
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        aux_loss = model.aux_loss()
        aux_loss.backward()
        aux_optimizer.step()
        synchronize(device)
        durations.append(time.perf_counter() - start)
    seconds = statistics.median(durations[warmup:])
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds_per_step": seconds,
        "steps_per_s": 1 / seconds,
        "images_per_s": batch / seconds,
        "precision": "fp32",
        "channels_last": False,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", default=",".join(lic.list_codecs()))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--teacher", help="distil every codec from this one (FEDS steps)")
    parser.add_argument("--precision", default="fp32", help="transforms: fp32, bf16 or auto")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--reference", default="", help="also CompressAI's loop on mbt2018-mean at these qualities"
    )
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    device = resolve_device(args.device)
    results = {}
    print(
        f"{'codec':<24}{'parameters':>14}{'s/step':>10}{'steps/s':>10}{'images/s':>10}", flush=True
    )

    def show(label: str, r: dict) -> None:
        print(
            f"{label:<24}{r['parameters']:>14,}{r['seconds_per_step']:>10.3f}"
            f"{r['steps_per_s']:>10.3f}{r['images_per_s']:>10.2f}",
            flush=True,
        )

    for name in args.codecs.split(","):
        r = measure(
            name,
            args.batch,
            args.crop,
            args.steps,
            args.warmup,
            device,
            args.teacher,
            args.precision,
            args.channels_last,
        )
        results[name] = r
        show(name, r)
    references = {}
    for quality in [int(q) for q in args.reference.split(",") if q]:
        label = f"mbt2018-mean q{quality}"
        model = reference_model(quality)
        references[label] = measure_reference(
            model, args.batch, args.crop, args.steps, args.warmup, device
        )
        show(label, references[label])
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
        "teacher": args.teacher,
        "codecs": results,
        "references": references,
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"saved {args.output}")


if __name__ == "__main__":
    main()
