"""The container: exact round trip, and clear refusals of anything that is not a valid file."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch

import lic
from lic import bitstream, coding
from lic.bitstream import Bitstream, short_fingerprint
from lic.errors import BitstreamError, CheckpointError


def _stream(**changes) -> Bitstream:
    fields = {
        "codec": "student-tiny",
        "fingerprint": bytes(range(8)),
        "lmbda": 0.0130,
        "metric": "mse",
        "image_size": (97, 131),
        "padding": (0, 61, 0, 31),
        "shapes": {"y": (8, 12), "z": (2, 3)},
        "strings": {"y": [b"\x01\x02\x03", b""], "z": [b"zz", b"\xff" * 300]},
    }
    fields.update(changes)
    return Bitstream(**fields)


def test_pack_unpack_round_trip_keeps_every_field() -> None:
    stream = _stream()
    back = bitstream.unpack(bitstream.pack(stream))
    assert back.codec == stream.codec and back.fingerprint == stream.fingerprint
    assert back.lmbda == pytest.approx(0.0130)
    assert back.metric == "mse"
    assert back.image_size == (97, 131) and back.padding == (0, 61, 0, 31)
    assert back.shapes == {"y": (8, 12), "z": (2, 3)}
    assert back.strings == stream.strings
    assert back.batch_size == 2


def test_unknown_lambda_and_metric_survive() -> None:
    back = bitstream.unpack(bitstream.pack(_stream(lmbda=None, metric=None)))
    assert back.lmbda is None and back.metric is None


def test_wrong_magic_is_refused() -> None:
    data = bytearray(bitstream.pack(_stream()))
    data[0:4] = b"\x89PNG"
    with pytest.raises(BitstreamError, match="wrong magic"):
        bitstream.unpack(bytes(data))


def test_unknown_version_is_refused_before_anything_else() -> None:
    data = bytearray(bitstream.pack(_stream()))
    data[4] = 7
    with pytest.raises(BitstreamError, match="unsupported bitstream format version 7"):
        bitstream.unpack(bytes(data))


@pytest.mark.parametrize("position", [6, 12, 30, -10, -1])
def test_any_flipped_bit_fails_the_crc(position: int) -> None:
    data = bytearray(bitstream.pack(_stream()))
    data[position] ^= 0x10
    with pytest.raises(BitstreamError, match="CRC32 mismatch"):
        bitstream.unpack(bytes(data))


def test_every_truncation_is_refused() -> None:
    data = bitstream.pack(_stream())
    for length in range(len(data)):
        with pytest.raises(BitstreamError):
            bitstream.unpack(data[:length])


def test_trailing_bytes_inside_a_valid_crc_are_refused() -> None:
    data = bitstream.pack(_stream())[:-4] + b"junk"
    data += struct.pack(">I", zlib.crc32(data))
    with pytest.raises(BitstreamError, match="unexpected bytes"):
        bitstream.unpack(data)


def test_header_claiming_more_bytes_than_present_is_truncation() -> None:
    stream = _stream(strings={"y": [b"a", b"b"], "z": [b"c", b"d"]})
    data = bytearray(bitstream.pack(stream)[:-4])
    last_length = len(data) - 1 - 4  # the u32 length of the final one-byte string
    data[last_length : last_length + 4] = struct.pack(">I", 2**31)
    data += struct.pack(">I", zlib.crc32(bytes(data)))
    with pytest.raises(BitstreamError, match="truncated"):
        bitstream.unpack(bytes(data))


def test_decoding_with_other_weights_names_both_fingerprints(tiny_checkpoint, tmp_path) -> None:
    codec = lic.load_codec(tiny_checkpoint)
    data = coding.encode(codec, torch.rand(1, 3, 16, 16))
    other = lic.create_codec("student-tiny")
    other_path = tmp_path / "other.ckpt"
    lic.save_codec(other, other_path)
    other = lic.load_codec(other_path)
    with pytest.raises(CheckpointError) as info:
        coding.decode(other, data)
    message = str(info.value)
    assert short_fingerprint(codec.fingerprint) in message
    assert short_fingerprint(other.fingerprint) in message
