"""Bitstreams from elsewhere: every byte string decodes or fails with a LicError, never worse.

A seeded mutator derives thousands of containers from two valid ones: random bytes,
truncations, bit flips (caught by the CRC), the same flips re-sealed with a valid CRC (so they
reach the parser and the decoder), forged header fields, garbage and zero-length payloads.
Payloads are read by lic.rans, never by CompressAI's unchecked decoder (``tests/test_rans.py``
has the decoder's own proofs).
"""

from __future__ import annotations

import dataclasses
import random
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter

import pytest
import torch

import lic
from lic import bitstream, coding
from lic.errors import BitstreamError, LicError

FUZZ_CASES = 3000


def _seal(body: bytes) -> bytes:
    """Give ``body`` (a container without its CRC) a valid CRC."""
    return body + zlib.crc32(body).to_bytes(4, "big")


@pytest.fixture(scope="module")
def codec_and_files(tiny_checkpoint):
    codec = lic.load_codec(tiny_checkpoint)
    gen = torch.Generator().manual_seed(3)
    files = [
        coding.encode(codec, torch.rand(1, 3, 64, 64, generator=gen)),
        coding.encode(codec, torch.rand(1, 3, 70, 45, generator=gen)),
        coding.encode(codec, torch.rand(1, 3, 64, 150, generator=gen), tile=64, overlap=16),
    ]
    assert bitstream.unpack(files[-1]).tiling == (64, 16)
    return codec, files


def _forge(rng: random.Random, data: bytes) -> bytes:
    """A structurally valid container with semantically hostile fields."""
    stream = bitstream.unpack(data)
    if stream.tiling is not None:  # the image size or the tiling, or one tile's fields
        at = data.index(struct.pack(">IIIH", *stream.image_size, *stream.tiling))
        choice = rng.random()
        if choice < 0.3:
            side = rng.choice([1, 64, 2**16, 2**31, 2**32 - 1])
            fields = struct.pack(">II", side, rng.choice([1, side])) + data[at + 8 : at + 14]
        elif choice < 0.6:
            tile = rng.choice([0, 63, 64, 65, 128, 2**32 - 1])
            fields = data[at : at + 8] + struct.pack(">IH", tile, rng.randrange(64))
        else:
            tiles = list(stream.tiles)
            index = rng.randrange(len(tiles))
            tiles[index] = bitstream.unpack(_forge_one(rng, tiles[index], first_kind=1))
            return bitstream.pack(dataclasses.replace(stream, tiles=tuple(tiles)))
        return _seal(data[:at] + fields + data[at + 14 : -4])
    return _forge_one(rng, stream)


def _forge_one(rng: random.Random, stream: bitstream.Bitstream, first_kind: int = 0) -> bytes:
    kind = rng.randrange(first_kind, 7)
    if kind == 0:  # huge image claims
        side = rng.choice([2**16, 2**20, 2**31, 2**32 - 1])
        return bitstream.pack(dataclasses.replace(stream, image_size=(side, rng.choice([1, side]))))
    if kind == 1:  # shapes that do not fit the image size
        shapes = {n: (rng.randrange(0, 2**16), rng.randrange(0, 2**16)) for n in stream.shapes}
        return bitstream.pack(dataclasses.replace(stream, shapes=shapes))
    if kind == 2:  # wrong padding
        padding = tuple(rng.randrange(0, 2**16) for _ in range(4))
        return bitstream.pack(dataclasses.replace(stream, padding=padding))
    if kind == 3:  # zero-length strings
        strings = {n: [b"" for _ in s] for n, s in stream.strings.items()}
        return bitstream.pack(dataclasses.replace(stream, strings=strings))
    if kind == 4:  # garbage payloads of any length
        strings = {
            n: [rng.randbytes(rng.choice([1, 3, 8, 64, 2000])) for _ in s]
            for n, s in stream.strings.items()
        }
        return bitstream.pack(dataclasses.replace(stream, strings=strings))
    if kind == 5:  # payloads swapped between latents
        strings = {"y": stream.strings["z"], "z": stream.strings["y"]}
        return bitstream.pack(dataclasses.replace(stream, strings=strings))
    # all-0xFF payloads: maximal rANS states and escape (bypass) codes
    strings = {n: [b"\xff" * max(len(x), 8) for x in s] for n, s in stream.strings.items()}
    return bitstream.pack(dataclasses.replace(stream, strings=strings))


