"""``lic``: the command line. Each subcommand parses arguments and calls one library function.

Errors reach the user as one line on stderr: exit 1 for bad data, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lic.errors import LicError, UsageError

MAX_PIXELS_HELP = "refuse larger images (default: $LIC_MAX_PIXELS or 2**25 = 33,554,432)"
#: ``--refine`` without a count: :data:`lic.codecs.refine.DEFAULT_STEPS` (not imported here, so
#: that ``lic --help`` does not load torch; a test keeps the two equal).
DEFAULT_REFINE_STEPS = 20


def _cmd_encode(args: argparse.Namespace) -> None:
    from lic.coding import encode_file

    report = encode_file(
        args.input,
        args.output,
        args.checkpoint,
        device=args.device,
        max_pixels=args.max_pixels,
        quality=args.quality,
        target_bpp=args.target_bpp,
        target_psnr=args.target_psnr,
        tile=args.tile,
        refine=args.refine,
    )
    if report.notice:
        print(f"lic: note: {args.input}: {report.notice}", file=sys.stderr)
    where = "default codec, " if not args.checkpoint else ""
    quality = f" ({where}quality {report.quality:g})" if report.quality is not None else ""
    reached = f", {report.psnr:.2f} dB" if report.psnr is not None else ""
    search = f"; {report.search}" if report.search else ""
    print(
        f"{args.output}: {report.num_bytes} bytes, {report.bpp:.4f} bpp{reached}, "
        f"{report.width}x{report.height}, encoded in {report.seconds:.3f} s{quality}{search}"
    )


def _cmd_decode(args: argparse.Namespace) -> None:
    from lic.coding import decode_file

    seconds = decode_file(
        args.input, args.output, args.checkpoint, device=args.device, max_pixels=args.max_pixels
    )
    print(f"{args.output}: decoded in {seconds:.3f} s")


def _cmd_info(args: argparse.Namespace) -> None:
    from lic.bitstream import read_file  # bytes only: no torch import

    stream = read_file(args.input)
    height, width = stream.image_size
    parts = stream.tiles or (stream,)
    total = sum(len(s) for part in parts for strings in part.strings.values() for s in strings)
    print(f"codec        {stream.codec}")
    print(f"fingerprint  {stream.fingerprint.hex()}")
    print(f"lambda       {stream.lmbda if stream.lmbda is not None else 'unknown'}")
    if stream.quality is not None:
        print(f"quality      {stream.quality:g} (variable-rate codec)")
    print(f"metric       {stream.metric or 'unknown'}")
    if stream.tiling is None:
        padding = f"padding l,r,t,b = {stream.padding}"
        print(f"images       {stream.batch_size} of {width}x{height} ({padding})")
    else:
        tile, overlap = stream.tiling
        print(f"images       1 of {width}x{height}")
        print(f"tiles        {len(stream.tiles)} of at most {tile}x{tile}, overlap {overlap}")
    for name in parts[0].shapes:
        sizes = [len(s) for part in parts for s in part.strings[name]]
        shape = f"shape {tuple(parts[0].shapes[name])}, " if stream.tiling is None else ""
        print(f"latent {name:<5} {shape}{sum(sizes)} bytes")
    print(f"payload      {total} bytes")


def _cmd_export(args: argparse.Namespace) -> None:
    from lic.bitstream import short_fingerprint
    from lic.training.export import export_training_checkpoint

    fingerprint = export_training_checkpoint(args.input, args.output)
    print(f"{args.output}: codec checkpoint, fingerprint {short_fingerprint(fingerprint)}")


def _cmd_datasets(args: argparse.Namespace) -> None:
    from lic.evaluation import datasets

    catalog = datasets.load_catalog(args.catalog)
    if args.action == "list":
        for spec in catalog.values():
            state = "installed" if (args.root / spec.name / datasets.MARKER).is_file() else "-"
            print(f"{spec.name:<30} {spec.count:>4} images  {state:<9}  {spec.description}")
            for remote in spec.files[:1]:
                more = f" (+{len(spec.files) - 1} more)" if len(spec.files) > 1 else ""
                print(f"{'':<30} {remote.url}{more}")
        return
    if not args.name:
        raise UsageError(f"lic datasets {args.action} needs a dataset NAME")
    spec = datasets.get_spec(args.name, catalog)
    if args.action == "download":
        folder = datasets.download(spec, args.root)
        print(f"{folder}: {spec.count} images, verified")
        return
    problems = datasets.verify(spec, args.root / spec.name)
    if problems:
        raise LicError(f"{spec.name}: {len(problems)} problem(s): {'; '.join(problems[:5])}")
    print(f"{args.root / spec.name}: {spec.count} images, all checks passed")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from lic.evaluation.datasets import resolve_images
    from lic.evaluation.runner import run_evaluation
    from lic.paths import shared_dir

    label, images = resolve_images(args.dataset, args.data_root, shared_dir() / "datasets")
    if args.limit:
        images = images[: args.limit]
    anchors = [a for a in (args.anchors or "").split(",") if a]
    checkpoints = args.checkpoint
    if checkpoints is None and not args.anchors_only:
        from lic.pretrained import default_checkpoints

        checkpoints = default_checkpoints()
    qualities = None
    if args.qualities:
        try:
            qualities = [float(q) for q in args.qualities.split(",")]
        except ValueError:
            raise UsageError(
                f"--qualities takes numbers separated by commas, got {args.qualities!r}"
            ) from None
    written = run_evaluation(
        images,
        checkpoints or [],
        args.output,
        anchors,
        args.device,
        args.name,
        label,
        qualities,
        args.refine,
    )
    for path in written:
        print(path)
    print(args.output / "per-image.csv")


def _cmd_report(args: argparse.Namespace) -> None:
    from lic.evaluation.report import write_report

    report = write_report(args.results, args.anchor, args.output)
    for row in report["rows"]:
        rate = "n/a" if row["bd_rate_psnr"] is None else f"{row['bd_rate_psnr']:+.2f}%"
        print(f"{row['name']:<40} BD-rate vs {report['anchor']}: {rate}")
    print(args.output / "report.md")


def _cmd_bench(args: argparse.Namespace) -> None:
    import json

    from lic.checkpoint import load_codec
    from lic.codecs import create_codec
    from lic.coding import resolve_device
    from lic.evaluation.bench import format_table, run_benchmark

    device = resolve_device(args.device)
    codecs = {}
    for path in args.checkpoint or []:
        codec = load_codec(path)
        codecs[f"{codec.codec_name} ({path.name})"] = codec
    for name in args.codec or []:
        codec = create_codec(name)
        codec.update(force=True)
        codecs[name] = codec
    qualities = {}
    if not codecs:
        from lic import pretrained

        for path in pretrained.default_checkpoints():
            codec = load_codec(path)
            label = f"default {codec.codec_name} ({path.name})"
            if getattr(codec, "variable_rate", False):  # at the quality encode uses by default
                quality = pretrained.default_quality()
                label = f"default {codec.codec_name} ({path.name}, quality {quality:g})"
                qualities[label] = quality
            codecs[label] = codec
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must be WIDTHxHEIGHT, got {args.size!r}") from None
    report = run_benchmark(
        codecs, height, width, device, runs=args.runs, warmup=args.warmup, qualities=qualities
    )
    print(format_table(report))
    if args.output:
        from lic.files import atomic_output

        with atomic_output(args.output) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
        print(args.output)


def _cmd_demo(args: argparse.Namespace) -> None:
    from lic.demo import SAMPLES_DIR, format_rows, run_demo, sample_photos
    from lic.evaluation.datasets import resolve_images
    from lic.paths import shared_dir

    images = list(args.images)
    if not images:
        try:
            _, kodak = resolve_images("kodak", args.data_root, shared_dir() / "datasets")
            images = kodak[:: max(1, len(kodak) // args.samples)][: args.samples]
        except UsageError:
            # No Kodak set (a fresh clone alone, or an installed lic): the photos in the package.
            images = sample_photos()[: args.samples]
            if not images:
                raise UsageError(
                    "no sample images: give image files, or point $LIC_SHARED at the shared "
                    "material"
                ) from None
            print(
                f"Kodak set not found: coding {len(images)} sample photos shipped with lic "
                f"({SAMPLES_DIR}, small crops of Kodak photos)"
            )
    rows = run_demo(images, args.output, args.quality, args.device, args.checkpoint)
    print(format_rows(rows))
    print(f"files in {args.output}/ (.lic bitstreams and their decoded .png)")


def _cmd_codecs(args: argparse.Namespace) -> None:
    from lic.codecs import codec_spec, create_codec, list_codecs

    names = args.names or list_codecs()
    width = max(len("codec"), *(len(name) for name in names))
    print(f"{'codec':<{width}} {'parameters':>10}  description")
    for name in names:
        spec = codec_spec(name)
        count = sum(p.numel() for p in create_codec(name).parameters())
        print(f"{name:<{width}} {count:>10,}  {spec.description}")


def _default_qualities() -> str:
    """The installed default codec's qualities in words (its manifest; no torch import)."""
    from lic import pretrained

    try:
        return pretrained.describe_qualities()
    except LicError:
        return "none (no default weights installed)"


