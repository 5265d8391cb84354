"""The training campaign: plans, resumable state, the time budget, FEDS runs and the report."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lic.checkpoint import load_codec
from lic.errors import CheckpointError, UsageError
from lic.training import campaign as cp
from lic.training.campaign_report import overfitting, start_offset, write_report
from tests.training.conftest import campaign_shared

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "campaign.py"

PLAN = """
name: t
data:
  train_dir: "{shared}/photos"
  holdout_every: 4
  eval_crop: 64
  eval_images: 3
  kodak_dir: "{shared}/kodak"
defaults:
  lmbda: 0.013
  batch: 2
  warmup: 4
  precision: fp32
runs:
  teacher:
    codec: teacher-tiny
    steps: 3
    lr: 1.0e-3
    crops: [[0, 64]]
  scratch:
    codec: student-tiny
    steps: 100000
    crops: [[0, 64], [6, 96]]
  feds:
    codec: student-tiny
    steps: 4
    teacher: teacher
    after: {teacher: 3}
    crops: [[0, 64]]
    terms: {cwd: {taps: [y]}, channel: {source: marginal, temperature: 3.0}}
    phases:
      - {name: feature, steps: 2, feature_weight: 1.0}
      - {name: channel, steps: 1, weights: {channel: 1.0, cwd: 0.5}}
      - {name: finetune, steps: 1}
"""


RECORD_RUN = """
  done:
    codec: student-tiny
    steps: 2
    crops: [[0, 64]]
    keep: record
"""
NEEDS_DONE = """
  after-done:
    codec: student-tiny
    steps: 2
    crops: [[0, 64]]
    init: done
    after: {done: 2}
"""


@pytest.fixture()
def setup(tmp_path: Path, image_folder: Path) -> tuple[Path, Path, Path]:
    """A shared folder (photos, a two-image 'kodak'), a plan file and a state folder."""
    shared = campaign_shared(tmp_path, image_folder)
    plan = tmp_path / "t.yaml"
    plan.write_text(PLAN)
    return plan, shared, tmp_path / "state"


def _load(setup_paths) -> cp.Plan:
    plan, shared, state = setup_paths
    return cp.load_plan(plan, shared, state)


def test_plan_schedules() -> None:
    spec = cp.RunSpec(
        "r",
        "student-tiny",
        0.01,
        100,
        lr=1e-3,
        warmup=10,
        decay_from=80,
        crops=((0, 64), (50, 128)),
    )
    assert spec.lr_at(0) == pytest.approx(1e-5)
    assert spec.lr_at(5) < spec.lr_at(9) < spec.lr_at(10) == pytest.approx(1e-3)
    assert spec.lr_at(79) == pytest.approx(1e-3) and spec.lr_at(80) == pytest.approx(1e-4)
    assert [spec.crop_at(s) for s in (0, 49, 50, 99)] == [64, 64, 128, 128]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("lr: 1.0e-3", "lr: 1.0e-3\n    colour: red"), "unknown keys"),
        (("codec: teacher-tiny", "codec: no-such-codec"), "unknown codec"),
        (("after: {teacher: 3}", "after: {nobody: 3}"), "unknown run"),
        (("after: {teacher: 3}", "after: {}"), "list it in `after`"),
        (("    phases:\n", "    unused:\n"), "unknown keys"),
        (("terms: {cwd: {taps: [y]}", "terms: {nope: {}"), "unknown distillation term"),
        (("source: marginal", "source: gut"), "'marginal'"),
        (("  lmbda: 0.013\n", ""), "run 'teacher' needs lmbda"),
    ],
)
def test_bad_plans_are_refused(setup, edit, message) -> None:
    plan, shared, state = setup
    plan.write_text(PLAN.replace(*edit))
    with pytest.raises(UsageError, match=message):
        cp.load_plan(plan, shared, state)


def test_holdout_split_is_disjoint_and_stable(tmp_path: Path) -> None:
    paths = [tmp_path / f"p{i:02d}.png" for i in range(41)]
    train, held = cp.split_holdout(list(reversed(paths)), 20)
    assert held == [paths[0], paths[20], paths[40]]
    assert not set(train) & set(held) and len(train) + len(held) == 41
    # a folder with part of the photos (a GPU shard) holds out the same names as the whole set
    shard = [paths[i] for i in (1, 2, 20, 21, 40)]
    train, held = cp.split_holdout(shard, 20, universe=[p.name for p in paths])
    assert held == [paths[20], paths[40]] and train == [paths[1], paths[2], paths[21]]


def test_gpu_pack_travels_lossless_and_holds_out_the_same_photos(setup, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from lic.paths import device_tree_bytes

    plan, shared, state = setup
    photos = sorted((shared / "photos").iterdir())
    (shared / "photos" / "MANIFEST.tsv").write_text(
        "name\tbytes\n" + "".join(f"{p.name}\t{p.stat().st_size}\n" for p in photos)
    )
    wheels = sum(p.stat().st_size for p in (REPO / ".whl").glob("*") if p.is_file())
    mib = (device_tree_bytes(REPO) + wheels) / 2**20 + 11
    out = tmp_path / "pack"
    process = _script(setup, "gpu-pack", "-o", str(out), "--mib", f"{mib:.3f}")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    packed = {p.stem: p for p in (out / "photos").iterdir() if p.suffix != ".tsv"}
    assert set(packed) == {p.stem for p in photos}  # one shard holds them all here
    for photo in photos:
        travelled = packed[photo.stem]
        if photo.suffix == ".png":  # smaller as lossless WebP, same pixels
            assert travelled.suffix == ".webp"
            assert travelled.stat().st_size < photo.stat().st_size
        with Image.open(photo) as a, Image.open(travelled) as b:
            assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
    whole = cp.load_plan(plan, shared, state)
    shard = cp.load_plan(plan, out, state)
    for a, b in zip(cp.training_split(whole), cp.training_split(shard), strict=True):
        assert [p.stem for p in a] == [p.stem for p in b]
    too_small = _script(setup, "gpu-pack", "-o", str(out), "--mib", f"{mib - 10:.3f}")
    _, err = too_small.communicate(timeout=120)
    assert too_small.returncode == 1 and "MiB left beside the working tree" in err


def test_resident_images_crops(image_folder: Path) -> None:
    images = cp.ResidentImages(sorted(p for p in image_folder.iterdir() if p.is_file()))
    a = images.sample(4, 64, torch.Generator().manual_seed(3))
    b = images.sample(4, 64, torch.Generator().manual_seed(3))
    assert a.shape == (4, 3, 64, 64) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)
    with pytest.raises(UsageError, match="larger than the smallest"):
        images.sample(1, 512, torch.Generator())
    fixed = images.center_crops(64, 3)
    assert fixed.shape == (3, 3, 64, 64) and torch.equal(fixed, images.center_crops(64, 3))


def test_slices_accumulate_and_resume(setup) -> None:
    plan = _load(setup)
    first = cp.train_slice(plan, "scratch", seconds=120, max_steps=3)
    run_dir = plan.run_dir("scratch")
    weights_after_first = cp.load_tensors(run_dir, "weights.pt")["codec"]
    assert first["step"] == 3 and first["images_seen"] == 6
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(cp.STATE_FILES)
    assert all(p.stat().st_size <= cp.MAX_FILE_BYTES for p in run_dir.iterdir())
    evaluation = first["evals"][-1]
    assert {"heldout", "train_eval", "kodak", "train_running"} <= set(evaluation)
    assert evaluation["kodak"]["images"] == 2 and evaluation["kodak"]["bpp"] > 0
    held = evaluation["heldout"]  # the hyper-latent's bits: part of the rate, watched for collapse
    assert 0 < held["bpp_z"] < held["bpp"]

    second = cp.train_slice(plan, "scratch", seconds=120, max_steps=3, evaluate=False)
    assert second["step"] == 6 and second["images_seen"] == 12
    assert [(s["from_step"], s["to_step"]) for s in second["slices"]] == [(0, 3), (3, 6)]
    assert second["compute"]["cpu_core_hours"] > first["compute"]["cpu_core_hours"] > 0
    assert second["slices"][-1]["device"] == "cpu" and second["slices"][-1]["threads"] == 1
    # the CPU time the steps had: never more than the one core they held, and most of it
    share = cp.cpu_share(second)
    assert all(0 < part["cpu_seconds"] for part in second["slices"])
    assert share is not None and 0.2 < share < 1.2  # process CPU time is sampled coarsely
    # the second slice started from the saved weights and optimizer, not from scratch
    optim = cp.load_tensors(run_dir, "optim.pt")
    assert {entry["step"] for entry in optim["main"]["state"].values()} == {6.0}
    weights = cp.load_tensors(run_dir, "weights.pt")["codec"]
    assert any(not torch.equal(weights[k], weights_after_first[k]) for k in weights)
    # files were replaced, not piled up
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["scratch"]
    assert second["slices"][-1]["to_step"] == 6
    third = cp.train_slice(plan, "scratch", seconds=120, max_steps=1, evaluate=False)
    assert third["step"] == 7  # step 6 trained on 96 px crops (the crop schedule)


def test_a_term_logged_in_some_steps_is_averaged_over_those_steps(setup, monkeypatch) -> None:
    """A phase's terms (the effective channel count...) are not diluted by the other phases."""
    plan = _load(setup)
    step = cp.RunTrainer.step

    def every_other(self, images):
        terms = step(self, images)
        return terms | {"probe": 2.0} if self.record["step"] % 2 else terms

    monkeypatch.setattr(cp.RunTrainer, "step", every_other)
    record = cp.train_slice(plan, "scratch", seconds=60, max_steps=4, evaluate=False)
    running = record["evals"][-1]["train_running"]
    assert running["probe"] == 2.0 and running["loss"] > 0


