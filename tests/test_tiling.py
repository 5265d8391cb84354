"""Tiled coding (lic.tiling): the grid, the blend, the container field and bounded memory."""

from __future__ import annotations

import dataclasses
import itertools
import struct
import zlib

import numpy as np
import pytest
import torch

import lic
from lic import bitstream, coding, pretrained, tiling
from lic.cli import main
from lic.demo import SAMPLES_DIR
from lic.errors import BitstreamError, UsageError
from lic.imageio import load_image, tensor_to_pixels

SAMPLE = SAMPLES_DIR / "kodim19.png"  # 256 x 192 (height x width)

GRIDS = list(
    itertools.product(
        [1, 63, 64, 65, 200, 700, 1000, 4097],  # height
        [1, 130, 901, 2048, 2049],  # width
        [(64, 0), (64, 16), (128, 32), (256, 32), (512, 0), (2048, 32), (100, 25)],
    )
)


@pytest.mark.parametrize(("height", "width", "setting"), GRIDS)
def test_grid_covers_the_image_with_the_stated_overlap(height, width, setting) -> None:
    tile, overlap = setting
    boxes = tiling.grid(height, width, tile, overlap)
    assert len(boxes) == tiling.count(height, width, tile, overlap)
    for axis_length, starts, sizes in (
        (height, sorted({b.top for b in boxes}), sorted({(b.top, b.height) for b in boxes})),
        (width, sorted({b.left for b in boxes}), sorted({(b.left, b.width) for b in boxes})),
    ):
        assert starts[0] == 0
        ends = [start + size for start, size in sizes]
        assert ends[-1] == axis_length
        for size in (size for _, size in sizes):
            assert 1 <= size <= max(tile, axis_length if axis_length <= tile else 0)
        for (start, size), (next_start, _) in itertools.pairwise(sizes):
            assert start + size - next_start == overlap  # neighbours share exactly the band
    # A constant image blends back to itself: the weights are a partition of unity.
    blender = tiling.Blender(height, width, overlap)
    for box in boxes:
        blender.add(box, np.full((box.height, box.width, 3), 0.5, dtype=np.float32))
    np.testing.assert_allclose(blender.canvas, 0.5, atol=1e-6)


def test_all_tiles_but_the_last_need_no_padding() -> None:
    for length in (2049, 3000, 5000, 8191, 20000):
        sizes = [size for _, size in tiling.segments(length, 2048, 32)]
        assert all(size % tiling.ALIGN == 0 for size in sizes[:-1]), (length, sizes)
        assert max(sizes) <= 2048


@pytest.mark.parametrize(("tile", "overlap"), [(63, 0), (0, 0), (64, 17), (256, -1), (256, 65)])
def test_impossible_tilings_are_refused(tile, overlap) -> None:
    with pytest.raises(ValueError, match="tile"):
        tiling.grid(500, 500, tile, overlap)


@pytest.fixture(scope="module")
def default_codec():
    return lic.load_codec(pretrained.default_checkpoint(pretrained.manifest()["default_quality"]))


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return load_image(SAMPLE).to_tensor()


def test_tiled_file_round_trips_close_to_the_whole_image(default_codec, photo) -> None:
    whole = coding.encode(default_codec, photo, tile=0)
    tiled = coding.encode(default_codec, photo, tile=128, overlap=16)
    stream = bitstream.unpack(tiled)
    assert stream.tiling == (128, 16)
    assert [p.image_size for p in stream.tiles] == [
        (b.height, b.width) for b in tiling.grid(256, 192, 128, 16)
    ]
    assert bitstream.pack(stream) == tiled
    assert coding.encode(default_codec, photo, tile=128, overlap=16) == tiled  # deterministic
    original = tensor_to_pixels(photo).astype(np.float64)

    def psnr(pixels: np.ndarray) -> float:
        return 10 * np.log10(255**2 / ((pixels - original) ** 2).mean())

    pixels = coding.decode_pixels(default_codec, stream)
    assert np.array_equal(pixels, tensor_to_pixels(coding.decode(default_codec, tiled)))
    whole_psnr = psnr(tensor_to_pixels(coding.decode(default_codec, whole)))
    assert psnr(pixels) > whole_psnr - 0.5
    # Every tile decodes on its own to what the blend shows in that tile's unshared core.
    first = tiling.grid(256, 192, 128, 16)[0]
    alone = tensor_to_pixels(coding.decode_stream(default_codec, stream.tiles[0]))
    core = (slice(0, first.height - 16), slice(0, first.width - 16))
    assert np.array_equal(pixels[core], alone[core])