def _mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    body = bytearray(data[:-4])
    kind = rng.choice(
        ["random", "truncate", "flip", "flip+seal", "payload+seal", "splice+seal", "forge"]
    )
    if kind == "random":
        return kind, rng.randbytes(rng.randrange(0, 200))
    if kind == "truncate":
        return kind, data[: rng.randrange(0, len(data))]
    if kind == "flip":
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 9)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return kind, bytes(flipped)
    if kind == "flip+seal":  # anywhere, header included
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        return kind, _seal(bytes(body))
    if kind == "payload+seal":  # only the entropy-coded bytes (the last ~half of the file)
        start = len(body) // 2
        for _ in range(rng.randrange(1, 16)):
            body[rng.randrange(start, len(body))] = rng.randrange(256)
        return kind, _seal(bytes(body))
    if kind == "splice+seal":
        at = rng.randrange(len(body))
        if rng.random() < 0.5:
            del body[at : at + rng.randrange(1, 16)]
        else:
            body[at:at] = rng.randbytes(rng.randrange(1, 16))
        return kind, _seal(bytes(body))
    return kind, _forge(rng, data)


@pytest.mark.timeout(600)
def test_fuzzed_containers_decode_or_fail_cleanly(codec_and_files) -> None:
    codec, files = codec_and_files
    rng = random.Random(20261121)
    outcomes: Counter[str] = Counter()
    slowest = 0.0
    for case in range(FUZZ_CASES):
        kind, data = _mutate(rng, files[case % len(files)])
        start = time.perf_counter()
        try:
            images = coding.decode(codec, data)
        except LicError as exc:
            assert "\n" not in str(exc), (kind, str(exc))
            outcomes[f"{kind}: {type(exc).__name__}"] += 1
        else:
            assert images.dim() == 4 and images.shape[1] == 3
            assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
            outcomes[f"{kind}: decoded"] += 1
        slowest = max(slowest, time.perf_counter() - start)
    print(f"\n{FUZZ_CASES} fuzzed containers, slowest {slowest:.3f} s")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {count:5d}  {outcome}")
    assert sum(outcomes.values()) == FUZZ_CASES
    # The mutator must reach the rANS decoder, not only the CRC check.
    assert sum(c for o, c in outcomes.items() if o.endswith(("decoded", "RansError"))) > 300
    assert sum(c for o, c in outcomes.items() if "seal" in o and not o.endswith("decoded")) > 100


def test_huge_size_claim_is_refused_before_allocation(codec_and_files) -> None:
    codec, files = codec_and_files
    stream = bitstream.unpack(files[0])
    forged = bitstream.pack(dataclasses.replace(stream, image_size=(2**31, 2**31)))
    start = time.perf_counter()
    with pytest.raises(BitstreamError, match="exceeds the limit of 33,554,432"):
        coding.decode(codec, forged)
    assert time.perf_counter() - start < 1.0  # refused from the header, nothing computed
    small = bitstream.pack(dataclasses.replace(stream))
    with pytest.raises(BitstreamError, match="exceeds the limit of 100"):
        coding.decode(codec, small, max_pixels=100)


