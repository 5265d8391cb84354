"""Variable-rate codecs: any quality from one model, exact coding at every quality, targets."""

from __future__ import annotations

import itertools
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import lic
from lic import bitstream, coding, pretrained
from lic.checkpoint import warm_start
from lic.cli import main
from lic.demo import SAMPLES_DIR
from lic.errors import BitstreamError, UsageError
from tests.conftest import shared_root
from tests.helpers import fixed_rate_default, shipped_points


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A 256x256 crop of a real photo (Kodak when the shared set is there, else a sample)."""
    kodak = shared_root() / "datasets" / "kodak" / "kodim05.png"
    path = kodak if kodak.is_file() else min(SAMPLES_DIR.glob("*.png"))
    pixels = np.asarray(Image.open(path).convert("RGB"))[:256, :256].copy()
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def vr_checkpoint(tmp_path_factory):
    """A variable-rate checkpoint: the shipped default codec when it is variable-rate, else a
    ``student-small-vr`` started from the shipped fixed-rate student (quality 3, gains as
    initialised)."""
    if pretrained.is_variable_rate():
        return pretrained.default_checkpoint()
    codec = warm_start(lic.create_codec("student-small-vr"), pretrained.default_checkpoint(3))
    path = tmp_path_factory.mktemp("vr") / "student-small-vr.ckpt"
    lic.save_codec(codec, path, metric="mse")
    return path


def test_every_base_codec_has_a_variable_rate_form() -> None:
    names = set(lic.list_codecs())
    for base in ("teacher", "student", "student-swin", "student-small", "student-tiny"):
        assert f"{base}-vr" in names
        codec = lic.create_codec(f"{base}-vr") if "tiny" in base or "small" in base else None
        if codec is not None:
            assert codec.variable_rate and codec.quality_range == (1.0, 8.0)
            assert codec.lmbda_at(1) == pytest.approx(0.0018) and codec.lmbda_at(
                8
            ) == pytest.approx(0.18)
            assert codec.quality_for(codec.lmbda_at(3.3)) == pytest.approx(3.3, abs=1e-5)
    assert not lic.create_codec("student-tiny").variable_rate


def test_rate_rises_and_distortion_falls_with_quality(vr_checkpoint, photo) -> None:
    codec = lic.load_codec(vr_checkpoint)
    qualities = [1, 1.5, 2, 3, 4, 4.7, 5, 6, 7, 8]
    bpps, psnrs = [], []
    for quality in qualities:
        data = coding.encode(codec, photo, quality)
        decoded = coding.decode(codec, data)
        bpps.append(8 * len(data) / photo[0, 0].numel())
        psnrs.append(float(10 * torch.log10(1 / ((decoded - photo) ** 2).mean())))
    assert all(a < b for a, b in itertools.pairwise(bpps)), bpps
    assert all(b > a - 0.05 for a, b in itertools.pairwise(psnrs)), psnrs  # saturates at the top
    assert bpps[-1] > 3 * bpps[0]
    if pretrained.is_variable_rate():
        # The trained default spends its top levels on little PSNR: the small network's
        # reconstruction saturates (measured on this crop: 24.3 dB at 1, 25.2 at 3, 25.75 at 8).
        assert psnrs[-1] > psnrs[0] + 1 and psnrs[3] > psnrs[0] + 0.5, psnrs
    else:  # gains as initialised: the quantisation step alone spans the range
        assert psnrs[-1] > psnrs[0] + 3, psnrs


@pytest.mark.parametrize("quality", [1.0, 2.618, 5.0, 8.0])
def test_decoding_equals_the_eval_forward_bit_for_bit(vr_checkpoint, photo, quality) -> None:
    codec = lic.load_codec(vr_checkpoint)
    with torch.no_grad():
        forward = codec(photo, quality=quality).x_hat.clamp(0, 1)
    data = coding.encode(codec, photo, quality)
    stream = bitstream.unpack(data)
    assert stream.quality == pytest.approx(quality) and stream.lmbda == pytest.approx(
        codec.lmbda_at(quality), rel=1e-6
    )
    assert torch.equal(coding.decode(codec, data), forward)


def _with_quality_field(data: bytes, value: float | None) -> bytes:
    """The same file with its quality field replaced (or removed), CRC recomputed."""
    body = bytearray(data[:-4])
    assert body[5] & bitstream.FLAG_QUALITY
    if value is None:
        body[5] = 0
        del body[11:15]
    else:
        body[11:15] = struct.pack(">f", value)
    return bytes(body) + struct.pack(">I", zlib.crc32(bytes(body)))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        ("below", "quality must be a number from 1 to {top:g}"),  # 0.5
        ("above", "quality must be a number from 1 to {top:g}"),  # the top quality + 0.001
        (None, "variable-rate but the file gives none"),
    ],
)
def test_a_hostile_quality_field_is_refused_with_one_line(
    vr_checkpoint, photo, tmp_path, capsys, value, message
) -> None:
    codec = lic.load_codec(vr_checkpoint)
    top = codec.quality_range[1]
    value = {"below": 0.5, "above": top + 0.001}.get(value, value)
    message = message.format(top=top)
    forged = _with_quality_field(coding.encode(codec, photo[..., :64, :64], 3.0), value)
    with pytest.raises(BitstreamError, match=message):
        coding.decode(codec, forged)
    path = tmp_path / "forged.lic"
    path.write_bytes(forged)
    out = tmp_path / "out.png"
    capsys.readouterr()
    assert main(["decode", str(path), "-o", str(out), "--checkpoint", str(vr_checkpoint)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lic: error:") and "\n" not in err and not out.exists()


def test_a_quality_field_on_a_fixed_rate_file_is_refused(photo) -> None:
    codec = fixed_rate_default(1)
    data = bytearray(coding.encode(codec, photo[..., :64, :64])[:-4])
    data[5] = bitstream.FLAG_QUALITY
    data[11:11] = struct.pack(">f", 2.0)
    forged = bytes(data) + struct.pack(">I", zlib.crc32(bytes(data)))
    with pytest.raises(BitstreamError, match="fixed-rate"):
        coding.decode(codec, forged)
    with pytest.raises(UsageError, match="fixed-rate codec: it takes no quality"):
        coding.encode(codec, photo, 2.0)


def test_fixed_rate_files_are_byte_for_byte_as_before(photo) -> None:
    codec = fixed_rate_default(2)
    data = coding.encode(codec, photo[..., :64, :64])
    assert data[5] == 0 and bitstream.unpack(data).quality is None


def test_target_bpp_lands_within_3_percent_or_reports_the_nearest(vr_checkpoint, photo) -> None:
    codec = lic.load_codec(vr_checkpoint)
    top = codec.quality_range[1]
    low = 8 * len(coding.encode(codec, photo, 1.0)) / photo[0, 0].numel()
    high = 8 * len(coding.encode(codec, photo, top)) / photo[0, 0].numel()
    target = (low * high) ** 0.5
    trial, encodes = coding.search_quality([codec], photo, target_bpp=target)
    assert trial.bpp <= target and (target - trial.bpp) / target <= 0.03
    assert 1 < trial.quality < top and encodes <= 12
    nearest, _ = coding.search_quality([codec], photo, target_bpp=low / 2)
    assert nearest.quality == 1.0 and nearest.bpp == pytest.approx(low)


def test_target_psnr_is_reached_with_the_smallest_quality(vr_checkpoint, photo) -> None:
    codec = lic.load_codec(vr_checkpoint)

    def psnr(quality: float) -> float:
        decoded = coding.decode(codec, coding.encode(codec, photo, quality))
        return float(10 * torch.log10(1 / ((decoded - photo) ** 2).mean()))

    top = codec.quality_range[1]
    low, high = psnr(1.0), psnr(top)
    target = (low + high) / 2  # within the codec's range, whatever its training
    trial, _ = coding.search_quality([codec], photo, target_psnr=target)
    assert trial.psnr >= target and trial.psnr - target <= 0.3
    assert 1 < trial.quality < top
    lowest, _ = coding.search_quality([codec], photo, target_psnr=low - 1)
    assert lowest.quality == 1.0  # every quality reaches it: the smallest file
    unreachable, _ = coding.search_quality([codec], photo, target_psnr=60.0)
    assert unreachable.quality == top  # the best it can do, reported as such


def test_the_command_line_takes_any_quality_and_targets(
    vr_checkpoint, kodak_dir, tmp_path, capsys
) -> None:
    image, stream, output = kodak_dir / "kodim05.png", tmp_path / "a.lic", tmp_path / "a.png"
    ckpt = str(vr_checkpoint)
    capsys.readouterr()
    assert main(["encode", str(image), "-o", str(stream), "--checkpoint", ckpt, "-q", "2.5"]) == 0
    assert "quality 2.5" in capsys.readouterr().out
    assert main(["info", str(stream)]) == 0 and "quality      2.5" in capsys.readouterr().out
    assert main(["decode", str(stream), "-o", str(output), "--checkpoint", ckpt]) == 0
    # 0.4 bpp: within reach of either default (on this photo quality 1 to 4 of the fixed-rate
    # one give 0.25 to 0.46 bpp, quality 1 to 8 of the variable-rate one 0.32 to 1.1).
    assert main(["encode", str(image), "-o", str(stream), "--target-bpp", "0.4"]) == 0
    printed = capsys.readouterr().out
    assert "default codec, quality" in printed
    encodes = int(printed.split("target 0.4 bpp: ")[1].split(" encodes")[0])
    bpp = float(printed.split(" bpp")[0].split()[-1])
    assert bpp <= 0.4
    default_q25 = ["encode", str(image), "-o", str(stream), "-q", "2.5"]
    if pretrained.is_variable_rate():  # bisected over its range; and 2.5 is one of its qualities
        assert 3 <= encodes <= 12
        assert main(default_q25) == 0 and "quality 2.5" in capsys.readouterr().out
        assert coding.read_bitstream_file(stream).quality == 2.5
    else:  # one encode per rate point; and the rate points are whole numbers
        assert encodes == len(pretrained.default_models())
        assert main(default_q25) == 2
        assert "whole number" in capsys.readouterr().err


def test_one_variable_rate_checkpoint_draws_a_whole_curve(
    vr_checkpoint, kodak_dir, tmp_path, capsys
) -> None:
    import json

    out = tmp_path / "eval"
    argv = ["evaluate", "--dataset", str(kodak_dir), "--limit", "1", "-o", str(out)]
    assert main([*argv, "--checkpoint", str(vr_checkpoint), "--qualities", "1,2.5,4,6,8"]) == 0
    name = lic.load_codec(vr_checkpoint).codec_name  # the curve is named after the codec
    results = json.loads((out / f"{name}.json").read_text())
    bpp = results["results"]["bpp"]
    assert len(bpp) == 5 and bpp == sorted(bpp)
    assert [c["quality"] for c in results["checkpoints"]] == [1, 2.5, 4, 6, 8]
    # The default codec: each rate point of a fixed-rate set, each trained level of a
    # variable-rate model (named apart: it may be the same codec).
    assert main([*argv[:-2], "--name", "default", "-o", str(tmp_path / "default")]) == 0
    default = json.loads((tmp_path / "default" / "default.json").read_text())
    bpp = default["results"]["bpp"]
    assert len(bpp) == len(shipped_points()) and bpp == sorted(bpp)
    files = [str(out / f"{name}.json"), str(tmp_path / "default" / "default.json")]
    capsys.readouterr()
    assert main(["report", *files, "--anchor", "default", "-o", str(tmp_path / "r")]) == 0
    assert name in capsys.readouterr().out
    assert main([*argv, "--checkpoint", str(vr_checkpoint), "--qualities", "0,9"]) == 2
