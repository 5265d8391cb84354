"""scripts/gpu_checks.py without a GPU: every section reported, CUDA halves "not run", CPU halves
measured; and the CUDA-only code (decoding across devices, the GPU-shaped tables) run with the
CPU standing in for the GPU, so that it works the first time a GPU is lent."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

import lic
from lic.demo import SAMPLES_DIR
from tests.conftest import REPO
from tests.helpers import shipped_points

SCRIPT = REPO / "scripts" / "gpu_checks.py"
NO_CUDA = "not run: no CUDA device"
SECTIONS = {
    "environment",
    "cuda_tests",
    "evaluation",
    "cross_device",
    "entropy_share",
    "training_speed",
}

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the report of a machine without CUDA"
)


@pytest.fixture(scope="module")
def gpu_checks():
    """The script as a module (it puts the repository and scripts/ on sys.path: restored)."""
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location("gpu_checks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path[:] = saved


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-checks")
    quick = ["--limit", "1", "--steps", "2", "--warmup", "1", "--sizes", "tiny", "--runs", "1"]
    command = [sys.executable, str(SCRIPT), "-o", str(out), "--kodak", str(SAMPLES_DIR), *quick]
    command += ["--crop", "64", "--batch", "2", "--threads", "1"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "wrote" in done.stdout and "failed: none" in done.stdout
    return json.loads((out / "gpu-checks.json").read_text()) | {
        "markdown": (out / "gpu-checks.md").read_text(),
        "log": (out / "cuda-tests.log").read_text(),
    }


def test_every_section_is_reported_with_the_cuda_halves_not_run(smoke) -> None:
    sections = smoke["sections"]
    assert set(sections) == SECTIONS and smoke["cuda"] is False
    assert sections["environment"]["gpu"] == "no CUDA device"
    assert sections["environment"]["torch"] == torch.__version__
    assert sections["environment"]["kodak"]["images"] == 3  # the sample photos stand in

    tests = sections["cuda_tests"]
    assert tests["status"] == NO_CUDA
    assert tests["counts"]["skipped"] >= 12 and "failed" not in tests["counts"]
    assert "no CUDA device" in tests["skip_reasons"]
    assert all(t["outcome"] == "skipped" for t in tests["tests"])
    assert "skipped" in smoke["log"]

    assert sections["evaluation"]["cuda"]["status"] == NO_CUDA
    assert sections["evaluation"]["comparison"]["status"] == NO_CUDA
    assert sections["cross_device"]["status"] == NO_CUDA
    assert sections["entropy_share"]["cuda"]["status"] == NO_CUDA
    assert sections["training_speed"]["cuda"]["status"] == NO_CUDA
    assert smoke["markdown"].count(NO_CUDA) >= 5


def test_the_cpu_halves_hold_numbers(smoke) -> None:
    cpu = smoke["sections"]["evaluation"]["cpu"]
    assert cpu["status"] == "ok" and cpu["images"] == 1
    # Every rate point: each checkpoint of a fixed-rate default, each level of a variable-rate one.
    assert [q["quality"] for q in cpu["qualities"]] == [str(p.quality) for p in shipped_points()]
    assert all(q["psnr"] > 20 and 0 < q["bpp"] < 2 for q in cpu["qualities"])
    assert cpu["encode_s_mean"] > 0 and cpu["decode_s_mean"] > 0

    share = smoke["sections"]["entropy_share"]["cpu"]["codecs"]
    assert len(share) == 2  # the default codec and student-tiny
    for row in share.values():
        for direction in ("encode", "decode"):
            parts = sum(row[f"{direction}_{p}_share"] for p in ("networks", "fixed_point", "rans"))
            assert parts == pytest.approx(1.0)
            assert 0 < row[f"{direction}_entropy_path_share"] < 1

    speed = smoke["sections"]["training_speed"]["cpu"]
    (reference,) = speed["references"].values()
    assert reference["status"] == "ok" and reference["images_per_s"] > 0
    rows = speed["rows"]
    assert [(r["codec"], r["feds_teacher"]) for r in rows] == [
        ("teacher-tiny", None),
        ("student-tiny", None),
        ("student-swin-tiny", None),
        ("student-tiny", "teacher-tiny"),
        ("student-swin-tiny", "teacher-tiny"),
    ]
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 for r in rows)
    assert all(r["ratio_to_reference"] > 0 for r in rows)
    assert "| student-tiny | teacher-tiny | fp32 |" in smoke["markdown"]


def test_the_cuda_code_runs_with_the_cpu_standing_in(gpu_checks, smoke) -> None:
    """Decoding across devices, the CPU/CUDA comparison and the GPU-shaped tables, on CPU."""
    cpu = torch.device("cpu")
    cross = gpu_checks.cross_device([SAMPLES_DIR / "kodim23.png"], cpu, cpu, qualities=[1])
    (row,) = cross["qualities"]
    assert row["quality"] == 1 and row["bytes_identical"] == 1
    for key in ("cpu_to_cuda", "cuda_to_cpu"):
        assert row[key] == {"decoded": 1, "identical": 1, "total": 1, "max_difference": 0}
    assert row["tf32_off"]["bytes_identical"] == 1
    assert cross["total"]["codings"] == 1

    rows = smoke["sections"]["evaluation"]["cpu"]["per_image"]
    comparison = gpu_checks.compare_evaluations(rows, copy.deepcopy(rows))
    assert comparison["psnr_max_abs_difference_db"] == 0
    assert comparison["equal_size"] == comparison["compared"] == len(shipped_points())

    report = copy.deepcopy({k: smoke[k] for k in ("command", "started", "seconds", "sections")})
    sections = report["sections"]
    sections["environment"]["gpu"] = {
        "name": "stand-in",
        "memory_gib": 80.0,
        "capability": "9.0",
        "driver": "0",
        "cuda": "0",
        "cudnn": 0,
        "tf32": {"cudnn.allow_tf32": True},
    }
    sections["cuda_tests"]["status"] = "ok"
    sections["evaluation"]["cuda"] = sections["evaluation"]["cpu"]
    sections["evaluation"]["comparison"] = comparison
    sections["cross_device"] = cross
    sections["entropy_share"]["cuda"] = sections["entropy_share"]["cpu"]
    sections["training_speed"] = {"status": "ok", "cuda": sections["training_speed"]["cpu"]}
    text = gpu_checks.markdown(report)
    assert NO_CUDA not in text
    assert "| 1 | 1/1 | 1/1 | 1/1 | 0 | 1/1 | 1/1 | 0 | 1/1 | 1/1 | 0 |" in text
    assert "largest PSNR difference 0.0000 dB" in text


def test_the_coding_split_leaves_the_codec_as_it_was(gpu_checks) -> None:
    codec = lic.create_codec("student-tiny")
    codec.update(force=True)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    split = gpu_checks.coding_split(codec, image, torch.device("cpu"), runs=1, warmup=0)
    assert "_hyper" not in vars(codec) and "run" not in vars(codec.context)
    assert split["encode_fixed_point_s"] > 0 and split["decode_rans_s"] > 0
    assert split["parameters"] == sum(p.numel() for p in codec.parameters())