def test_the_steps_are_saved_before_measuring(setup, monkeypatch) -> None:
    plan = _load(setup)

    def fail(self, export_path):
        raise RuntimeError("killed while measuring Kodak")

    monkeypatch.setattr(cp.RunTrainer, "evaluate_kodak", fail)
    with pytest.raises(RuntimeError, match="measuring"):
        cp.train_slice(plan, "scratch", seconds=120, max_steps=3)
    record = cp.read_record(plan.run_dir("scratch"))
    assert record["step"] == 3 and [s["to_step"] for s in record["slices"]] == [3]
    assert record["evals"] == [] and "slices_open" not in record
    resumed = cp.train_slice(plan, "scratch", seconds=120, max_steps=1, evaluate=False)
    assert resumed["step"] == 4


def test_crops_larger_than_the_photos_are_refused_before_training(setup) -> None:
    plan_path, shared, state = setup
    plan_path.write_text(PLAN.replace("[[0, 64], [6, 96]]", "[[0, 64], [6, 128]]"))
    plan = cp.load_plan(plan_path, shared, state)
    with pytest.raises(UsageError, match="crops 128 px, more than the smallest training photo"):
        cp.train_slice(plan, "scratch", seconds=120, max_steps=1)
    assert cp.read_record(plan.run_dir("scratch")) is None


def test_interrupted_swap_is_repaired(setup) -> None:
    plan = _load(setup)
    cp.train_slice(plan, "teacher", seconds=120, max_steps=1, evaluate=False)
    run_dir = plan.run_dir("teacher")
    # killed between the two renames: only the old folder and a staging folder exist
    run_dir.rename(run_dir.with_name("teacher.old"))
    staging = run_dir.with_name(".teacher.next-999")
    staging.mkdir()
    (staging / "weights.pt").write_bytes(b"partial")
    record = cp.read_record(run_dir)  # readers find the old state and change nothing
    assert record is not None and record["step"] == 1
    assert not run_dir.exists()
    # the next slice (the run's writer) puts it back and clears the staging folder
    record = cp.train_slice(plan, "teacher", seconds=120, max_steps=1, evaluate=False)
    assert record["step"] == 2
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["teacher"]


