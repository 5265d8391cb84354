#!/usr/bin/env python
"""Parameter counts and encode/decode latency of the paper-scale codecs, side by side.

    python scripts/codec_complexity.py [--size 512x768] [--runs 3] [--device cpu] [-o docs/codec-complexity-cpu.json]

Every codec codes the same image in the same process (one warm-up, then the median of
``--runs``), so the student/teacher ratios come from one measurement. Weights are untrained
(this measures structure, not quality): entropy-coding time depends on the symbols, so a
trained codec's coding share will differ somewhat. The full benchmark with network and
entropy-coding time split comes with the evaluation tools.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import lic
from lic.coding import resolve_device

CODECS = ["teacher", "student", "student-swin"]


def _timed(fn, device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def measure(name: str, image: torch.Tensor, runs: int, device: torch.device) -> dict:
    codec = lic.create_codec(name).to(device).eval()
    codec.update(force=True)
    x = image.to(device)
    encode, decode = [], []
    for run in range(runs + 1):  # the first run warms up
        t_enc, compressed = _timed(lambda: codec.compress(x), device)
        t_dec, _ = _timed(lambda: codec.decompress(compressed), device)
        if run:
            encode.append(t_enc)
            decode.append(t_dec)
    return {
        "parameters": sum(p.numel() for p in codec.parameters()),
        "encode_s": statistics.median(encode),
        "decode_s": statistics.median(decode),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x768", help="HEIGHTxWIDTH (default: Kodak's 512x768)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("-o", "--output", type=Path, help="JSON file for the figures")
    args = parser.parse_args()
    device = resolve_device(args.device)
    height, width = (int(v) for v in args.size.lower().split("x"))
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))

    results = {name: measure(name, image, args.runs, device) for name in CODECS}
    teacher = results["teacher"]
    print(
        f"{'codec':<14}{'parameters':>14}{'vs teacher':>12}{'encode s':>10}{'decode s':>10}{'enc+dec vs teacher':>20}"
    )
    for name, r in results.items():
        r["parameter_ratio"] = r["parameters"] / teacher["parameters"]
        r["time_ratio"] = (r["encode_s"] + r["decode_s"]) / (
            teacher["encode_s"] + teacher["decode_s"]
        )
        print(
            f"{name:<14}{r['parameters']:>14,}{r['parameter_ratio']:>11.1%}"
            f"{r['encode_s']:>10.3f}{r['decode_s']:>10.3f}{r['time_ratio']:>19.1%}"
        )
    report = {
        "image_size": [height, width],
        "runs": args.runs,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
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
