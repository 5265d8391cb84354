#!/usr/bin/env python
"""Where do a codec's top rates stop? Coded PSNR against the transforms' own ceiling.

    python scripts/transform_ceiling.py [CHECKPOINT ...] [--data kodak|clic|heldout|DIR] [--images N]
        [--threads 1] [-o docs/default-model/ceiling.json]
    python scripts/transform_ceiling.py --synthesis 200 [--synthesis-images 8] [--synthesis-crop 256]
    python scripts/transform_ceiling.py --history RUN [RUN ...] [-o docs/campaign/ceiling-history.json]
    python scripts/transform_ceiling.py [CHECKPOINT] --grow student-medium-vr10

The *ceiling* is ``g_s(g_a(x))`` with nothing rounded
(:meth:`lic.codecs.codec.ChannelARCodec.reconstruct_unquantized`): what the decoder would give if
the latent were sent exactly, and what ever finer quantisation tends to. For each checkpoint
(default: the shipped default codec) and each of its qualities, this prints and saves the mean
PSNR of the coded reconstruction (eval mode, the same rounding and fixed-point entropy
parameters as ``lic encode``; bpp from the likelihoods) and of the ceiling, both as 8-bit
images, and how many latent channels carry bits (:data:`LIVE_CHANNEL_BPP`). Where a
variable-rate codec's top qualities meet the ceiling, more λ buys bits but no quality: the
network, not the quantiser or the entropy model, limits them, and only a better network (more
training, or more width) lifts it. (A fixed-rate synthesis, trained on rounded latents, can
code slightly past the ceiling at its own step: it has learned to expect integers.)

``--synthesis STEPS`` asks which transform sets that ceiling. On centre crops of the first
``--synthesis-images`` images it fits ``g_s``'s input to each crop alone (Adam on the MSE, from
``g_a``'s latent at the top quality, nothing rounded, no rate counted;
:func:`lic.codecs.refine.fit_synthesis_input`) and saves the PSNR reached beside the ceiling of
the same crops. Where the synthesis renders a crop far better than ``g_s(g_a(x))``, the analysis
transform is what caps the top rates, and a better encoder (encoder-side refinement, a stronger
``g_a``) can lift them with the same decoder; where it cannot, only a better synthesis can.

With several checkpoints it also prints and saves the BD-rate of each against the first
(estimated bpp against coded PSNR, ``bd_rate_vs_first``). With ``--data heldout`` (the campaign
plan's held-out training photos) that compares campaign states without looking at Kodak.

``--grow CODEC`` measures each checkpoint grown into a registered codec first
(:func:`lic.codecs.grow.load_grown`): with ``student-medium-vr10``, the shipped eight-level
default with its two added low levels at the gains it extrapolates there, before any training.

``--history`` measures instead every committed state of those campaign runs
(:mod:`lic.training.campaign_history`) on the campaign's held-out crops, so the ceiling can be
followed against training steps. It needs the repository's history (a full clone).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lic.errors import LicError
from lic.files import write_json
from lic.paths import shared_dir

#: A latent channel is *live* when it costs more than this many bits per pixel (mean over the
#: images): the channels the codec spends its rate on, against the width it has.
LIVE_CHANNEL_BPP = 0.001


def _psnr(a, b) -> float:
    import torch

    a8 = torch.round(a.clamp(0, 1) * 255)
    b8 = torch.round(b.clamp(0, 1) * 255)
    mse = float(torch.mean((a8 - b8) ** 2)) / 255**2
    return 10 * math.log10(1 / max(mse, 1e-12))


def measure_checkpoint(path: Path, images: list[Path], grow: str | None = None) -> list[dict]:
    """One row per quality (one row for a fixed-rate codec): bpp, coded and ceiling PSNR.

    ``grow``: measure the weights grown into that registered codec instead
    (:func:`lic.codecs.grow.load_grown`; added rate levels at their extrapolated gains)."""
    import torch

    from lic.checkpoint import load_codec
    from lic.imageio import load_image

    codec = load_codec(path).eval()
    if grow:
        codec = _grown(codec, grow)
    if codec.variable_rate:
        low, high = codec.quality_range
        qualities = [float(q) for q in range(math.ceil(low), math.floor(high) + 1)]
    else:
        qualities = [None]
    pictures = [load_image(p).to_tensor() for p in images]
    rows = []
    for quality in qualities:
        bpp = coded = ceiling = 0.0
        channel_bpp = 0.0
        with torch.no_grad():
            for x in pictures:
                out = codec(x, quality=quality)
                pixels = x.shape[-2] * x.shape[-1]
                bits = sum(-torch.log2(v.clamp_min(1e-9)).sum() for v in out.likelihoods.values())
                bpp += float(bits) / pixels
                y_bits = -torch.log2(out.likelihoods["y"].clamp_min(1e-9))
                channel_bpp = channel_bpp + y_bits.sum(dim=(0, 2, 3)) / pixels
                coded += _psnr(out.x_hat, x)
                ceiling += _psnr(codec.reconstruct_unquantized(x, quality), x)
        n = len(pictures)
        row = {
            "checkpoint": path.name,
            "quality": quality,
            "lmbda": codec.lmbda_at(quality)
            if quality is not None
            else codec.metadata.get("lmbda"),
            "bpp": bpp / n,
            "psnr": coded / n,
            "ceiling_psnr": ceiling / n,
            "live_channels": int((channel_bpp / n > LIVE_CHANNEL_BPP).sum()),
            "latent_channels": int(out.likelihoods["y"].shape[1]),
        }
        row["gap_db"] = row["ceiling_psnr"] - row["psnr"]
        rows.append(row)
        label = f"quality {quality:g}" if quality is not None else path.name
        print(
            f"  {label:>12}: {row['bpp']:.3f} bpp, {row['psnr']:.2f} dB coded, "
            f"{row['ceiling_psnr']:.2f} dB ceiling ({row['gap_db']:.2f} dB below it), "
            f"{row['live_channels']} of {row['latent_channels']} latent channels live",
            flush=True,
        )
    return rows


def _grown(codec, name: str):
    """``codec``'s weights grown into the registered codec ``name``, in eval mode, tables built."""
    from lic.codecs import create_codec
    from lic.codecs.grow import load_grown, registered_lmbdas

    grown = create_codec(name)
    try:
        load_grown(grown, codec.state_dict(), registered_lmbdas(codec.codec_name))
    except ValueError as error:
        raise LicError(f"cannot grow {codec.codec_name} into {name}: {error}") from None
    grown.update(force=True)
    return grown.eval()