def test_feds_run_waits_for_and_distils_from_its_teacher(setup) -> None:
    plan = _load(setup)
    assert [s.name for s in cp.runnable(plan)] == ["teacher", "scratch"]
    cp.train_slice(plan, "teacher", seconds=120, evaluate=False)
    assert [s.name for s in cp.runnable(plan)] == ["scratch", "feds"]
    record = cp.train_slice(plan, "feds", seconds=120, evaluate=False)
    assert record["step"] == 4 and record["slices"][-1]["teacher_step"] == 3
    weights = cp.load_tensors(plan.run_dir("feds"), "weights.pt")
    assert weights.get("adapters")
    assert [s.name for s in cp.runnable(plan)] == ["scratch"]


FINETUNE_RUNS = """
  teacher-ft:
    codec: teacher-tiny
    lmbda: 0.0483
    steps: 1
    init: teacher
    after: {teacher: 3}
    crops: [[0, 64]]
  feds-ft:
    codec: student-tiny
    lmbda: 0.0483
    steps: 2
    init: feds
    teacher: teacher-ft
    after: {feds: 4, teacher-ft: 1}
    crops: [[0, 64]]
    phases:
      - {name: feature, steps: 1, weights: {feature: 1.0}}
      - {name: finetune, steps: 1}
"""


def test_a_feds_fine_tune_starts_from_a_feds_run_and_distils_from_the_teachers_fine_tune(
    setup,
) -> None:
    """The multi-λ protocol: a FEDS student and its teacher, each fine-tuned to another λ."""
    plan_path, shared, state = setup
    plan_path.write_text(PLAN + FINETUNE_RUNS)
    plan = cp.load_plan(plan_path, shared, state)
    for run in ("teacher", "feds", "teacher-ft"):
        assert run in {s.name for s in cp.runnable(plan)}
        cp.train_slice(plan, run, seconds=120, evaluate=False)
    feds_ema = cp.load_ema(plan.run_dir("feds"))
    record = cp.train_slice(plan, "feds-ft", seconds=120, max_steps=1, evaluate=False)
    assert record["init"] == {"run": "feds", "step": 4}
    assert record["lmbda"] == 0.0483 and record["slices"][-1]["teacher_step"] == 1
    weights = cp.load_tensors(plan.run_dir("feds-ft"), "weights.pt")
    assert weights.get("adapters")  # the distillation's adapters start anew
    moved = [k for k in feds_ema if not torch.equal(weights["codec"][k], feds_ema[k])]
    assert moved and len(moved) < len(feds_ema)  # one step from the FEDS run's EMA
    # a student at another λ than its teacher's is refused, in one line
    other = FINETUNE_RUNS.split("  feds-ft:")[1].replace("0.0483", "0.1")
    plan_path.write_text(PLAN + FINETUNE_RUNS + "  feds-other:" + other)
    with pytest.raises(UsageError, match="distils from a teacher trained at"):
        cp.train_slice(
            cp.load_plan(plan_path, shared, state), "feds-other", seconds=60, max_steps=1
        )


def _plan_with_test_codec(setup, monkeypatch, runs: str, name: str, **kwargs) -> cp.Plan:
    """The test plan with ``runs`` added, and ``name`` registered for this test alone as
    ``student-tiny`` with ``kwargs`` (a zoo entry would lengthen the unknown-codec message)."""
    from lic.codecs import ChannelARCodec, CodecSpec, codec_spec, registry

    config = {**codec_spec("student-tiny").kwargs, **kwargs}
    monkeypatch.setitem(registry._REGISTRY, name, CodecSpec(name, ChannelARCodec, config, "test"))
    plan_path, shared, state = setup
    plan_path.write_text(PLAN + runs)
    return cp.load_plan(plan_path, shared, state)


GROWN_RUNS = """
  deep:
    codec: student-tiny-deep-ga
    steps: 1
    crops: [[0, 64]]
    init: scratch
    after: {scratch: 1}
  swin:
    codec: student-swin-tiny
    steps: 1
    crops: [[0, 64]]
    init: scratch
    after: {scratch: 1}
"""


def test_a_deeper_codec_grows_from_its_init_and_another_codec_is_refused(
    setup, monkeypatch
) -> None:
    plan = _plan_with_test_codec(
        setup, monkeypatch, GROWN_RUNS, "student-tiny-deep-ga", analysis_res_blocks=(1, 2, 2)
    )
    cp.train_slice(plan, "scratch", seconds=60, max_steps=1, evaluate=False)
    start = cp.load_ema(plan.run_dir("scratch"))
    record = cp.train_slice(plan, "deep", seconds=60, max_steps=1, evaluate=False)
    assert record["step"] == 1
    assert record["init"] == {
        "run": "scratch",
        "step": 1,
        "grown_blocks": ["g_a.1.2.1", "g_a.2.2.1"],
    }
    weights = cp.load_tensors(plan.run_dir("deep"), "weights.pt")["codec"]
    assert set(start) < set(weights)  # the shared tensors, and the added blocks besides
    with pytest.raises(UsageError, match="cannot start from 'scratch'"):
        cp.train_slice(plan, "swin", seconds=60, max_steps=1, evaluate=False)


LEVEL_RUNS = """
  vr:
    codec: student-tiny-vr
    steps: 1
    crops: [[0, 64]]
  vr10:
    codec: student-tiny-vr10
    steps: 1
    crops: [[0, 64]]
    decay_from: 0
    init: vr
    after: {vr: 1}
  vr10-next:
    codec: student-tiny-vr10
    steps: 1
    crops: [[0, 64]]
    init: vr10
    after: {vr10: 1}
"""


