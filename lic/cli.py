"""``lic``: the command line. Each subcommand parses arguments and calls one library function.

Errors reach the user as one line on stderr: exit 1 for bad data, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from lic.errors import LicError


def _cmd_encode(args: argparse.Namespace) -> None:
    from lic.coding import encode_file

    report = encode_file(args.input, args.output, args.checkpoint, device=args.device)
    if report.notice:
        print(f"lic: note: {args.input}: {report.notice}", file=sys.stderr)
    print(
        f"{args.output}: {report.num_bytes} bytes, {report.bpp:.4f} bpp, "
        f"{report.width}x{report.height}, encoded in {report.seconds:.3f} s"
    )


def _cmd_decode(args: argparse.Namespace) -> None:
    from lic.coding import decode_file

    seconds = decode_file(args.input, args.output, args.checkpoint, device=args.device)
    print(f"{args.output}: decoded in {seconds:.3f} s")


def _cmd_info(args: argparse.Namespace) -> None:
    from lic.coding import read_bitstream_file

    stream = read_bitstream_file(args.input)
    height, width = stream.image_size
    total = sum(len(s) for strings in stream.strings.values() for s in strings)
    print(f"codec        {stream.codec}")
    print(f"fingerprint  {stream.fingerprint.hex()}")
    print(f"lambda       {stream.lmbda if stream.lmbda is not None else 'unknown'}")
    print(f"metric       {stream.metric or 'unknown'}")
    print(
        f"images       {stream.batch_size} of {width}x{height} (padding l,r,t,b = {stream.padding})"
    )
    for name, shape in stream.shapes.items():
        sizes = [len(s) for s in stream.strings[name]]
        print(f"latent {name:<5} shape {tuple(shape)}, {sum(sizes)} bytes")
    print(f"payload      {total} bytes")


def _cmd_export(args: argparse.Namespace) -> None:
    from lic.training.export import export_training_checkpoint

    fingerprint = export_training_checkpoint(args.input, args.output)
    print(f"{args.output}: codec checkpoint, fingerprint {fingerprint[:16]}")


def _cmd_codecs(args: argparse.Namespace) -> None:
    from lic.codecs import codec_spec, create_codec, list_codecs

    names = args.names or list_codecs()
    print(f"{'codec':<20} {'parameters':>12}  description")
    for name in names:
        spec = codec_spec(name)
        count = sum(p.numel() for p in create_codec(name).parameters())
        print(f"{name:<20} {count:>12,}  {spec.description}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lic", description="Learned image compression.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("encode", help="compress an image into a .lic file")
    p.add_argument("input", help="image file (PNG, JPEG, ...)")
    p.add_argument("-o", "--output", required=True, help="output .lic file")
    p.add_argument("--checkpoint", required=True, help="codec checkpoint (lic.save_codec)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.set_defaults(run=_cmd_encode)

    p = sub.add_parser("decode", help="decompress a .lic file into a PNG")
    p.add_argument("input", help=".lic file")
    p.add_argument("-o", "--output", required=True, help="output PNG file")
    p.add_argument("--checkpoint", help="codec checkpoint whose fingerprint matches the file")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.set_defaults(run=_cmd_decode)

    p = sub.add_parser("info", help="print the header of a .lic file")
    p.add_argument("input", help=".lic file")
    p.set_defaults(run=_cmd_info)

    p = sub.add_parser("export", help="turn a training checkpoint into a codec checkpoint")
    p.add_argument("input", help="Lightning checkpoint of a lic training run")
    p.add_argument("-o", "--output", required=True, help="codec checkpoint for lic encode")
    p.set_defaults(run=_cmd_export)

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