def measure_synthesis(path: Path, images: list[Path], steps: int, crop: int) -> dict:
    """The synthesis transform's own ceiling on centre crops (see the module docstring)."""
    import time

    from lic.checkpoint import load_codec
    from lic.codecs.refine import fit_synthesis_input
    from lic.imageio import load_image

    codec = load_codec(path).eval()
    quality = float(math.floor(codec.quality_range[1])) if codec.variable_rate else None
    ceiling = synthesis = 0.0
    started = time.perf_counter()
    for image in images:
        x = load_image(image).to_tensor()
        height, width = x.shape[-2:]
        top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
        x = x[..., top : top + crop, left : left + crop]
        fit = fit_synthesis_input(codec, x, steps, quality)
        ceiling += _psnr(fit.start, x)
        synthesis += _psnr(fit.best, x)
    n = len(images)
    result = {
        "checkpoint": path.name,
        "quality": quality,
        "crop": crop,
        "images": n,
        "steps": steps,
        "ceiling_psnr": ceiling / n,
        "synthesis_psnr": synthesis / n,
        "seconds": time.perf_counter() - started,
    }
    result["gain_db"] = result["synthesis_psnr"] - result["ceiling_psnr"]
    print(
        f"  synthesis on {n} centre crops of {crop}²: {result['ceiling_psnr']:.2f} dB from g_a's "
        f"latent, {result['synthesis_psnr']:.2f} dB from the best latent of {steps} steps "
        f"(+{result['gain_db']:.2f} dB)",
        flush=True,
    )
    return result


