"""Complexity benchmark: parameters, MACs per pixel, encode/decode latency split into network
and entropy-coding time, and peak memory, for several codecs side by side in one run."""

from __future__ import annotations

import platform
import resource
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lic.codecs.timing import Stopwatch, synchronize


def test_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A deterministic photo-like image (smooth structure plus grain) in ``[0, 1]``."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 32 + 2, width // 32 + 2, generator=g)
    smooth = torch.nn.functional.interpolate(
        coarse, size=(height, width), mode="bicubic", align_corners=False
    )
    return (smooth + 0.03 * torch.randn(1, 3, height, width, generator=g)).clamp(0, 1)


def macs_per_pixel(codec: nn.Module, image: torch.Tensor) -> float:
    """Multiply–accumulates of one eval forward pass (analysis, entropy model, synthesis) per pixel."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        codec(image)
    return counter.get_total_flops() / 2 / (image.shape[-2] * image.shape[-1])


def bench_codec(
    codec: nn.Module,
    image: torch.Tensor,
    runs: int = 5,
    warmup: int = 1,
    quality: float | None = None,
) -> dict:
    """Median latencies over ``runs`` after ``warmup`` runs; ``codec`` must be in eval mode.

    A variable-rate codec codes at ``quality`` (default: its own default quality).
    """
    device = next(codec.parameters()).device
    x = image.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    samples: dict[str, list[float]] = {
        k: [] for k in ("encode", "encode_entropy", "decode", "decode_entropy")
    }
    num_bytes = 0
    for run in range(warmup + runs):
        enc, dec = Stopwatch(device), Stopwatch(device)
        synchronize(device)
        start = time.perf_counter()
        compressed = (
            codec.compress(x, stopwatch=enc)
            if quality is None
            else codec.compress(x, stopwatch=enc, quality=quality)
        )
        synchronize(device)
        middle = time.perf_counter()
        codec.decompress(compressed, stopwatch=dec)
        synchronize(device)
        end = time.perf_counter()
        if run >= warmup:
            samples["encode"].append(middle - start)
            samples["encode_entropy"].append(enc.seconds["entropy"])
            samples["decode"].append(end - middle)
            samples["decode_entropy"].append(dec.seconds["entropy"])
        num_bytes = sum(len(s) for strings in compressed.strings.values() for s in strings)
    median = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "parameters": sum(p.numel() for p in codec.parameters()),
        "macs_per_pixel": macs_per_pixel(codec, x),
        "encode_s": median["encode"],
        "encode_network_s": median["encode"] - median["encode_entropy"],
        "encode_entropy_s": median["encode_entropy"],
        "decode_s": median["decode"],
        "decode_network_s": median["decode"] - median["decode_entropy"],
        "decode_entropy_s": median["decode_entropy"],
        "bpp": 8 * num_bytes / (image.shape[-2] * image.shape[-1]),
    }
    if device.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["peak_memory_kind"] = "cuda max_memory_allocated"
    else:
        result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["peak_memory_kind"] = "process peak RSS so far (CPU; includes earlier codecs)"
    return result


def run_benchmark(
    codecs: dict[str, nn.Module],
    height: int,
    width: int,
    device: torch.device,
    runs: int = 5,
    warmup: int = 1,
    qualities: dict[str, float] | None = None,
) -> dict:
    """Benchmark every codec on the same image, in one process; ratios against the first.

    ``qualities``: the quality of variable-rate codecs, by label (default: their own).
    """
    image = test_image(height, width)
    results = {}
    for label, codec in codecs.items():
        quality = (qualities or {}).get(label)
        results[label] = bench_codec(codec.to(device).eval(), image, runs, warmup, quality)
    first = next(iter(results.values()))
    for r in results.values():
        r["parameter_ratio"] = r["parameters"] / first["parameters"]
        r["time_ratio"] = (r["encode_s"] + r["decode_s"]) / (first["encode_s"] + first["decode_s"])
    return {
        "size": [height, width],
        "runs": runs,
        "warmup": warmup,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "codecs": results,
    }


def format_table(report: dict) -> str:
    head = f"{'codec':<22}{'params':>12}{'MAC/px':>10}{'enc s':>9}{'(net':>8}{'+ ent)':>8}{'dec s':>9}{'(net':>8}{'+ ent)':>8}{'time':>8}"
    lines = [
        f"{report['size'][1]}x{report['size'][0]} on {report['device']} ({report['device_name']})",
        head,
    ]
    for label, r in report["codecs"].items():
        lines.append(
            f"{label:<22}{r['parameters']:>12,}{r['macs_per_pixel']:>10,.0f}{r['encode_s']:>9.3f}"
            f"{r['encode_network_s']:>8.3f}{r['encode_entropy_s']:>8.3f}{r['decode_s']:>9.3f}"
            f"{r['decode_network_s']:>8.3f}{r['decode_entropy_s']:>8.3f}{r['time_ratio']:>8.1%}"
        )
    return "\n".join(lines)
