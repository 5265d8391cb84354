"""Encoder-side latent refinement: the relaxed objective matches real coding, refinement lowers
the real rate–distortion cost of the shipped codec, and the decoder reads its files unchanged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import lic
from lic import bitstream, coding, pretrained
from lic.cli import DEFAULT_REFINE_STEPS, main
from lic.codecs import refine
from lic.demo import SAMPLES_DIR
from lic.errors import UsageError
from lic.imageio import tensor_to_pixels
from tests.conftest import shared_root

QUALITY = 6.0  # a high rate, where the shipped codec's encoder leaves the most on the table


@pytest.fixture(scope="module")
def codec() -> torch.nn.Module:
    """The shipped default codec (variable-rate)."""
    if not pretrained.is_variable_rate():
        pytest.skip("the shipped default codec is fixed-rate")
    return lic.load_codec(pretrained.default_checkpoint())


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A 128x192 crop of a real photo (not a multiple of the codec's 64-pixel padding)."""
    kodak = shared_root() / "datasets" / "kodak" / "kodim05.png"
    path = kodak if kodak.is_file() else min(SAMPLES_DIR.glob("*.png"))
    pixels = np.asarray(Image.open(path).convert("RGB"))[:120, :184].copy()
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255


def _coded_cost(codec, x: torch.Tensor, data: bytes, quality: float) -> tuple[float, float, float]:
    """``(J, bpp, PSNR)`` of a coded file, from its real size and its decoded pixels."""
    pixels = x.shape[-2] * x.shape[-1]
    decoded = tensor_to_pixels(coding.decode(codec, data)).astype(np.float64)
    mse = float(((decoded - tensor_to_pixels(x).astype(np.float64)) ** 2).mean())
    bpp = 8 * len(data) / pixels
    return codec.lmbda_at(quality) * mse + bpp, bpp, 10 * math.log10(255**2 / mse)


def test_relaxed_decode_matches_real_coding(codec, photo) -> None:
    y, z = codec.latents(photo, QUALITY)
    with torch.no_grad():
        relaxed = codec.decode_relaxed(y, z, QUALITY)
    compressed = codec.compress(photo, quality=QUALITY)
    coded_bits = 8 * sum(len(s[0]) for s in compressed.strings.values())
    assert relaxed.bits.shape == relaxed.smooth_bits.shape == (1,)
    bits = float(relaxed.bits)
    assert abs(bits - coded_bits) < 0.02 * coded_bits + 64  # strings end on 32-bit words
    assert abs(float(relaxed.smooth_bits) - bits) < 0.25 * bits  # the same densities
    decoded = codec.decompress(compressed)
    x_hat = relaxed.x_hat[..., : photo.shape[-2], : photo.shape[-1]].clamp(0, 1)
    # Not equal pixel for pixel: the coder predicts the means in fixed point, the relaxed path
    # in float, so a latent near a rounding boundary can round the other way, and the channel
    # context carries that to later slices (a few pixels off by up to ~0.09 on some weights).
    # What refinement needs is the same distortion, and a difference far below it.
    real_mse, relaxed_mse = (float(((v - photo) ** 2).mean()) for v in (decoded, x_hat))
    assert relaxed_mse == pytest.approx(real_mse, rel=0.01)
    assert float(((x_hat - decoded) ** 2).mean()) < 0.03 * real_mse  # 15 dB below the error


def test_refinement_lowers_the_coded_cost_and_decodes_unchanged(codec, photo) -> None:
    plain = coding.encode(codec, photo, QUALITY)
    refined = coding.encode(codec, photo, QUALITY, refine=20)
    before, after = (
        _coded_cost(codec, photo, plain, QUALITY),
        _coded_cost(codec, photo, refined, QUALITY),
    )
    assert after[0] < 0.99 * before[0], (before, after)
    header = bitstream.unpack(refined)
    assert header.fingerprint == bitstream.unpack(plain).fingerprint
    assert header.quality == QUALITY


def test_refinement_keeps_the_best_step_and_leaves_the_codec_as_it_was(codec, photo) -> None:
    state = {k: v.clone() for k, v in codec.state_dict().items()}
    flags = [p.requires_grad for p in codec.parameters()]
    codec.train()
    try:
        result = refine.refine_latents(codec, photo, QUALITY, refine.Refinement(steps=6))
    finally:
        assert codec.training
        codec.eval()
    assert len(result.costs) == 7
    y0, z0 = codec.latents(photo, QUALITY)
    lmbda = refine.objective_lmbda(codec, QUALITY)
    with torch.no_grad():
        kept = float(refine.rd_cost(codec, photo, result.y, result.z, QUALITY, lmbda)[0])
        start = float(refine.rd_cost(codec, photo, y0, z0, QUALITY, lmbda)[0])
    assert start == pytest.approx(result.costs[0], rel=1e-5)
    assert kept == pytest.approx(min(result.costs), rel=1e-5) and kept <= start
    assert [p.requires_grad for p in codec.parameters()] == flags
    assert all(torch.equal(v, codec.state_dict()[k]) for k, v in state.items())
    assert result.y.grad is None and not result.y.requires_grad