def test_added_rate_levels_grow_from_the_init_and_are_measured_at_the_same_lmbda(
    setup, monkeypatch
) -> None:
    from lic.codecs import create_codec
    from lic.codecs.zoo import VARIABLE_RATE_LEVELS, VARIABLE_RATE_RANGE, levels_below

    low = levels_below(VARIABLE_RATE_LEVELS, VARIABLE_RATE_RANGE, 2)
    plan = _plan_with_test_codec(
        setup, monkeypatch, LEVEL_RUNS, "student-tiny-vr10", rate_levels=10, rate_range=low
    )
    cp.train_slice(plan, "vr", seconds=60, max_steps=1, evaluate=False)
    start = cp.load_ema(plan.run_dir("vr"))
    record = cp.train_slice(plan, "vr10", seconds=60, max_steps=1, evaluate=False)
    assert record["init"] == {"run": "vr", "step": 1, "grown_levels": [1, 2]}
    weights = cp.load_tensors(plan.run_dir("vr10"), "weights.pt")["codec"]
    assert weights["log_gain"].shape[0] == 10 and start["log_gain"].shape[0] == 8
    # the next cycle of the same codec starts from its EMA weights as they are
    record = cp.train_slice(plan, "vr10-next", seconds=60, max_steps=1, evaluate=False)
    assert record["init"] == {"run": "vr10", "step": 1}
    # both learning curves measure λ 0.025: quality 5 of eight levels, 7 of ten
    eight, ten_levels = create_codec("student-tiny-vr"), create_codec("student-tiny-vr10")
    assert cp.measurement_quality(eight) == 5.0 and cp.measurement_quality(ten_levels) == 7.0
    assert ten_levels.lmbda_at(7.0) == pytest.approx(eight.lmbda_at(5.0), rel=1e-6)
    assert cp.measurement_quality(create_codec("student-tiny")) is None


def test_a_codec_change_is_refused(setup) -> None:
    plan_path, shared, state = setup
    cp.train_slice(
        cp.load_plan(plan_path, shared, state), "teacher", seconds=60, max_steps=1, evaluate=False
    )
    plan_path.write_text(PLAN.replace("codec: teacher-tiny", "codec: student-tiny"))
    with pytest.raises(UsageError, match="was trained as teacher-tiny"):
        cp.train_slice(cp.load_plan(plan_path, shared, state), "teacher", seconds=60, max_steps=1)


def test_transform_autocast_keeps_the_entropy_model_in_float32() -> None:
    import lic

    torch.manual_seed(0)
    codec = lic.create_codec("student-tiny").train()
    x = torch.rand(2, 3, 64, 64)
    reference = codec(x)
    codec.transform_autocast = torch.bfloat16
    out = codec(x)
    assert out.x_hat.dtype == torch.float32 and out.features["y"].dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out.likelihoods.values())
    assert out.features["g_a.0"].dtype == torch.bfloat16  # the transforms did run in bf16
    assert torch.allclose(out.x_hat, reference.x_hat, atol=0.05)


def test_overfitting_is_flagged_when_the_gap_grows() -> None:
    def evals(gaps):
        return [
            {"step": i, "heldout": {"loss": 1.0 + g}, "train_eval": {"loss": 1.0}}
            for i, g in enumerate(gaps)
        ]

    assert not overfitting(evals([0.01, 0.0, 0.02, 0.01]))["growing"]
    assert not overfitting(evals([0.001, 0.002, 0.003, 0.004]))["growing"]  # rising but tiny
    assert overfitting(evals([0.01, 0.04, 0.06, 0.09]))["growing"]
    assert overfitting([])["gaps"] == []


def test_rate_point_families_are_grouped_by_name_over_lambda() -> None:
    from lic.training.campaign_report import families

    runs = {
        "teacher": {"lmbda": 0.013},
        "student-scratch-2": {"lmbda": 0.013},  # one λ: a second try, not a family
        "student-fixed-8": {"lmbda": 0.18},
        "student-fixed-1": {"lmbda": 0.0018},
        "student-fixed-4": {"lmbda": 0.013},
    }
    assert families({"runs": runs}) == {
        "student-fixed-*": ["student-fixed-1", "student-fixed-4", "student-fixed-8"]
    }


def test_report_writes_curves_table_and_plot(setup, tmp_path: Path) -> None:
    plan = _load(setup)
    cp.train_slice(plan, "scratch", seconds=60, max_steps=2)
    record = cp.train_slice(plan, "scratch", seconds=60, max_steps=2)
    for evaluation in record["evals"]:  # as if each slice had been long: one stretch per slice
        evaluation["cpu_core_hours"] *= 1e5
    cp.save_state(plan.run_dir("scratch"), {}, record)
    paths = write_report(plan, tmp_path / "report")
    data = json.loads(paths[0].read_text())
    assert data["runs"]["scratch"]["evals"][0]["kodak"]["images"] == 2
    assert data["runs"]["feds"]["step"] == 0
    table = paths[1].read_text()
    assert "| scratch | student-tiny |" in table and "not started" in table
    assert "| scratch | 2 → 4 |" in table  # what the second slice's compute bought
    row = next(line for line in table.splitlines() if line.startswith("| scratch | student-tiny"))
    heldout = record["evals"][-1]["heldout"]
    # z's bits, the coded PSNR and the transforms' ceiling shown
    assert row.endswith(
        f"| {heldout['bpp_z']:.4f} | {heldout['psnr']:.2f} | {heldout['ceiling_psnr']:.2f} |"
    )
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    share = data["runs"]["scratch"]["cpu_share"]
    assert share is not None and share == cp.cpu_share(record)
    assert f"(CPU share {share:.0%})" in table


def test_a_continued_run_is_drawn_from_where_its_start_stopped() -> None:
    def run(init, cpu, gpu, images):
        compute = {"cpu_core_hours": cpu, "gpu_hours": gpu}
        return {"init": init, "evals": [{}], "compute": compute, "images_seen": images}

    data = {
        "runs": {
            "a": run(None, 2.0, 0.5, 100),
            "b": run("a", 1.0, 0.0, 40),  # continues a
            "c": run("b", 0.1, 0.0, 8),  # continues b, which continued a
            "d": run("waiting", 0.0, 0.0, 0) | {"evals": []},
        }
    }
    data["runs"]["waiting"] = run(None, 0.0, 0.0, 0) | {"evals": []}  # not started: no offset
    assert start_offset(data, "a") == (0.0, 0)
    assert start_offset(data, "b") == (2.5, 100)
    assert start_offset(data, "c") == (3.5, 140)
    assert start_offset(data, "d") == (0.0, 0)