def build_parser() -> argparse.ArgumentParser:
    from lic.paths import data_root

    parser = argparse.ArgumentParser(prog="lic", description="Learned image compression.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("encode", help="compress an image into a .lic file")
    p.add_argument("input", help="image file (PNG, JPEG, ...)")
    p.add_argument("-o", "--output", required=True, help="output .lic file")
    p.add_argument("--checkpoint", help="codec checkpoint (default: the shipped default codec)")
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "-q",
        "--quality",
        type=float,
        help=f"quality of the default codec: {_default_qualities()}; or any quality in the "
        "range of a variable-rate checkpoint (e.g. 1 to 8 for *-vr codecs)",
    )
    target.add_argument(
        "--target-bpp",
        type=float,
        help="the largest quality whose file is at most this many bits per pixel",
    )
    target.add_argument(
        "--target-psnr", type=float, help="the smallest quality that reaches this PSNR (dB)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--max-pixels", type=int, help=MAX_PIXELS_HELP)
    p.add_argument(
        "--tile",
        type=int,
        help="code images larger than this many pixels a side in overlapping tiles, which "
        "bounds memory (default: $LIC_TILE or 2048; 0: never tile)",
    )
    p.add_argument(
        "--refine",
        type=int,
        nargs="?",
        const=DEFAULT_REFINE_STEPS,
        default=0,
        metavar="STEPS",
        help="refine the latents by STEPS gradient steps on the codec's rate-distortion "
        f"objective before coding (default STEPS: {DEFAULT_REFINE_STEPS}): smaller files or "
        "higher PSNR for much slower encoding; decoding is unchanged",
    )
    p.set_defaults(run=_cmd_encode)

    p = sub.add_parser("decode", help="decompress a .lic file into a PNG")
    p.add_argument("input", help=".lic file")
    p.add_argument("-o", "--output", required=True, help="output PNG file")
    p.add_argument(
        "--checkpoint",
        help="codec checkpoint whose fingerprint matches the file "
        "(default: the shipped weights that made it)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--max-pixels", type=int, help=MAX_PIXELS_HELP)
    p.set_defaults(run=_cmd_decode)

    p = sub.add_parser("info", help="print the header of a .lic file")
    p.add_argument("input", help=".lic file")
    p.set_defaults(run=_cmd_info)

    p = sub.add_parser("demo", help="code sample photos with the default codec, compare with JPEG")
    p.add_argument(
        "images",
        nargs="*",
        type=Path,
        help="images (default: sample Kodak photos from the shared folder, else the "
        "small sample photos shipped with lic)",
    )
    p.add_argument(
        "--checkpoint", type=Path, help="a codec checkpoint instead of the default codec"
    )
    p.add_argument(
        "--samples", type=int, default=4, help="how many Kodak photos by default (default: 4)"
    )
    p.add_argument(
        "-q",
        "--quality",
        type=float,
        help=f"quality of the default codec: {_default_qualities()}",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--data-root", type=Path, default=data_root(), help=argparse.SUPPRESS)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("demo-out"),
        help="output folder (default: demo-out)",
    )
    p.set_defaults(run=_cmd_demo)

    p = sub.add_parser("export", help="turn a training checkpoint into a codec checkpoint")
    p.add_argument("input", help="Lightning checkpoint of a lic training run")
    p.add_argument("-o", "--output", required=True, help="codec checkpoint for lic encode")
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("datasets", help="list, download or verify the standard test sets")
    p.add_argument("action", choices=["list", "download", "verify"])
    p.add_argument("name", nargs="?", help="catalog name (see `lic datasets list`)")
    p.add_argument(
        "--root",
        type=Path,
        default=data_root(),
        help="datasets folder (default: $LIC_DATA or ./datasets)",
    )
    p.add_argument("--catalog", type=Path, help="JSON file adding or replacing catalog entries")
    p.set_defaults(run=_cmd_datasets)

    p = sub.add_parser("evaluate", help="rate-distortion of codecs and anchors on a dataset")
    p.add_argument(
        "--dataset", required=True, help="kodak, clic, tecnick, a catalog name, or a folder"
    )
    p.add_argument(
        "--checkpoint",
        nargs="+",
        type=Path,
        help="codec checkpoints (one codec's form one curve; default: "
        "the shipped default codec at all its rate points)",
    )
    p.add_argument("--anchors-only", action="store_true", help="no learned codec, only --anchors")
    p.add_argument(
        "--qualities",
        help="points of a variable-rate checkpoint, e.g. 1,2.5,4,8 (default: every trained level)",
    )
    p.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="STEPS",
        help="encoder-side refinement steps per image for the checkpoints (as lic encode "
        "--refine; default 0: none)",
    )
    p.add_argument("--name", help="curve name for the checkpoints (default: the codec's)")
    p.add_argument("--anchors", help="comma-separated: jpeg,webp,avif,jxl,jpeg2000,bpg")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument(
        "--data-root", type=Path, default=data_root(), help="where downloaded datasets are"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.set_defaults(run=_cmd_evaluate)

    p = sub.add_parser("report", help="BD-rate table and RD plots from results JSON files")
    p.add_argument("results", nargs="+", type=Path, help="results JSON files (CompressAI's shape)")
    p.add_argument("--anchor", required=True, help="name of one curve, or a results JSON file")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.set_defaults(run=_cmd_report)

    p = sub.add_parser(
        "bench", help="parameters, MACs, latency (network vs entropy coding), memory"
    )
    p.add_argument(
        "--checkpoint",
        nargs="+",
        type=Path,
        help="codec checkpoints (default, without --codec: the shipped default codec)",
    )
    p.add_argument("--codec", nargs="+", help="registered codecs (untrained weights)")
    p.add_argument("--size", default="768x512", help="WIDTHxHEIGHT (default: Kodak's 768x512)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("-o", "--output", type=Path, help="JSON file for the figures")
    p.set_defaults(run=_cmd_bench)

    p = sub.add_parser("codecs", help="list registered codecs with their parameter counts")
    p.add_argument("names", nargs="*", help="only these codecs")
    p.set_defaults(run=_cmd_codecs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except LicError as exc:
        print(f"lic: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # unwritable output, full disk, ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"lic: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lic: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