@pytest.mark.parametrize("schedule", refine.SCHEDULES)
def test_learning_rate_schedule(codec, photo, monkeypatch, schedule) -> None:
    """Each Adam step is taken at the schedule's rate: held, or annealed from ``lr`` towards 0."""
    rates: list[float] = []
    adam_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    steps, lr = 4, 0.02
    result = refine.refine_latents(codec, photo, QUALITY, refine.Refinement(steps, lr, schedule))
    expected = [
        lr if schedule == "constant" else lr * (1 + math.cos(math.pi * t / steps)) / 2
        for t in range(steps)
    ]
    assert rates == pytest.approx(expected, rel=1e-6)
    assert min(result.costs) < result.costs[0]


def test_zero_steps_code_exactly_as_without_refinement(codec, photo) -> None:
    assert coding.encode(codec, photo, QUALITY, refine=0) == coding.encode(codec, photo, QUALITY)
    y, z = codec.latents(photo, QUALITY)
    with_latents = codec.compress(photo, quality=QUALITY, latents=(y, z))
    assert with_latents == codec.compress(photo, quality=QUALITY)


def test_latents_of_another_image_are_refused(codec, photo) -> None:
    y, z = codec.latents(photo[..., :64, :64], QUALITY)
    with pytest.raises(ValueError, match="does not belong"):
        codec.compress(photo, quality=QUALITY, latents=(y, z))


def test_what_refinement_cannot_optimise_is_refused(tiny_checkpoint) -> None:
    with pytest.raises(ValueError, match="whole number"):
        refine.Refinement(steps=-1)
    with pytest.raises(ValueError, match="positive"):
        refine.Refinement(lr=0.0)
    with pytest.raises(ValueError, match="schedule must be one of constant, cosine"):
        refine.Refinement(schedule="linear")
    codec = lic.load_codec(tiny_checkpoint)
    image = torch.rand(1, 3, 64, 64)
    codec.metadata = {"metric": "mse"}  # no λ recorded
    with pytest.raises(UsageError, match="records no λ"):
        coding.encode(codec, image, refine=2)
    codec.metadata = {"lmbda": 0.013, "metric": "ms-ssim"}
    with pytest.raises(UsageError, match="optimises MSE"):
        coding.encode(codec, image, refine=2)


def test_cli_refine(tmp_path, tiny_checkpoint, capsys) -> None:
    assert DEFAULT_REFINE_STEPS == refine.DEFAULT_STEPS
    source = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80, 3), np.uint8)).save(source)
    out = tmp_path / "a.lic"
    argv = ["encode", str(source), "-o", str(out), "--checkpoint", str(tiny_checkpoint)]
    assert main([*argv, "--refine", "3"]) == 0
    assert (
        main(
            [
                "decode",
                str(out),
                "-o",
                str(tmp_path / "a.png"),
                "--checkpoint",
                str(tiny_checkpoint),
            ]
        )
        == 0
    )
    with Image.open(tmp_path / "a.png") as decoded:
        assert decoded.size == (80, 48)
    capsys.readouterr()
    assert main([*argv[:3], str(tmp_path / "b.lic"), *argv[4:], "--refine", "-2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lic: error: ") and err.count("\n") == 1 and "--refine" in err
    assert not (tmp_path / "b.lic").exists()


def test_evaluate_records_the_refinement(tmp_path, tiny_checkpoint, image_folder) -> None:
    out = tmp_path / "eval"
    argv = ["evaluate", "--dataset", str(image_folder), "--checkpoint", str(tiny_checkpoint)]
    assert (
        main([*argv, "--limit", "2", "--refine", "2", "--name", "tiny-refined", "-o", str(out)])
        == 0
    )
    results = json.loads((out / "tiny-refined.json").read_text())
    record = results["checkpoints"][0]
    assert record["refine_steps"] == 2
    assert record["refine_schedule"] == refine.DEFAULT_SCHEDULE
    assert record["refine_lr_per_sqrt_lmbda"] == refine.LR_PER_SQRT_LMBDA


def test_refinement_under_no_grad_still_refines(codec, photo) -> None:
    """A caller's ``torch.no_grad()`` (evaluation code) does not switch refinement off."""
    settings = refine.Refinement(steps=2)
    free = refine.refine_latents(codec, photo, QUALITY, settings)
    with torch.no_grad():
        inside = refine.refine_latents(codec, photo, QUALITY, settings)
    assert inside.costs == pytest.approx(free.costs, rel=1e-6)
    assert min(inside.costs[1:]) < inside.costs[0]


def test_make_docs_reuses_refined_results_only_if_made_as_now(tmp_path) -> None:
    """The docs reuse a refined evaluation only when it holds the installed weights refined by
    the same steps, schedule and learning-rate rule (a record without the last two predates
    them, when they had today's defaults)."""
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("make_docs", REPO / "scripts" / "make_docs.py")
    make_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_docs)
    path = tmp_path / "refined.json"

    def made(**record) -> bool:
        checkpoints = [
            {"fingerprint": m.fingerprint, "refine_steps": 20} | record
            for m in pretrained.default_models()
        ]
        path.write_text(json.dumps({"checkpoints": checkpoints}))
        return make_docs.made_with_installed(path, 20)

    other = next(s for s in refine.SCHEDULES if s != refine.DEFAULT_SCHEDULE)
    assert made() and made(refine_schedule=refine.DEFAULT_SCHEDULE)
    assert not made(refine_schedule=other)
    assert not made(refine_lr_per_sqrt_lmbda=2 * refine.LR_PER_SQRT_LMBDA)
    assert not made(refine_steps=60)
    assert not make_docs.made_with_installed(path, 0)