def test_cpu_share_counts_the_core_time_held_against_the_cpu_time_had() -> None:
    slices = [
        {"device": "cpu", "threads": 2, "train_seconds": 100.0, "cpu_seconds": 150.0},
        {"device": "cpu", "threads": 1, "train_seconds": 50.0, "cpu_seconds": 50.0},
        {"device": "cpu", "threads": 1, "train_seconds": 80.0},  # recorded before cpu_seconds
        {"device": "cuda", "threads": 1, "train_seconds": 10.0, "cpu_seconds": 10.0},
    ]
    assert cp.cpu_share({"slices": slices}) == pytest.approx(200 / 250)
    assert cp.cpu_share({"slices": slices[2:3]}) is None


def _script(setup_paths, *args: str, **kwargs) -> subprocess.Popen:
    plan, shared, state = setup_paths
    command = [
        sys.executable,
        str(SCRIPT),
        "--plan",
        str(plan),
        "--shared",
        str(shared),
        "--state-dir",
        str(state),
        *args,
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, **kwargs
    )


def test_the_campaign_stops_at_its_budget_with_state_saved(setup) -> None:
    plan = _load(setup)
    started = time.time()
    process = _script(
        setup,
        "run",
        "--minutes",
        "0.75",
        "--margin",
        "0",
        "--min-slice-minutes",
        "0.05",
        "--poll",
        "0.2",
        "--jobs",
        "2",
        "--cores",
        "2",
    )
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    progress = cp.run_progress(plan)
    assert progress["teacher"] == 3  # reached its target
    assert 0 < progress["scratch"] < 100000
    assert "scratch" in out and "teacher" in out
    # the slices stopped at the budget (plus start-up, the final evaluation and saving)
    assert time.time() - started < 45 + 90


def test_sigterm_ends_a_slice_with_its_state_saved(setup, tmp_path: Path) -> None:
    plan, shared, state = setup
    log = tmp_path / "worker.log"
    command = [
        sys.executable,
        str(SCRIPT),
        "--plan",
        str(plan),
        "--shared",
        str(shared),
        "--state-dir",
        str(state),
        "worker",
        "--run",
        "scratch",
        "--seconds",
        "300",
        "--no-eval",
    ]
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=handle, text=True, cwd=REPO
        )
        deadline = time.time() + 120
        while (
            time.time() < deadline
            and "run scratch: step 0" not in log.read_text()
            and process.poll() is None
        ):
            time.sleep(0.2)
        time.sleep(2)  # some steps
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, log.read_text()
    record = cp.read_record(cp.load_plan(plan, shared, state).run_dir("scratch"))
    assert record is not None and record["step"] > 0
    assert json.loads(out.strip().splitlines()[-1])["step"] == record["step"]


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_cuda_without_cuda_is_a_one_line_error(setup) -> None:
    process = _script(setup, "run", "--minutes", "1", "--device", "cuda")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert err.strip().count("\n") == 0 and "no CUDA device" in err


def test_the_shipped_plan_loads(tmp_path: Path) -> None:
    plan = cp.load_plan(
        REPO / "recipes" / "campaign" / "default.yaml", tmp_path, tmp_path / "state"
    )
    names = [r.name for r in plan.runs]
    assert {"teacher", "student-scratch", "student-feds"} <= set(names)
    ablations = [
        r for r in plan.runs if r.name.startswith("student-feds-") and "-fixed-" not in r.name
    ]
    assert len(ablations) >= 8  # issue 14's protocol: one choice changed per run
    assert {r.steps for r in ablations} == {plan.run("student-scratch").steps}
    teacher, scratch = plan.run("teacher"), plan.run("student-scratch")
    assert teacher.steps >= 3 * scratch.steps  # the teacher gets the larger share
    assert plan.run("student-feds").after == {"teacher": teacher.steps}
    # at least four λ: the teacher and the FEDS student fine-tuned as the scratch student was,
    # the FEDS fine-tune distilling from the teacher's fine-tune at its λ
    fine_tunes = [r for r in plan.runs if r.name.startswith("student-feds-fixed-")]
    assert len(fine_tunes) >= 4
    for feds in fine_tunes:
        k = feds.name.rsplit("-", 1)[1]
        scratch_k, teacher_k = plan.run(f"student-fixed-{k}"), plan.run(f"teacher-fixed-{k}")
        assert feds.lmbda == scratch_k.lmbda == teacher_k.lmbda
        assert (feds.init, feds.teacher, teacher_k.init) == (
            "student-feds",
            teacher_k.name,
            "teacher",
        )
        for field in ("steps", "lr", "warmup", "crops", "decay_from"):
            assert getattr(feds, field) == getattr(scratch_k, field) == getattr(teacher_k, field)
    swin = plan.run("student-swin-feds")
    assert swin.steps == plan.run("student-swin-scratch").steps == scratch.steps
    assert os.fspath(plan.train_dir).startswith(os.fspath(tmp_path))