def test_images_within_one_tile_are_coded_whole(default_codec, photo) -> None:
    assert coding.encode(default_codec, photo, tile=256) == coding.encode(
        default_codec, photo, tile=0
    )
    assert bitstream.unpack(coding.encode(default_codec, photo)).tiling is None  # default 2048


def test_memory_is_bounded_by_the_tile_size(default_codec, photo, monkeypatch) -> None:
    """Encoder and decoder never hand the codec more than one tile's pixels."""
    seen: list[tuple[int, ...]] = []
    compress, decompress = default_codec.compress, default_codec.decompress

    def spy_compress(x, *args, **kwargs):
        seen.append(tuple(x.shape[-2:]))
        return compress(x, *args, **kwargs)

    def spy_decompress(compressed, *args, **kwargs):
        out = decompress(compressed, *args, **kwargs)
        seen.append(tuple(out.shape[-2:]))
        return out

    monkeypatch.setattr(default_codec, "compress", spy_compress)
    monkeypatch.setattr(default_codec, "decompress", spy_decompress)
    data = coding.encode(default_codec, photo, tile=64, overlap=16)
    coding.decode_pixels(default_codec, bitstream.unpack(data))
    boxes = tiling.grid(256, 192, 64, 16)
    assert len(seen) == 2 * len(boxes) > 2
    assert max(max(shape) for shape in seen) <= 64


def _tiling_offset(data: bytes) -> int:
    """Byte offset of a tiled file's (tile, overlap) field."""
    flags = data[5]
    offset = 4 + 1 + 1 + 1 + 4 + (4 if flags & bitstream.FLAG_QUALITY else 0)
    offset += bitstream.FINGERPRINT_SIZE
    offset += 1 + data[offset] + 2 + 4 + 4
    return offset


@pytest.mark.parametrize(
    ("tile", "overlap", "message"),
    [
        (10, 0, "tiling: tile size"),
        (128, 40, "tiling: tile overlap"),
        (64, 0, "truncated"),  # claims more tiles than the file holds
    ],
)
def test_hostile_tiling_fields_are_refused(default_codec, photo, tile, overlap, message) -> None:
    data = coding.encode(default_codec, photo, tile=128, overlap=16)
    at = _tiling_offset(data)
    assert struct.unpack(">IH", data[at : at + 6]) == (128, 16)
    body = data[:at] + struct.pack(">IH", tile, overlap) + data[at + 6 : -4]
    forged = body + zlib.crc32(body).to_bytes(4, "big")
    with pytest.raises(BitstreamError, match=message):
        coding.decode(default_codec, forged)


def test_a_tile_the_codec_could_not_have_written_is_refused(default_codec, photo) -> None:
    stream = bitstream.unpack(coding.encode(default_codec, photo, tile=128, overlap=16))
    tiles = list(stream.tiles)
    tiles[1] = dataclasses.replace(tiles[1], shapes={"y": (1, 1), "z": (1, 1)})
    forged = bitstream.pack(dataclasses.replace(stream, tiles=tuple(tiles)))
    with pytest.raises(BitstreamError, match="latent y has shape"):
        coding.decode(default_codec, forged)
    with pytest.raises(BitstreamError, match="grid"):
        bitstream.pack(dataclasses.replace(stream, tiles=tuple(tiles[:-1])))


def test_cli_tiles_and_reports_the_tiling(tmp_path, capsys, monkeypatch) -> None:
    source = SAMPLE
    out = tmp_path / "a.lic"
    assert main(["encode", str(source), "-o", str(out), "--tile", "128"]) == 0
    assert main(["info", str(out)]) == 0
    assert "tiles        6 of at most 128x128, overlap 32" in capsys.readouterr().out
    assert main(["decode", str(out), "-o", str(tmp_path / "a.png")]) == 0
    monkeypatch.setenv("LIC_TILE", "128")
    assert main(["encode", str(source), "-o", str(tmp_path / "b.lic")]) == 0
    assert (tmp_path / "b.lic").read_bytes() == out.read_bytes()
    capsys.readouterr()
    for bad, env in (("--tile=10", None), (None, "lots")):
        if env:
            monkeypatch.setenv("LIC_TILE", env)
        args = ["encode", str(source), "-o", str(tmp_path / "c.lic")] + ([bad] if bad else [])
        assert main(args) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and ("--tile" in err or "LIC_TILE" in err), err
        assert not (tmp_path / "c.lic").exists()


def test_tile_setting_errors_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        tiling.tile_setting(5)
    assert tiling.tile_setting(0) == 0
