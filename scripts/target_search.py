#!/usr/bin/env python
"""How close ``--target-bpp`` / ``--target-psnr`` land, and what variable rate costs.

    python scripts/target_search.py [--checkpoint VR.ckpt] [--dataset kodak] [--limit N]
                                    [--bpp 0.15,0.25,0.4] [--psnr 24,26,28]
                                    [-o docs/variable-rate/target-search]

For every image and target, :func:`lic.coding.search_quality` bisects the quality of a
variable-rate checkpoint; the report gives, per target, the mean and worst relative error of
the bits per pixel reached (or the PSNR gap in dB), how many encodes it took, and how many
images could not reach the target (the nearest reachable quality is then used). It also gives
the parameters and the encode/decode time a variable-rate codec adds over its fixed-rate form
(the same network, the first image).

Without ``--checkpoint`` the variable-rate checkpoint is the shipped default codec when it is
variable-rate (trained); with a fixed-rate default it is ``student-small-vr`` started from the
shipped fixed-rate student (quality 3) with its initial gains, *untrained*: the search's
behaviour is measured, not the variable-rate model's quality. The fixed-rate form the cost is
measured against is the shipped quality-3 student (the variable-rate codec at its λ), or, with a
variable-rate default, that codec's network without its gains (the variable-rate codec at the
default quality). Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

from lic.files import atomic_output
from lic.paths import shared_dir


def _numbers(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def _time(codec, image: torch.Tensor, quality: float | None, repeats: int = 3) -> dict:
    from lic import coding

    encode, decode = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        data = coding.encode(codec, image, quality)
        middle = time.perf_counter()
        coding.decode(codec, data)
        encode.append(middle - start)
        decode.append(time.perf_counter() - middle)
    return {"encode_s": min(encode), "decode_s": min(decode)}


def _fixed_rate_form(codec) -> torch.nn.Module:
    """The network of a variable-rate ``codec`` as the fixed-rate codec it extends, without its
    gains (``student-small-vr`` → ``student-small``), ready to code."""
    import lic
    from lic.checkpoint import weights_fingerprint

    fixed = lic.create_codec(codec.codec_name.removesuffix("-vr"))
    missing, unexpected = fixed.load_state_dict(codec.state_dict(), strict=False)
    if missing or set(unexpected) != {"log_gain", "log_inverse_gain"}:
        raise RuntimeError(f"{codec.codec_name} has no fixed-rate form: {missing} {unexpected}")
    fixed.fingerprint = weights_fingerprint(fixed)
    fixed.metadata = {"metric": codec.metadata.get("metric")}
    return fixed.eval()


def main(argv: list[str] | None = None) -> int:
    import lic
    from lic import coding, pretrained
    from lic.checkpoint import warm_start
    from lic.evaluation.datasets import resolve_images
    from lic.imageio import load_image

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a variable-rate codec checkpoint")
    parser.add_argument("--dataset", default="kodak")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--bpp", default="0.15,0.25,0.4")
    parser.add_argument("--psnr", default="24,26,28")
    parser.add_argument(
        "-o", "--output", type=Path, default=REPO / "docs" / "variable-rate" / "target-search"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    _, images = resolve_images(args.dataset, None, shared_dir() / "datasets")
    images = images[: args.limit] if args.limit else images
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        described = str(checkpoint)
        if checkpoint is None and pretrained.is_variable_rate():
            checkpoint = pretrained.default_checkpoint()
            described = f"the shipped default codec ({checkpoint.name}, trained)"
        elif checkpoint is None:
            codec = warm_start(
                lic.create_codec("student-small-vr"), pretrained.default_checkpoint(3)
            )
            checkpoint = Path(tmp) / "student-small-vr.ckpt"
            lic.save_codec(codec, checkpoint, metric="mse")
            described = "student-small-vr from the shipped quality-3 student, gains untrained"
        codec = lic.load_codec(checkpoint)
        if not codec.variable_rate:
            print(
                f"target_search: error: {checkpoint} is not a variable-rate codec", file=sys.stderr
            )
            return 1
        tensors = {p.name: load_image(p).to_tensor() for p in images}
        rows = []
        for kind, targets in (("bpp", _numbers(args.bpp)), ("psnr", _numbers(args.psnr))):
            for target in targets:
                errors, encodes, unreachable = [], [], 0
                for image in tensors.values():
                    goal = {"target_bpp": target} if kind == "bpp" else {"target_psnr": target}
                    trial, count = coding.search_quality([codec], image, **goal)
                    reached = trial.bpp if kind == "bpp" else trial.psnr
                    met = reached <= target if kind == "bpp" else reached >= target
                    if not met:
                        unreachable += 1
                        continue
                    gap = (target - reached) / target if kind == "bpp" else reached - target
                    errors.append(gap)
                    encodes.append(count)
                rows.append(
                    {
                        "kind": kind,
                        "target": target,
                        "images": len(tensors),
                        "unreachable": unreachable,
                        "mean_error": statistics.mean(errors) if errors else None,
                        "worst_error": max(errors) if errors else None,
                        "mean_encodes": statistics.mean(encodes) if encodes else None,
                        "max_encodes": max(encodes) if encodes else None,
                    }
                )
                print(rows[-1], flush=True)
        first = next(iter(tensors.values()))
        if pretrained.is_variable_rate():
            fixed, quality = _fixed_rate_form(codec), pretrained.default_quality()
            at = f"quality {quality:g}; {fixed.codec_name}: the same network without its gains"
        else:
            fixed = lic.load_codec(pretrained.default_checkpoint(3))
            quality, at = codec.quality_for(fixed.metadata["lmbda"]), "the fixed one's λ"
        cost = {
            "image": next(iter(tensors)),
            "fixed": {
                "codec": fixed.codec_name,
                "parameters": sum(p.numel() for p in fixed.parameters()),
                **_time(fixed, first, None),
            },
            "variable": {
                "codec": codec.codec_name,
                "parameters": sum(p.numel() for p in codec.parameters()),
                "quality": quality,
                **_time(codec, first, quality),
            },
            "at": at,
        }
    report = {"checkpoint": described, "dataset": args.dataset, "rows": rows, "cost": cost}
    lines = [
        "# Quality search of a variable-rate codec",
        "",
        (
            f"`python scripts/target_search.py` — {described}; {len(tensors)} images of "
            f"{args.dataset}; one CPU thread."
        ),
        "",
        "| target | images | unreachable | mean error | worst error | encodes (mean / max) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        unit = "bpp" if row["kind"] == "bpp" else "dB"
        if row["mean_error"] is None:
            errors = "– | –"
        elif row["kind"] == "bpp":
            errors = f"{row['mean_error']:.2%} below | {row['worst_error']:.2%} below"
        else:
            errors = f"+{row['mean_error']:.3f} dB | +{row['worst_error']:.3f} dB"
        encodes = (
            "–"
            if row["mean_encodes"] is None
            else f"{row['mean_encodes']:.1f} / {row['max_encodes']}"
        )
        lines.append(
            f"| {row['target']:g} {unit} | {row['images']} | {row['unreachable']} | {errors} | "
            f"{encodes} |"
        )
    f, v = cost["fixed"], cost["variable"]
    lines += [
        "",
        (
            f"Cost of variable rate ({cost['image']}, one thread, best of 3, the variable-rate codec "
            f"at {cost['at']}): {v['codec']} has "
            f"{v['parameters'] - f['parameters']:,} more parameters than {f['codec']} "
            f"({f['parameters']:,}); encode {f['encode_s']:.3f} → {v['encode_s']:.3f} s, decode "
            f"{f['decode_s']:.3f} → {v['decode_s']:.3f} s."
        ),
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.output.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    with atomic_output(args.output.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