def test_the_ema_is_stored_as_a_small_bf16_difference(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = {"w": torch.randn(64, 64), "steps": torch.tensor([3])}
    ema = {"w": weights["w"] + 1e-3 * torch.randn(64, 64), "steps": torch.tensor([3])}
    torch.save({"codec": weights}, tmp_path / "weights.pt")
    torch.save(cp._ema_payload(ema, weights), tmp_path / "ema.pt")
    restored = cp.load_ema(tmp_path)
    assert torch.equal(restored["steps"], ema["steps"])
    error = (restored["w"] - ema["w"]).abs().max()
    assert 0 < error < 1e-5  # bf16 rounding of a 1e-3 difference, not of the weights
    assert (tmp_path / "ema.pt").stat().st_size < 0.6 * (tmp_path / "weights.pt").stat().st_size


def test_a_variable_rate_run_trains_every_quality(setup) -> None:
    plan_path, shared, state = setup
    plan_path.write_text(
        PLAN.replace(
            "codec: student-tiny\n    steps: 100000", "codec: student-tiny-vr\n    steps: 100000"
        )
    )
    plan = cp.load_plan(plan_path, shared, state)
    record = cp.train_slice(plan, "scratch", seconds=120, max_steps=3, evaluate=True)
    assert record["step"] == 3 and record["codec"] == "student-tiny-vr"
    assert math.isfinite(record["evals"][-1]["heldout"]["loss"])


def test_a_variable_rate_run_starts_from_its_fixed_rate_network(setup) -> None:
    plan_path, shared, state = setup
    vr_run = """
  vr:
    codec: teacher-tiny-vr
    steps: 1
    crops: [[0, 64]]
    init: teacher
    after: {teacher: 3}
"""
    plan_path.write_text(PLAN + vr_run)
    plan = cp.load_plan(plan_path, shared, state)
    cp.train_slice(plan, "teacher", seconds=120, evaluate=False)
    record = cp.train_slice(plan, "vr", seconds=120, max_steps=1, evaluate=False)
    assert record["init"] == {"run": "teacher", "step": 3} and record["step"] == 1


def test_a_finished_keep_ema_run_holds_its_ema_weights_alone(setup) -> None:
    plan_path, shared, state = setup
    runs = """
  fixed:
    codec: teacher-tiny
    lmbda: 0.05
    steps: 2
    crops: [[0, 64]]
    init: teacher
    after: {teacher: 3}
    keep: ema
  after-fixed:
    codec: teacher-tiny
    steps: 1
    crops: [[0, 64]]
    init: fixed
    after: {fixed: 2}
"""
    plan_path.write_text(PLAN + runs)
    plan = cp.load_plan(plan_path, shared, state)
    cp.train_slice(plan, "teacher", seconds=120, evaluate=False)
    run_dir = plan.run_dir("fixed")
    cp.train_slice(plan, "fixed", seconds=120, max_steps=1, evaluate=False)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(cp.STATE_FILES)  # not done yet
    record = cp.train_slice(plan, "fixed", seconds=120, evaluate=True, export_dir=state)
    assert record["step"] == 2 and record["lmbda"] == 0.05
    assert sorted(p.name for p in run_dir.iterdir()) == ["ema.pt", "state.json"]
    assert cp.is_compacted(run_dir)
    kept = cp.load_ema(run_dir)
    # the slice's export is the float32 EMA: what was kept rounds it by at most 2^-10
    exported = load_codec(state / "fixed.ckpt").state_dict()
    assert set(kept) == set(exported)
    floats = [k for k, v in kept.items() if v.is_floating_point() and v.numel()]
    assert len(floats) > 10  # (integer entries are coding tables, rebuilt on export)
    for key in floats:
        value, reference = kept[key], exported[key]
        assert value.dtype == reference.dtype == torch.float32
        assert (value - reference).abs().max() <= reference.abs().max() * 2**-10
    payload = cp.load_tensors(run_dir, "ema.pt", "weights")
    assert any(v.dtype == torch.float16 for v in payload["weights"].values())
    # the state alone exports the same codec (what a fresh clone can do)
    again = load_codec(cp.export_run(plan, "fixed", state / "again.ckpt"))
    assert again.metadata["lmbda"] == 0.05 and again.metadata["steps"] == 2
    for key in floats:
        assert torch.equal(again.state_dict()[key], kept[key])
    # a run that finished before the plan said keep: ema is compacted to the same weights
    plan_path.write_text(
        PLAN + runs.replace("keep: ema\n  after-fixed", "keep: all\n  after-fixed")
    )
    full = cp.load_plan(plan_path, shared, state)
    late = full.run_dir("fixed")
    shutil.rmtree(late)
    record = cp.train_slice(full, "fixed", seconds=120, evaluate=False)
    assert record["step"] == 2 and not cp.is_compacted(late)
    ema = cp.load_ema(late)
    assert cp.compact_finished(full) == []  # keep: all
    plan_path.write_text(PLAN + runs)
    plan = cp.load_plan(plan_path, shared, state)
    assert cp.compact_finished(plan) == [("fixed", "EMA weights")] and cp.is_compacted(late)
    assert cp.read_record(late)["step"] == 2 and cp.compact_finished(plan) == []
    for key, value in cp.load_ema(late).items():
        if value.is_floating_point() and value.numel():
            assert (value - ema[key]).abs().max() <= ema[key].abs().max() * 2**-10
    # other runs start from it; raising its target is refused in one line
    assert cp.train_slice(plan, "after-fixed", seconds=120, evaluate=False)["step"] == 1
    plan_path.write_text(PLAN + runs.replace("steps: 2", "steps: 4"))
    raised = cp.load_plan(plan_path, shared, state)
    with pytest.raises(UsageError, match="EMA weights alone"):
        cp.train_slice(raised, "fixed", seconds=120, evaluate=False)


def _git(folder: Path, *args: str) -> None:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.org",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.org",
    )
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, env=env)


def test_a_keep_record_run_holds_its_record_alone_once_its_weights_are_committed(setup) -> None:
    plan_path, shared, state = setup
    plan_path.write_text(PLAN + RECORD_RUN)
    plan = cp.load_plan(plan_path, shared, state)
    run_dir = plan.run_dir("done")
    cp.train_slice(plan, "done", seconds=120, evaluate=False)
    assert sorted(p.name for p in run_dir.iterdir()) == ["ema.pt", "state.json"]  # as keep: ema
    ema = cp.load_ema(run_dir)
    # not in git: the weights would be lost, so they are kept
    assert cp.compact_finished(plan) == [] and not cp.is_record_only(run_dir)
    _git(state, "init", "-q")
    _git(state, "add", "-A")
    _git(state, "commit", "-qm", "state")
    (run_dir / "state.json").write_text((run_dir / "state.json").read_text() + " ")
    assert cp.compact_finished(plan) == []  # changed since the commit: kept
    _git(state, "checkout", "--", ".")
    # while a run still needs its weights (starts from it, not started yet), they stay
    plan_path.write_text(PLAN + RECORD_RUN + NEEDS_DONE)
    assert cp.compact_finished(cp.load_plan(plan_path, shared, state)) == []
    plan_path.write_text(PLAN + RECORD_RUN)
    assert cp.compact_finished(plan) == [("done", "record")]
    assert sorted(p.name for p in run_dir.iterdir()) == ["state.json"]
    assert cp.is_record_only(run_dir) and cp.read_record(run_dir)["step"] == 2
    # its weights come back from history, before and after the drop is committed
    for key, value in cp.load_ema(run_dir).items():
        assert torch.equal(value, ema[key])
    _git(state, "add", "-A")
    _git(state, "commit", "-qm", "record only")
    for key, value in cp.load_ema(run_dir).items():
        assert torch.equal(value, ema[key])
    exported = load_codec(cp.export_run(plan, "done", state.parent / "done.ckpt"))
    assert exported.metadata["steps"] == 2
    with pytest.raises(UsageError, match="record alone"):  # its target cannot be raised
        plan_path.write_text(PLAN + RECORD_RUN.replace("steps: 2", "steps: 3"))
        cp.train_slice(cp.load_plan(plan_path, shared, state), "done", seconds=120)
    shutil.rmtree(state / ".git")  # a checkout without the history: one clear line
    with pytest.raises(CheckpointError, match="not in this checkout's git history"):
        cp.load_ema(run_dir)