def test_cli_reports_hostile_files_in_one_line_and_writes_nothing(
    codec_and_files, tiny_checkpoint, tmp_path
) -> None:
    _, files = codec_and_files
    stream = bitstream.unpack(files[0])
    hostile = {
        "random.lic": random.Random(1).randbytes(300),
        "empty.lic": b"",
        "truncated.lic": files[0][: len(files[0]) // 2],
        "huge.lic": bitstream.pack(dataclasses.replace(stream, image_size=(60000, 60000))),
        "shapes.lic": bitstream.pack(
            dataclasses.replace(stream, shapes={"y": (9, 9), "z": (1, 1)})
        ),
    }
    for name, data in hostile.items():
        (tmp_path / name).write_bytes(data)
        output = tmp_path / f"{name}.png"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "lic.cli",
                "decode",
                str(tmp_path / name),
                "-o",
                str(output),
                "--checkpoint",
                str(tiny_checkpoint),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1, (name, result.stderr)
        assert result.stderr.startswith("lic: error: ") and result.stderr.count("\n") == 1, (
            result.stderr
        )
        assert "Traceback" not in result.stderr
        assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == []


def _never_compressai(monkeypatch) -> None:
    """Make any use of CompressAI's rANS decoder fail the test."""
    from compressai.entropy_models.entropy_models import _EntropyCoder

    import lic.codecs.codec as codec_module

    def refuse(*args, **kwargs):
        raise AssertionError("a string reached CompressAI's unchecked rANS decoder")

    monkeypatch.setattr(_EntropyCoder, "decode_with_indexes", refuse)
    monkeypatch.setattr(codec_module, "RansDecoder", refuse, raising=False)


def test_garbage_payload_with_valid_header_ends_cleanly(codec_and_files, monkeypatch) -> None:
    """A forged payload under a valid header is refused by the rANS checks or decodes."""
    _never_compressai(monkeypatch)
    codec, files = codec_and_files
    stream = bitstream.unpack(files[0])
    assert coding.decode(codec, files[0]).shape == (1, 3, 64, 64)
    rng = random.Random(7)
    for length in (0, 1, 7, 8, 100, 5000):
        strings = {n: [rng.randbytes(length)] for n in stream.strings}
        try:
            images = coding.decode(
                codec, bitstream.pack(dataclasses.replace(stream, strings=strings))
            )
        except BitstreamError as exc:
            assert "rANS string" in str(exc) and "\n" not in str(exc)
        else:
            assert images.shape == (1, 3, 64, 64) and torch.isfinite(images).all()


@pytest.mark.parametrize("latent", ["y", "z"])
def test_worst_case_payloads_are_refused_within_their_bytes(
    codec_and_files, monkeypatch, latent
) -> None:
    """All-ones strings (bypass counts chained without end), payloads cut short, payloads with
    a word too many: refused, each with a one-line reason, by lic.rans."""
    from lic.rans import RansError

    _never_compressai(monkeypatch)
    codec, files = codec_and_files
    stream = bitstream.unpack(files[0])
    honest = stream.strings[latent][0]
    cases = {
        "all-ones": (b"\xff" * len(honest), "bypass count|read past its end"),
        "all-ones-long": (b"\xff" * 65536, "bypass count|read past its end"),
        "cut": (honest[:-4], "read past its end"),
        "word-too-many": (honest + bytes(4), "left after its"),
        "not-words": (honest + bytes(1), "whole number of 32-bit words"),
    }
    for name, (payload, reason) in cases.items():
        strings = dict(stream.strings, **{latent: [payload]})
        forged = bitstream.pack(dataclasses.replace(stream, strings=strings))
        with pytest.raises(RansError, match=reason) as info:
            coding.decode(codec, forged)
        assert "\n" not in str(info.value), name


def test_out_of_range_symbols_are_clamped_before_synthesis(codec_and_files, monkeypatch):
    """A well-formed string holding a value far outside the coding tables (which the encoder
    writes as an escape code) decodes exactly as the same file with that value clamped.

    The value is forged into the last slice, whose symbols no later context depends on, so
    both files are read with the same tables and only that value differs.
    """
    from compressai.ans import BufferedRansEncoder

    import lic.codecs.codec as codec_module
    from lic.rans import symbol_range

    codec, _ = codec_and_files
    low, high = symbol_range(*codec._coding_tables()[1:])
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(11))
    files = {}
    for value in (2**26, high, -(2**26), low):

        class Forging:
            def __init__(self, value=value):
                self.encoder, self.value, self.calls = BufferedRansEncoder(), value, 0

            def encode_with_indexes(self, symbols, *tables):
                symbols = list(symbols)
                self.calls += 1
                if self.calls == codec.context.num_slices:
                    symbols[5] = self.value
                self.encoder.encode_with_indexes(symbols, *tables)

            def flush(self):
                return self.encoder.flush()

        monkeypatch.setattr(codec_module, "BufferedRansEncoder", Forging)
        files[value] = coding.encode(codec, image)
    monkeypatch.undo()
    _never_compressai(monkeypatch)
    for far, clamped in ((2**26, high), (-(2**26), low)):
        assert files[far] != files[clamped]
        assert torch.equal(coding.decode(codec, files[far]), coding.decode(codec, files[clamped]))