def _markdown(rows: list[dict], label: str) -> str:
    lines = [
        f"Coded PSNR against the transforms' ceiling on {label} (`python scripts/transform_ceiling.py`):",
        "",
        "| checkpoint | quality | λ | bpp (estimated) | coded PSNR (dB) | ceiling PSNR (dB) | coded below ceiling (dB) | live latent channels |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        quality = "–" if r["quality"] is None else f"{r['quality']:g}"
        lmbda = "–" if r["lmbda"] is None else f"{r['lmbda']:.4g}"
        lines.append(
            f"| {r['checkpoint']} | {quality} | {lmbda} | {r['bpp']:.3f} | {r['psnr']:.2f} "
            f"| {r['ceiling_psnr']:.2f} | {r['gap_db']:.2f} "
            f"| {r['live_channels']} of {r['latent_channels']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", help="default: the shipped default codec")
    parser.add_argument(
        "--data",
        default="kodak",
        help="a folder, a dataset name (kodak, clic), or heldout: the campaign plan's held-out "
        "training photos (every 20th, never trained on), where checkpoints may be compared",
    )
    parser.add_argument("--images", type=int, default=None, help="only the first N images")
    parser.add_argument("--plan", default=str(REPO / "recipes" / "campaign" / "default.yaml"))
    parser.add_argument("--history", nargs="+", metavar="RUN", help="measure committed states")
    parser.add_argument(
        "--synthesis",
        type=int,
        default=0,
        metavar="STEPS",
        help="also fit g_s's input to centre crops for STEPS Adam steps (default 0: not)",
    )
    parser.add_argument("--synthesis-images", type=int, default=8, metavar="N")
    parser.add_argument("--synthesis-crop", type=int, default=256, metavar="PIXELS")
    parser.add_argument(
        "--grow",
        metavar="CODEC",
        help="measure each checkpoint grown into this registered codec (lic.codecs.grow), e.g. "
        "student-medium-vr10: the default's two added low levels at their extrapolated gains",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args(argv)
    for name, least in {"synthesis": 0, "synthesis_images": 1, "synthesis_crop": 1}.items():
        if getattr(args, name) < least:
            print(f"error: --{name.replace('_', '-')} must be at least {least}", file=sys.stderr)
            return 2

    import torch

    torch.set_num_threads(args.threads)
    try:
        if args.history:
            from lic.training.campaign import load_plan
            from lic.training.campaign_history import measure_history

            def show(run: str, row: dict) -> None:
                print(
                    f"  {run:>20} {row['commit']} step {row['step']:>6} {row['weights']:>3}: "
                    f"{row['bpp']:.4f} bpp, {row['psnr']:.2f} dB coded, "
                    f"{row['ceiling_psnr']:.2f} dB ceiling",
                    flush=True,
                )

            plan = load_plan(args.plan, shared_dir(), Path(tempfile.gettempdir()))
            history = measure_history(REPO, plan, args.history, show)
            return _write({"plan": Path(args.plan).name, "history": history}, args.output)

        from lic.evaluation.datasets import resolve_images
        from lic.pretrained import default_checkpoints

        if args.data == "heldout":
            from lic.training.campaign import load_plan, training_split

            plan = load_plan(args.plan, shared_dir(), Path(tempfile.gettempdir()))
            label, images = "heldout", training_split(plan)[1]
        else:
            label, images = resolve_images(args.data, shared=shared_dir() / "datasets")
        images = images[: args.images] if args.images else images
        checkpoints = [Path(c) for c in args.checkpoints] or default_checkpoints()
        rows, synthesis = [], []
        for path in checkpoints:
            print(f"{path.name} on {len(images)} {label} images", flush=True)
            rows += measure_checkpoint(path, images, args.grow)
            if args.synthesis:
                crops = images[: args.synthesis_images]
                synthesis.append(
                    measure_synthesis(path, crops, args.synthesis, args.synthesis_crop)
                )
    except LicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_markdown(rows, f"{len(images)} {label} images"))
    report = {
        "data": label,
        "images": len(images),
        "image_names": [p.name for p in images],
        "rows": rows,
    }
    versus = bd_rates_against_first(rows)
    if versus:
        report["bd_rate_vs_first"] = versus
        first = rows[0]["checkpoint"]
        for name, rate in versus.items():
            if rate is not None:
                print(f"{name}: {rate:+.2f}% BD-rate (estimated bpp, coded PSNR) against {first}")
    if synthesis:
        report["synthesis"] = synthesis
    return _write(report, args.output)


def bd_rates_against_first(rows: list[dict]) -> dict[str, float | None]:
    """BD-rate (%, estimated bpp against coded PSNR) of every checkpoint with several qualities
    against the first one: how checkpoints compare over the same images (for instance the
    campaign's held-out photos, where a run may be chosen without looking at Kodak)."""
    from lic.evaluation.bd import bd_rate

    curves: dict[str, list[dict]] = {}
    for row in rows:
        curves.setdefault(row["checkpoint"], []).append(row)
    (first, anchor), *others = curves.items()
    if len(anchor) < 4:  # BD-rate needs a curve, not a point
        return {}
    rates: dict[str, float | None] = {}
    for name, curve in others:
        if len(curve) < 4:
            continue
        try:
            rates[name] = bd_rate(
                [r["bpp"] for r in anchor],
                [r["psnr"] for r in anchor],
                [r["bpp"] for r in curve],
                [r["psnr"] for r in curve],
            )
        except ValueError as error:  # a curve that does not rise, or curves that do not overlap
            print(f"{name}: no BD-rate against {first}: {error}")
            rates[name] = None
    return rates


def _write(report: dict, output: str | None) -> int:
    if output:
        print(f"wrote {write_json(output, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