def test_a_run_waits_while_its_state_would_break_the_budget(setup) -> None:
    plan = _load(setup)
    teacher, scratch = (cp.expected_state_bytes(plan.run(n)) for n in ("teacher", "scratch"))
    assert 0 < scratch < teacher  # per parameter: float32 weights, bf16 EMA delta and Adam
    room = (teacher + scratch // 2) / 1e6  # the teacher fits, then the scratch student does not
    process = _script(
        setup,
        "run",
        "--minutes",
        "0.5",
        "--margin",
        "0",
        "--poll",
        "0.2",
        "--min-slice-minutes",
        "0.05",
        "--state-budget-mb",
        f"{room:.6f}",
    )
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    progress = cp.run_progress(plan)
    assert progress["teacher"] == 3 and progress["scratch"] == 0
    assert not plan.run_dir("scratch").exists()
    assert "scratch: waits: its state" in out and "past" in out
    assert cp.state_bytes(plan) <= room * 1e6


def test_the_reserved_state_never_counts_a_running_run_below_its_expected_size(setup) -> None:
    """A save caught half-written must not free budget (a CI failure: the scratch student
    started while the teacher's staging folder was being renamed in)."""
    plan = _load(setup)
    root = plan.state_dir / plan.name
    expected = {n: cp.expected_state_bytes(plan.run(n)) for n in ("teacher", "scratch")}

    def put(entry: str, size: int) -> None:
        (root / entry).mkdir(parents=True, exist_ok=True)
        (root / entry / "weights.pt").write_bytes(b"w" * size)

    assert cp.reserved_state_bytes(plan, []) == 0  # nothing saved yet
    assert cp.reserved_state_bytes(plan, ["scratch"]) == expected["scratch"]
    put("teacher", 1000)
    put(".scratch.next-123", 10)  # the scratch student's first save, ten bytes written so far
    assert cp.reserved_state_bytes(plan, ["scratch"]) == 1000 + expected["scratch"]
    # not running: what is on disk, whatever it is (a stale staging folder included)
    assert cp.reserved_state_bytes(plan, []) == 1010 == cp.state_bytes(plan)
    # a running run over its estimate counts what it holds: the folder, a swap's .old, staging
    big = expected["scratch"] + 7
    put("scratch", big)
    put("scratch.old", 5)
    assert cp.reserved_state_bytes(plan, ["scratch"]) == 1000 + big + 5 + 10
    assert cp.reserved_state_bytes(plan, ["teacher", "scratch"]) == (
        max(1000, expected["teacher"]) + big + 15
    )


def test_lanes_go_to_runs_in_plan_order_with_the_thread_cap(setup) -> None:
    """The plan's order is its priority: a started run goes on before a later one starts."""
    plan_path, shared, state = setup
    scratch = (
        "  scratch:\n    codec: student-tiny\n    steps: 100000\n    crops: [[0, 64], [6, 96]]\n"
    )
    assert scratch in PLAN
    scratch_first = PLAN.replace(scratch, "").replace("runs:\n", "runs:\n" + scratch)
    plan_path.write_text(scratch_first)
    plan = cp.load_plan(plan_path, shared, state)
    assert [s.name for s in plan.runs] == ["scratch", "teacher", "feds"]
    cp.train_slice(plan, "scratch", seconds=60, max_steps=1, evaluate=False)
    args = ["run", "--minutes", "0.4", "--margin", "0", "--min-slice-minutes", "0.05"]
    process = _script(
        setup,
        *args,
        "--poll",
        "0.2",
        "--jobs",
        "1",
        "--cores",
        "2",
        "--threads-per-run",
        "1",
        "--max-steps",
        "1",
    )
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    starts = [line for line in out.splitlines() if ": step " in line]
    assert starts and all(" scratch: step " in line for line in starts)  # teacher (at 0) waits
    assert all("1 thread(s)" in line for line in starts)  # 2 cores, 1 lane, capped at 1
    assert cp.run_progress(plan)["teacher"] == 0


def test_final_payload_keeps_float32_where_float16_would_round_too_much() -> None:
    state = {
        "ordinary": torch.linspace(-2, 2, 100),
        "tiny": torch.full((4,), 1e-7),  # float16 subnormal: far more than 2^-10 off
        "huge": torch.full((2,), 1e6),  # beyond float16's range
        "index": torch.arange(5),
    }
    payload = cp._final_payload(state)["weights"]
    assert payload["ordinary"].dtype == torch.float16
    assert payload["tiny"].dtype == payload["huge"].dtype == torch.float32
    assert torch.equal(payload["index"], state["index"])
    restored = (payload["ordinary"].float() - state["ordinary"]).abs().max()
    assert restored <= 2 * 2**-10


def test_only_continues_the_runs_named(setup) -> None:
    plan = _load(setup)
    args = ["run", "--minutes", "0.3", "--margin", "0", "--min-slice-minutes", "0.05"]
    process = _script(setup, *args, "--poll", "0.2", "--only", "teacher")
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    assert cp.run_progress(plan) == {"teacher": 3, "scratch": 0, "feds": 0}
    assert "teacher: step 0" in out and "scratch: step" not in out
    process = _script(setup, *args, "--only", "nope")
    _out, err = process.communicate(timeout=240)
    assert (
        process.returncode != 0
        and err.strip() == "campaign: error: --only: the plan has no run 'nope'"
    )


def test_gpu_merge_takes_the_runs_a_gpu_command_got_further_and_keeps_the_rest(
    setup, tmp_path: Path
) -> None:
    import io
    import tarfile

    plan = _load(setup)
    cp.train_slice(plan, "scratch", seconds=60, max_steps=2, evaluate=False)
    returned = tmp_path / "returned"
    shutil.copytree(plan.state_dir, returned)  # what a GPU command starts from
    there = cp.load_plan(setup[0], setup[1], returned)
    cp.train_slice(there, "teacher", seconds=60, max_steps=3, evaluate=False)  # "on the GPU"
    cp.train_slice(plan, "scratch", seconds=60, max_steps=2, evaluate=False)  # here, meanwhile
    here_scratch = (plan.run_dir("scratch") / "state.json").read_bytes()

    files = tmp_path / "files_at"  # the pieces scripts/gpu_slice.sh returns
    files.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(returned, arcname=".")
    data = buffer.getvalue()
    (files / "state.tar.aa").write_bytes(data[: len(data) // 2])
    (files / "state.tar.ab").write_bytes(data[len(data) // 2 :])
    process = _script(setup, "gpu-merge", str(files))
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    assert out.strip() == "teacher: step 0 -> 3"
    assert cp.run_progress(plan) == {"teacher": 3, "scratch": 4, "feds": 0}
    assert (plan.run_dir("scratch") / "state.json").read_bytes() == here_scratch
    for name in cp.STATE_FILES:  # the teacher's files are the returned ones, byte for byte
        assert (plan.run_dir("teacher") / name).read_bytes() == (
            there.run_dir("teacher") / name
        ).read_bytes()
    assert sorted(p.name for p in plan.run_dir("teacher").parent.iterdir()) == [
        "scratch",
        "teacher",
    ]  # no staging or .old folder left

    process = _script(setup, "gpu-merge", str(files))  # again: nothing is further any more
    out, _ = process.communicate(timeout=240)
    assert process.returncode == 0 and out.startswith("nothing taken")
    (files / "state.tar.ab").unlink()
    process = _script(setup, "gpu-merge", str(files))  # a piece missing: a clear error
    _out, err = process.communicate(timeout=240)
    assert process.returncode != 0 and len(err.strip().splitlines()) == 1
    assert "do not make a tar file" in err
    process = _script(setup, "gpu-merge", str(tmp_path / "nowhere"))
    _out, err = process.communicate(timeout=240)
    assert process.returncode != 0 and "no state.tar.* pieces" in err


def test_measure_adds_the_kodak_point_a_gpu_command_could_not(setup) -> None:
    import dataclasses

    plan = _load(setup)
    no_kodak = dataclasses.replace(plan, kodak_dir=None)  # a GPU command carries no Kodak
    cp.train_slice(no_kodak, "teacher", seconds=60, max_steps=3)
    cp.train_slice(plan, "scratch", seconds=60, max_steps=1, evaluate=False)
    run_dir = plan.run_dir("teacher")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    record = cp.read_record(run_dir)
    assert "kodak" not in record["evals"][-1] and "heldout" in record["evals"][-1]
    assert cp.unmeasured_runs(plan) == ["teacher"]  # scratch is unfinished, feds not started

    process = _script(setup, "measure")
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    assert out.startswith("teacher: Kodak ") and out.count("\n") == 1
    after = cp.read_record(run_dir)
    point = after["evals"][-1]["kodak"]
    assert point["images"] == 2 and point["bpp"] > 0 and point["psnr"] > 0  # 3 steps: ~6 dB
    # the same point the slice would have measured: the exported EMA through real bitstreams
    exported = cp.export_run(plan, "teacher", plan.work_dir / "check.ckpt")
    assert cp.kodak_point(plan.kodak_dir, exported) == point
    after["evals"][-1].pop("kodak")
    assert after == record  # nothing else in the record changed
    for name, data in before.items():  # and the weights are the same files
        if name != "state.json":
            assert (run_dir / name).read_bytes() == data
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["scratch", "teacher"]

    process = _script(setup, "measure")
    out, _ = process.communicate(timeout=240)
    assert process.returncode == 0 and out.startswith("every finished run has its Kodak point")
    process = _script(setup, "measure", "scratch")  # unfinished: one clear line, nothing written
    before_scratch = (plan.run_dir("scratch") / "state.json").read_bytes()
    _out, err = process.communicate(timeout=240)
    assert process.returncode != 0 and len(err.strip().splitlines()) == 1
    assert "not finished (1 of 100000 steps)" in err
    assert (plan.run_dir("scratch") / "state.json").read_bytes() == before_scratch


_MMAPPED_BYTES = """
import ctypes
libc = ctypes.CDLL(None)
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.malloc.restype = ctypes.c_void_p
libc.mallinfo2.restype = Info
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)
print(libc.mallinfo2().hblkhd - before)
libc.free(ctypes.c_void_p(block))
"""


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc"
    or tuple(int(part) for part in platform.libc_ver()[1].split(".")[:2]) < (2, 33),
    reason="mallinfo2 is glibc >= 2.33",
)
def test_a_worker_keeps_large_blocks_in_its_heap() -> None:
    """glibc maps a 64 MB block by itself (and unmaps it when freed, every training step);
    under the worker's environment it comes from the heap instead."""
    bare = {k: v for k, v in os.environ.items() if k not in cp.MALLOC_ENV}

    def mmapped(env: dict[str, str]) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _MMAPPED_BYTES], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return int(run.stdout)

    assert mmapped(bare) >= 64 << 20
    env = cp.worker_environment(3, bare)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert mmapped(env) == 0
    # a value the user set wins
    assert (
        cp.worker_environment(1, {**bare, "MALLOC_MMAP_THRESHOLD_": "4096"})[
            "MALLOC_MMAP_THRESHOLD_"
        ]
        == "4096"
    )
