"""What the bounds-checked rANS decoder (lic.rans) costs, against CompressAI's C++ decoder.

Each image is encoded with the shipped default codec at ``--quality`` (its checkpoint of that
quality, or its variable-rate model at that quality) and decoded with ``lic.coding.decode``,
which reads every string with :class:`lic.rans.RansDecoder`. The calls it makes are recorded
and replayed on both decoders (same strings, same indexes, same tables), so the two times are
for exactly the same work; the whole decode is timed too. Each time is the fastest of
``--runs`` (the machine may be busy).

    python scripts/rans_cost.py ../shared/datasets/kodak/kodim*.png --quality 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from lic import coding, pretrained, rans
from lic.checkpoint import load_codec
from lic.imageio import load_image

#: The decoder itself; ``lic.rans.RansDecoder`` is replaced by a recording subclass below.
DECODER = rans.RansDecoder


def _record(calls: list) -> None:
    """Make the decoder record (string, indexes, tables) of every ``decode_stream`` call."""

    class Recording(DECODER):
        def set_stream(self, string):
            self.recorded_string = bytes(string)
            return super().set_stream(string)

        def decode_stream(self, indexes, cdfs, cdf_lengths, offsets):
            calls.append((self.recorded_string, list(indexes), cdfs, cdf_lengths, offsets))
            return super().decode_stream(indexes, cdfs, cdf_lengths, offsets)

    rans.RansDecoder = Recording


def _replay(decoder_class, calls: list) -> float:
    start = time.perf_counter()
    decoders: dict[bytes, object] = {}
    for string, indexes, cdfs, cdf_lengths, offsets in calls:
        decoder = decoders.get(string)
        if decoder is None:
            decoder = decoders[string] = decoder_class()
            decoder.set_stream(string)
        decoder.decode_stream(indexes, cdfs, cdf_lengths, offsets)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument(
        "--quality",
        type=float,
        default=3,
        help="a quality of the default codec (a whole number for a fixed-rate one; default 3)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=5,
        help="the fastest of this many runs (the machine may be busy)",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("-o", "--output", type=Path, help="write the measurements as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from compressai.ans import RansDecoder as CompressaiDecoder  # after lic's torchvision shim

    codec = load_codec(pretrained.default_checkpoint(args.quality))
    quality = args.quality if codec.variable_rate else None  # a fixed-rate file has one rate
    calls: list = []
    _record(calls)
    rows = []
    warm_up = coding.encode(codec, load_image(args.images[0]).to_tensor(), quality)
    coding.decode(codec, warm_up)  # builds the fixed-point networks once
    print(f"{'image':<14} {'symbols':>8} {'C++ ms':>8} {'lic.rans ms':>12} {'decode ms':>10}")
    for path in args.images:
        data = coding.encode(codec, load_image(path).to_tensor(), quality)
        decode_s, cpp_s, python_s = [], [], []
        for _ in range(args.runs):
            calls.clear()
            start = time.perf_counter()
            coding.decode(codec, data)
            decode_s.append(time.perf_counter() - start)
            replay = list(calls)
            cpp_s.append(_replay(CompressaiDecoder, replay))
            python_s.append(_replay(DECODER, replay))
        if not calls:
            print("lic.rans.RansDecoder was not used by the decoder", file=sys.stderr)
            return 1
        row = {
            "image": path.name,
            "bytes": len(data),
            "symbols": sum(len(call[1]) for call in calls),
            "compressai_s": min(cpp_s),
            "lic_rans_s": min(python_s),
            "decode_s": min(decode_s),
        }
        rows.append(row)
        print(
            f"{row['image']:<14} {row['symbols']:>8,} {1000 * row['compressai_s']:>8.1f} "
            f"{1000 * row['lic_rans_s']:>12.1f} {1000 * row['decode_s']:>10.1f}"
        )
    cpp = statistics.mean(r["compressai_s"] for r in rows)
    python = statistics.mean(r["lic_rans_s"] for r in rows)
    decode = statistics.mean(r["decode_s"] for r in rows)
    added = python - cpp
    print(
        f"mean of {len(rows)}: CompressAI {1000 * cpp:.1f} ms, lic.rans {1000 * python:.1f} ms, "
        f"decode {1000 * decode:.1f} ms; lic.rans adds {1000 * added:.1f} ms "
        f"({100 * added / (decode - added):.1f}% of a decode with CompressAI's decoder)"
    )
    if args.output:
        shown = int(args.quality) if args.quality.is_integer() else args.quality
        summary = {"quality": shown, "threads": args.threads, "runs": args.runs}
        args.output.write_text(json.dumps(summary | {"images": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
