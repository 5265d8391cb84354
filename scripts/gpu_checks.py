#!/usr/bin/env python
"""The GPU checks (issue 16) in one command: CUDA tests, evaluation on each device, decoding
across devices, the fixed-point entropy path's share of coding time, and training speed.

    python scripts/gpu_checks.py -o OUT [--limit N] [--steps N] [--warmup N] [--sizes paper|tiny]
                                 [--crop 256] [--batch 8] [--precisions fp32,bf16] [--threads N]
                                 [--skip tests,evaluation,cross-device,entropy,training]
                                 [--budget SECONDS] [--kodak DIR]
    python scripts/gpu_checks.py --prepare      # here, before a device run (see below)

It writes ``OUT/gpu-checks.json`` and ``OUT/gpu-checks.md`` (after every section, so a run cut
short keeps what it measured) and ``OUT/cuda-tests.log``, and prints its progress with
timestamps. Sections:

- **environment**: GPU name, driver, CUDA, cuDNN and torch versions, TF32 switches (or "no CUDA
  device"), CPU, package versions, and the Kodak folder with its sha256 sums checked.
- **cuda_tests**: ``pytest tests/cuda`` (every test there is marked ``cuda``) plus the CUDA test
  of ``tests/codecs/test_fixed_point_cache.py``, in a subprocess, with ``-W default`` (the device
  image's package versions differ from the project's pins: a deprecation warning there is not a
  CUDA failure); counts of passed, failed, skipped, xfailed and xpassed tests, skip reasons.
- **evaluation**: ``lic evaluate`` with the shipped default codec (all qualities: each
  checkpoint of a fixed-rate set, each trained level of a variable-rate model) on Kodak, once
  with ``--device cpu`` and once with ``--device cuda``: per-quality bpp and PSNR, the time per
  image on each device, and the comparison (largest PSNR difference, images of equal size).
- **cross_device**: per quality (the same rate points) and image, encode on the CPU and on CUDA
  (bytes identical?), decode each file on the other device: how many decode, how many are
  pixel-identical to the same-device decode, the largest pixel difference; the same with TF32
  off on CUDA.
- **entropy_share**: encode and decode time of the default codec (at its default quality; and
  on CUDA the paper-scale codecs) on one Kodak image split into the networks
  ``g_a``/``h_a``/``g_s``, the fixed-point entropy networks (``h_s`` and the slice loop) and
  rANS coding (the Stopwatch "entropy" section): each part's share.
- **training_speed**: images/s at ``--crop``² and ``--batch`` for teacher, student and
  student-swin, plain and with FEDS (teacher forward included), through lic's Lightning modules
  (``scripts/train_throughput.py``), against CompressAI's training loop around
  ``compressai.zoo.mbt2018_mean`` (random init, qualities 3 and 6: 7.0M and 17.6M parameters);
  each lic row's ratio is against the reference nearest in parameter count.

Without CUDA every CUDA half says "not run: no CUDA device", and the CPU halves run (CPU
evaluation and timing, CPU training speed) with smaller defaults (``--sizes tiny --steps 3
--warmup 1``: a few minutes on two cores). A CPU smoke run in under a minute:
``python scripts/gpu_checks.py -o /tmp/gc --limit 1 --steps 2 --crop 64 --batch 2``
(``tests/test_gpu_checks.py`` runs it).

**On a lent GPU machine** (torch with CUDA, Lightning, timm, Pillow, pytest there; compressai,
hydra and the rest carried as wheels; no network), the defaults should take about 5 minutes on
an H100 (an estimate: this has not run on a GPU yet); no new quality of the cross-device table
and no new training measurement starts after ``--budget`` (420 s), so that the whole command
ends inside a device command's 10 minutes:

    # here, once: .whl/ (bash scripts/device_wheels.sh), then Kodak into datasets/kodak
    # (git-ignored, 15 MB) and the size check against the 64 MiB a device command carries:
    python scripts/gpu_checks.py --prepare
    # device run, carry [".whl", "datasets/kodak"], timeout_s 600, command:
    OUT=$OUT bash scripts/gpu_checks.sh
    # the figures come back in <files_at>/gpu-checks/: gpu-checks.md, gpu-checks.json

``scripts/gpu_checks.sh`` installs the wheels with ``pip install --no-index --no-deps --target
/tmp/site`` when lic's imports fail, runs this script from the repository root with
``PYTHONPATH`` (no ``make install``) and writes into ``$OUT/gpu-checks``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np
import torch

import lic  # before compressai: the torchvision shim
from lic.paths import device_tree_bytes

NO_CUDA = "not run: no CUDA device"
SKIPPED = "not run: skipped (--skip)"
OVER_BUDGET = "not run: over the time budget (--budget)"
SECTIONS = ("tests", "evaluation", "cross-device", "entropy", "training")
#: CUDA tests outside tests/cuda (marked with skipif rather than the ``cuda`` marker).
OTHER_CUDA_TESTS = (
    (
        "tests/codecs/test_fixed_point_cache.py::"
        "test_moving_between_devices_rebuilds_the_fixed_point_networks"
    ),
)
#: What a device command carries at most (the working tree and the carried folders).
DEVICE_CARRY_BYTES = 64 * 2**20
SIZES = {
    "paper": {
        "codecs": ["teacher", "student", "student-swin"],
        "teacher": "teacher",
        "students": ["student", "student-swin"],
        "references": [3, 6],
        "entropy_codecs": ["student", "student-swin", "teacher"],
    },
    "tiny": {
        "codecs": ["teacher-tiny", "student-tiny", "student-swin-tiny"],
        "teacher": "teacher-tiny",
        "students": ["student-tiny", "student-swin-tiny"],
        "references": ["tiny"],
        "entropy_codecs": ["student-tiny"],
    },
}

_START = time.monotonic()


def log(message: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp} +{time.monotonic() - _START:6.1f}s] {message}", flush=True)


def elapsed() -> float:
    return time.monotonic() - _START


# -- environment ---------------------------------------------------------------------------


def _command_output(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    from importlib import metadata

    with contextlib.suppress(metadata.PackageNotFoundError):
        return metadata.version(module)
    return None


def environment(kodak: dict) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "packages": {
            name: _version(name)
            for name in (
                "compressai",
                "pytorch-lightning",
                "timm",
                "hydra-core",
                "numpy",
                "pillow",
                "pytest",
            )
        },
        "lic_commit": _command_output(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "kodak": kodak,
    }
    if not torch.cuda.is_available():
        env["gpu"] = "no CUDA device"
        return env
    properties = torch.cuda.get_device_properties(0)
    driver = _command_output(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "--id=0"]
    )
    env["gpu"] = {
        "name": torch.cuda.get_device_name(0),
        "count": torch.cuda.device_count(),
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "driver": driver,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "tf32": {
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
    }
    return env


def find_kodak(folder: Path | None) -> tuple[list[Path], dict]:
    """Kodak's images (by ``lic evaluate``'s rule unless a folder is given) and their check."""
    from lic.errors import LicError
    from lic.evaluation.datasets import KODAK_FILES, resolve_images, sha256_of
    from lic.paths import data_root, portable_path, shared_dir

    try:
        if folder is not None:
            _, images = resolve_images(str(folder))
        else:
            _, images = resolve_images("kodak", data_root(), shared_dir() / "datasets")
    except LicError as exc:
        return [], {"status": f"not found: {exc}"}
    expected = {name: digest for name, _, digest in KODAK_FILES}
    matching = sum(1 for p in images if expected.get(p.name) == sha256_of(p))
    return images, {
        "folder": portable_path(images[0].parent),
        "images": len(images),
        "sha256_matching": matching,
    }


# -- CUDA tests ----------------------------------------------------------------------------


def _counts(summary: str) -> dict[str, int]:
    counts = {}
    for number, word in re.findall(
        r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?)", summary
    ):
        counts["errors" if word.startswith("error") else word] = int(number)
    return counts


def cuda_tests(out: Path, timeout: float) -> dict:
    xml = out / "cuda-tests.xml"
    xml.unlink(missing_ok=True)  # never read an earlier run's results
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/cuda",
        *OTHER_CUDA_TESTS,
        "-q",
        "-rA",
        "-p",
        "no:cacheprovider",
        "-W",
        "default",
        f"--junitxml={xml}",
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
        output, returncode = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout
        output, returncode = (output or "") + f"\n[timed out after {timeout:.0f} s]", None
    (out / "cuda-tests.log").write_text(output)
    lines = [line for line in output.splitlines() if line.strip()]
    summary = next((line for line in reversed(lines) if re.search(r"\d+ \w+ in ", line)), "")
    tests = []
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    message = child.get("message", "")
                    outcome = {"failure": "failed", "error": "error"}.get(child.tag, "skipped")
                    if child.get("type") == "pytest.xfail":
                        outcome = "xfailed"
            name = f"{case.get('classname')}::{case.get('name')}"
            tests.append({"test": name, "outcome": outcome, "message": message[:300]})
    reasons = sorted({t["message"] for t in tests if t["outcome"] == "skipped"})
    return {
        "command": " ".join(["python", *command[1:-1]]),
        "returncode": returncode,
        "summary": summary.strip("= "),
        "counts": _counts(summary),
        "skip_reasons": reasons,
        "tests": tests,
        "seconds": time.perf_counter() - start,
        "log": "cuda-tests.log",
    }


# -- evaluation ----------------------------------------------------------------------------


def _quality_of(point: str) -> str:
    """The default codec's quality of an evaluation point, else the point's label.

    ``lmbda=0.0018`` -> ``1`` (the checkpoint of a fixed-rate default trained at that λ);
    ``quality=3`` -> ``3`` (a level of a variable-rate default).
    """
    from lic import pretrained

    kind, _, value = point.partition("=")
    if kind == "quality" and value:
        return value
    with contextlib.suppress(ValueError):
        lmbda = float(value)
        for model in pretrained.default_models():
            if model.lmbda is not None and math.isclose(model.lmbda, lmbda, rel_tol=1e-6):
                return str(model.quality)
    return point


def rate_points() -> list[dict]:
    """The default codec's rate points (:func:`lic.pretrained.rate_points`) as dicts:
    ``quality``, ``lmbda``, ``path`` and ``coding_quality``."""
    from lic import pretrained

    return [point._asdict() for point in pretrained.rate_points()]


def run_lic_evaluate(images: list[Path], device: str) -> list[dict]:
    """``lic evaluate --device DEVICE`` over ``images`` (the default codec); its per-image rows."""
    from lic.cli import main as lic_main

    folder = images[0].parent
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["evaluate", "--dataset", str(folder), "--device", device, "-o", tmp]
        argv += ["--limit", str(len(images))]
        code = lic_main(argv)
        if code != 0:
            raise RuntimeError(f"lic {' '.join(argv[:-2])} exited with {code}")
        with open(Path(tmp) / "per-image.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
    names = {p.name for p in images}
    rows = [r for r in rows if r["image"] in names]
    for row in rows:
        row["quality"] = _quality_of(row["point"])
        for key in ("bpp", "psnr_rgb", "ms_ssim_rgb", "encoding_time", "decoding_time"):
            row[key] = float(row[key])
    return rows


def _quality_order(quality: str) -> tuple:
    """Sort key of :func:`_quality_of`'s labels: numbers in order ("10" after "9", not after
    "1"), then any other label."""
    if quality.replace(".", "", 1).isdigit():
        return (0, float(quality), "")
    return (1, 0.0, quality)


def summarize_evaluation(rows: list[dict], seconds: float) -> dict:
    qualities = sorted({r["quality"] for r in rows}, key=_quality_order)
    per_quality = []
    for quality in qualities:
        members = [r for r in rows if r["quality"] == quality]
        per_quality.append(
            {
                "quality": quality,
                "bpp": statistics.fmean(r["bpp"] for r in members),
                "psnr": statistics.fmean(r["psnr_rgb"] for r in members),
                "encode_s": statistics.fmean(r["encoding_time"] for r in members),
                "decode_s": statistics.fmean(r["decoding_time"] for r in members),
            }
        )
    encode = [r["encoding_time"] for r in rows]
    decode = [r["decoding_time"] for r in rows]
    return {
        "status": "ok",
        "images": len({r["image"] for r in rows}),
        "codings": len(rows),
        "qualities": per_quality,
        "encode_s_mean": statistics.fmean(encode),
        "encode_s_median": statistics.median(encode),
        "decode_s_mean": statistics.fmean(decode),
        "decode_s_median": statistics.median(decode),
        "first_coding_s": encode[0] + decode[0],
        "seconds": seconds,
    }


def compare_evaluations(cpu: list[dict], cuda: list[dict]) -> dict:
    """CPU against CUDA, image by image: PSNR differences and files of equal size."""
    by_key = {(r["quality"], r["image"]): r for r in cuda}
    pairs = [
        (r, by_key[(r["quality"], r["image"])]) for r in cpu if (r["quality"], r["image"]) in by_key
    ]
    differences = [abs(a["psnr_rgb"] - b["psnr_rgb"]) for a, b in pairs]
    per_quality = {}
    for a, b in pairs:
        entry = per_quality.setdefault(a["quality"], {"psnr": [], "bpp": []})
        entry["psnr"].append(b["psnr_rgb"] - a["psnr_rgb"])
        entry["bpp"].append(b["bpp"] - a["bpp"])
    cpu_time = statistics.fmean(r["encoding_time"] + r["decoding_time"] for r in cpu)
    cuda_time = statistics.fmean(r["encoding_time"] + r["decoding_time"] for r in cuda)
    return {
        "status": "ok",
        "compared": len(pairs),
        "psnr_max_abs_difference_db": max(differences),
        "psnr_within_0.01_db": sum(d <= 0.01 for d in differences),
        "equal_size": sum(a["bpp"] == b["bpp"] for a, b in pairs),
        "per_quality": {
            q: {
                "mean_psnr_difference_db": statistics.fmean(v["psnr"]),
                "mean_bpp_difference": statistics.fmean(v["bpp"]),
            }
            for q, v in sorted(per_quality.items(), key=lambda item: _quality_order(item[0]))
        },
        "cpu_over_cuda_time": cpu_time / cuda_time,
    }


def evaluation(images: list[Path], cuda: bool) -> dict:
    result: dict = {"images": len(images), "command": "lic evaluate --dataset DIR --device D"}
    rows = {}
    for device in ("cpu", "cuda"):
        if device == "cuda" and not cuda:
            result[device] = {"status": NO_CUDA}
            continue
        log(f"evaluation: lic evaluate --device {device} on {len(images)} images")
        start = time.perf_counter()
        rows[device] = run_lic_evaluate(images, device)
        result[device] = summarize_evaluation(rows[device], time.perf_counter() - start)
        result[device]["per_image"] = [
            {
                k: r[k]
                for k in ("quality", "image", "bpp", "psnr_rgb", "encoding_time", "decoding_time")
            }
            for r in rows[device]
        ]
    result["comparison"] = (
        compare_evaluations(rows["cpu"], rows["cuda"]) if len(rows) == 2 else {"status": NO_CUDA}
    )
    return result


# -- decoding across devices ---------------------------------------------------------------


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 convolutions and matrix products on CUDA on or off (no effect on the CPU)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _decode(codec: torch.nn.Module, data: bytes) -> tuple[np.ndarray | None, str | None]:
    from lic import coding
    from lic.errors import LicError
    from lic.imageio import tensor_to_pixels

    try:
        return tensor_to_pixels(coding.decode(codec, data)), None
    except LicError as exc:
        return None, str(exc)


def _difference(a: np.ndarray | None, b: np.ndarray | None) -> int | None:
    if a is None or b is None or a.shape != b.shape:
        return None
    return int(np.abs(a.astype(np.int16) - b).max())


def _tally(records: list[dict], key: str) -> dict:
    values = [r[key] for r in records]
    decoded = [v for v in values if v is not None]
    return {
        "decoded": len(decoded),
        "identical": sum(v == 0 for v in decoded),
        "total": len(values),
        "max_difference": max(decoded) if decoded else None,
    }


def cross_device(
    images: list[Path],
    cpu: torch.device,
    cuda: torch.device,
    qualities: list[int] | None = None,
    tf32_off: bool = True,
    deadline: float = math.inf,
) -> dict:
    """Files encoded on ``cpu`` decoded on ``cuda`` and the reverse, per quality and image.

    "identical" compares with the decode on the encoding device (the same file); differences
    are in 8-bit levels. With ``tf32_off``, CUDA also encodes and decodes with TF32 disabled.
    No quality starts after ``deadline`` (``time.monotonic()``); those left are listed.
    """
    from lic import coding
    from lic.imageio import load_image

    points = [p for p in rate_points() if qualities is None or p["quality"] in qualities]
    result = {"images": len(images), "qualities": [], "not_run_over_budget": []}
    loaded: dict[Path, tuple] = {}  # a variable-rate default: one checkpoint for every point
    for point in points:
        if time.monotonic() > deadline:
            result["not_run_over_budget"].append(point["quality"])
            continue
        log(f"cross-device: quality {point['quality']}, {len(images)} images")
        if point["path"] not in loaded:
            loaded.clear()
            loaded[point["path"]] = (
                lic.load_codec(point["path"], device=cpu),
                lic.load_codec(point["path"], device=cuda),
            )
        on_cpu, on_cuda = loaded[point["path"]]
        quality = point["coding_quality"]
        records = []
        for path in images:
            x = load_image(path).to_tensor()
            from_cpu = coding.encode(on_cpu, x, quality)
            from_cuda = coding.encode(on_cuda, x, quality)
            cpu_cpu, _ = _decode(on_cpu, from_cpu)
            cpu_cuda, error_a = _decode(on_cuda, from_cpu)
            cuda_cuda, _ = _decode(on_cuda, from_cuda)
            cuda_cpu, error_b = _decode(on_cpu, from_cuda)
            record = {
                "image": path.name,
                "bytes_cpu": len(from_cpu),
                "bytes_cuda": len(from_cuda),
                "bytes_identical": from_cpu == from_cuda,
                "cpu_to_cuda": _difference(cpu_cuda, cpu_cpu),
                "cuda_to_cpu": _difference(cuda_cpu, cuda_cuda),
                "errors": [e for e in (error_a, error_b) if e],
            }
            if tf32_off:
                with tf32(False):
                    strict = coding.encode(on_cuda, x, quality)
                    cpu_cuda_strict, _ = _decode(on_cuda, from_cpu)
                record["tf32_off_bytes_identical"] = strict == from_cpu
                record["tf32_off_cpu_to_cuda"] = _difference(cpu_cuda_strict, cpu_cpu)
            records.append(record)
        entry = {
            "quality": point["quality"],
            "lmbda": point["lmbda"],
            "bytes_identical": sum(r["bytes_identical"] for r in records),
            "cpu_to_cuda": _tally(records, "cpu_to_cuda"),
            "cuda_to_cpu": _tally(records, "cuda_to_cpu"),
            "records": records,
        }
        if tf32_off:
            entry["tf32_off"] = {
                "bytes_identical": sum(r["tf32_off_bytes_identical"] for r in records),
                "cpu_to_cuda": _tally(records, "tf32_off_cpu_to_cuda"),
            }
        result["qualities"].append(entry)
    rows = result["qualities"]
    result["total"] = {
        "codings": sum(e["cpu_to_cuda"]["total"] for e in rows),
        "bytes_identical": sum(e["bytes_identical"] for e in rows),
        **{
            key: {
                "decoded": sum(e[key]["decoded"] for e in rows),
                "identical": sum(e[key]["identical"] for e in rows),
                "max_difference": max(
                    (
                        e[key]["max_difference"]
                        for e in rows
                        if e[key]["max_difference"] is not None
                    ),
                    default=None,
                ),
            }
            for key in ("cpu_to_cuda", "cuda_to_cpu")
        },
    }
    result["status"] = "ok"
    return result


# -- the entropy path's share ---------------------------------------------------------------


def coding_split(
    codec: torch.nn.Module,
    image: torch.Tensor,
    device: torch.device,
    runs: int,
    warmup: int,
    quality: float | None = None,
) -> dict:
    """Median encode and decode time split into networks, fixed-point entropy networks, rANS.

    A variable-rate codec codes at ``quality`` (None: its own default).

    rANS is the codec's Stopwatch section "entropy"; the fixed-point part is the time inside
    ``codec._hyper`` (``h_s``) and ``codec.context.run`` (the slice loop: mean, scale and LRP
    networks, scale indexes), less the rANS decoding that the slice loop calls; the networks
    (``g_a``, ``h_a``, ``g_s``, padding, cropping) are the rest.
    """
    from lic.codecs.timing import Stopwatch, synchronize

    codec = codec.to(device).eval()
    x = image.to(device)
    samples: dict[str, list[float]] = {}
    hyper, run = codec._hyper, codec.context.run
    for index in range(warmup + runs):
        for direction in ("encode", "decode"):
            stopwatch = Stopwatch(device)
            fixed = [0.0]

            def timed(function, *args, _sw=stopwatch, _fixed=fixed, **kwargs):
                before = _sw.seconds["entropy"]
                synchronize(device)
                start = time.perf_counter()
                out = function(*args, **kwargs)
                synchronize(device)
                _fixed[0] += time.perf_counter() - start - (_sw.seconds["entropy"] - before)
                return out

            codec._hyper = lambda *a, _t=timed, **k: _t(hyper, *a, **k)
            codec.context.run = lambda *a, _t=timed, **k: _t(run, *a, **k)
            try:
                synchronize(device)
                start = time.perf_counter()
                if direction == "encode":
                    compressed = codec.compress(x, stopwatch=stopwatch, quality=quality)
                else:
                    codec.decompress(compressed, stopwatch=stopwatch)
                synchronize(device)
                total = time.perf_counter() - start
            finally:
                del codec._hyper, codec.context.run
            if index >= warmup:
                rans = stopwatch.seconds["entropy"]
                for part, value in (
                    ("total", total),
                    ("fixed_point", fixed[0]),
                    ("rans", rans),
                    ("networks", total - fixed[0] - rans),
                ):
                    samples.setdefault(f"{direction}_{part}_s", []).append(value)
    median = {k: statistics.median(v) for k, v in samples.items()}
    for direction in ("encode", "decode"):
        total = median[f"{direction}_total_s"]
        for part in ("fixed_point", "rans", "networks"):
            median[f"{direction}_{part}_share"] = median[f"{direction}_{part}_s"] / total
        median[f"{direction}_entropy_path_share"] = (
            median[f"{direction}_fixed_point_s"] + median[f"{direction}_rans_s"]
        ) / total
    median["parameters"] = sum(p.numel() for p in codec.parameters())
    return median


def entropy_share(
    image: torch.Tensor, image_name: str, devices: dict[str, bool], names: list[str], runs: int
) -> dict:
    from lic import pretrained

    result = {"image": image_name, "size": list(image.shape[-2:]), "runs": runs}
    for device, available in devices.items():
        if not available:
            result[device] = {"status": NO_CUDA}
            continue
        target = torch.device(device)
        rows = {}
        labels = ["default"] + (names if device == "cuda" else [n for n in names if "tiny" in n])
        for label in labels:
            log(f"entropy share: {label} on {device}")
            quality = None
            if label == "default":
                path = pretrained.default_checkpoint()
                codec = lic.load_codec(path)
                label = f"default {codec.codec_name} ({path.name})"
                if codec.variable_rate:  # at the quality `lic encode` uses by default
                    quality = pretrained.default_quality()
                    label = f"default {codec.codec_name} ({path.name}, quality {quality:g})"
            else:
                codec = lic.create_codec(label)
                codec.update(force=True)
            rows[label] = coding_split(codec, image, target, runs, warmup=1, quality=quality)
            del codec
        result[device] = {"status": "ok", "codecs": rows}
    return result


# -- training speed ------------------------------------------------------------------------


def _failed(exc: Exception) -> dict:
    log(f"FAILED: {type(exc).__name__}: {exc}")
    return {
        "status": f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
        "traceback": traceback.format_exc()[-3000:],
    }


def tiny_reference() -> torch.nn.Module:
    """mbt2018-mean's architecture (compressai.models.MeanScaleHyperprior) at N=32, M=48."""
    from compressai.models import MeanScaleHyperprior

    return MeanScaleHyperprior(N=32, M=48)


def training_speed(args: argparse.Namespace, device: torch.device, budget_end: float) -> dict:
    import train_throughput as tt

    size = SIZES[args.sizes]
    common = (args.batch, args.crop, args.steps, args.warmup, device)
    result: dict = {
        "device": str(device),
        "crop": args.crop,
        "batch": args.batch,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "timing": "median step after the warm-up: forward, losses, backward, clipping, both "
        "optimizers (lic: under Lightning, scripts/train_throughput.py)",
        "precisions": "fp32; bf16 = bf16 autocast of the transforms + channels-last (what "
        "speed.transform_precision=auto speed.channels_last=true does on a GPU)",
        "references": {},
        "rows": [],
    }

    def over_budget() -> bool:
        return time.monotonic() > budget_end

    for quality in size["references"]:
        label = "mbt2018-mean N=32 M=48" if quality == "tiny" else f"mbt2018-mean q{quality}"
        if over_budget():
            result["references"][label] = {"status": OVER_BUDGET}
            continue
        log(f"training speed: CompressAI's loop, {label}")
        try:
            model = tiny_reference() if quality == "tiny" else tt.reference_model(quality)
            result["references"][label] = {"status": "ok", **tt.measure_reference(model, *common)}
        except Exception as exc:  # noqa: BLE001 (out of memory, say: the other rows still run)
            result["references"][label] = _failed(exc)
        model = None
    references = {k: v for k, v in result["references"].items() if v["status"] == "ok"}
    plan = []
    for precision in args.precisions.split(","):
        plan += [(name, None, precision) for name in size["codecs"]]
        plan += [(name, size["teacher"], precision) for name in size["students"]]
    for name, teacher, precision in plan:
        row = {"codec": name, "feds_teacher": teacher, "precision": precision}
        if over_budget():
            result["rows"].append(row | {"status": OVER_BUDGET})
            continue
        what = f"FEDS from {teacher}" if teacher else "plain"
        log(f"training speed: {name}, {what}, {precision}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:
            measured = tt.measure(
                name,
                *common,
                teacher=teacher,
                precision=precision,
                channels_last=precision != "fp32",
            )
        except Exception as exc:  # noqa: BLE001 (out of memory, say: the other rows still run)
            result["rows"].append(row | _failed(exc))
            continue
        row |= {"status": "ok", **measured}
        if references:
            nearest = min(
                references,
                key=lambda k: abs(math.log(references[k]["parameters"] / measured["parameters"])),
            )
            row["reference"] = nearest
            row["ratio_to_reference"] = (
                measured["images_per_s"] / references[nearest]["images_per_s"]
            )
        result["rows"].append(row)
    return result


# -- markdown ------------------------------------------------------------------------------


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _status(section: dict) -> str | None:
    """None for a section that ran; else why not (a missing section was not reached)."""
    if not section:
        return "not reached"
    status = section.get("status", "ok")
    return None if status == "ok" else status


def markdown(report: dict) -> str:
    lines = ["# GPU checks", ""]
    lines.append(
        f"`{report['command']}`, started {report['started']}, {report.get('seconds', 0):.0f} s."
    )
    env = report["sections"].get("environment", {})
    gpu = env.get("gpu")
    lines += ["", "## Environment", ""]
    if isinstance(gpu, dict):
        lines.append(
            f"- GPU: {gpu['name']} ({gpu['memory_gib']} GiB, compute capability "
            f"{gpu['capability']}), driver {gpu['driver']}, CUDA {gpu['cuda']}, cuDNN "
            f"{gpu['cudnn']}; TF32: {gpu['tf32']}"
        )
    elif gpu:
        lines.append(f"- GPU: {gpu}")
    if env:
        lines.append(
            f"- torch {env['torch']}, Python {env['python']}, CPU {env['cpu']} "
            f"({env['cpu_count']} cores, {env['torch_threads']} torch threads)"
        )
        lines.append(f"- packages: {env['packages']}; lic commit {env['lic_commit']}")
        lines.append(f"- Kodak: {env['kodak']}")

    tests = report["sections"].get("cuda_tests", {})
    lines += ["", "## CUDA tests", ""]
    if _status(tests):
        lines.append(_status(tests) + ("; what the run said:" if "summary" in tests else ""))
    if "summary" in tests:
        lines += ["", f"`{tests['command']}`: {tests['summary']}", ""]
        for reason in tests["skip_reasons"]:
            lines.append(f"- skipped: {reason}")
        for test in tests["tests"]:
            if test["outcome"] in ("failed", "error", "xfailed"):
                lines.append(f"- {test['outcome']}: `{test['test']}`: {test['message']}")

    ev = report["sections"].get("evaluation", {})
    lines += ["", "## Evaluation (`lic evaluate`, shipped default codec)", ""]
    if _status(ev):
        lines.append(_status(ev))
    else:
        lines.append(f"{ev['images']} Kodak images, every quality of the default codec.")
        lines += [
            "",
            "| device | quality | bpp | PSNR (dB) | encode s | decode s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for device in ("cpu", "cuda"):
            part = ev.get(device, {})
            if _status(part):
                lines.append(f"| {device} | {_status(part)} | | | | |")
                continue
            for q in part["qualities"]:
                lines.append(
                    f"| {device} | {q['quality']} | {_f(q['bpp'], 4)} | {_f(q['psnr'], 3)} | "
                    f"{_f(q['encode_s'])} | {_f(q['decode_s'])} |"
                )
        lines.append("")
        for device in ("cpu", "cuda"):
            part = ev.get(device, {})
            if not _status(part):
                lines.append(
                    f"- {device}: per image encode {_f(part['encode_s_mean'])} s (median "
                    f"{_f(part['encode_s_median'])}), decode {_f(part['decode_s_mean'])} s (median "
                    f"{_f(part['decode_s_median'])}); first image (warm-up) "
                    f"{_f(part['first_coding_s'])} s"
                )
        comparison = ev.get("comparison", {})
        if _status(comparison):
            lines.append(f"- CPU against CUDA: {_status(comparison)}")
        else:
            lines.append(
                f"- CPU against CUDA: largest PSNR difference "
                f"{_f(comparison['psnr_max_abs_difference_db'], 4)} dB; within 0.01 dB: "
                f"{comparison['psnr_within_0.01_db']}/{comparison['compared']}; files of equal "
                f"size: {comparison['equal_size']}/{comparison['compared']}; CPU time / CUDA "
                f"time: {_f(comparison['cpu_over_cuda_time'], 2)}"
            )

    cross = report["sections"].get("cross_device", {})
    lines += ["", "## Decoding across devices (default codec, Kodak)", ""]
    if _status(cross):
        lines.append(_status(cross))
    else:
        lines.append(
            "Decoded / pixel-identical to the decode on the encoding device / largest difference "
            "in 8-bit levels; bytes: CPU and CUDA encodes identical."
        )
        lines += [
            "",
            (
                "| quality | bytes identical | CPU→CUDA decoded | identical | max diff "
                "| CUDA→CPU decoded | identical | max diff | TF32 off: bytes identical "
                "| CPU→CUDA identical | max diff |"
            ),
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e in cross["qualities"]:
            n = e["cpu_to_cuda"]["total"]
            a, b = e["cpu_to_cuda"], e["cuda_to_cpu"]
            off = e.get("tf32_off")
            tail = (
                f"{off['bytes_identical']}/{n} | {off['cpu_to_cuda']['identical']}/{n} | "
                f"{_f(off['cpu_to_cuda']['max_difference'])}"
                if off
                else "– | – | –"
            )
            lines.append(
                f"| {e['quality']} | {e['bytes_identical']}/{n} | {a['decoded']}/{n} | "
                f"{a['identical']}/{n} | {_f(a['max_difference'])} | {b['decoded']}/{n} | "
                f"{b['identical']}/{n} | {_f(b['max_difference'])} | {tail} |"
            )
        if cross.get("not_run_over_budget"):
            lines.append(f"\nQualities {cross['not_run_over_budget']}: {OVER_BUDGET}.")

    share = report["sections"].get("entropy_share", {})
    lines += ["", "## The entropy path's share of coding time", ""]
    if _status(share):
        lines.append(_status(share))
    else:
        lines.append(
            f"One image ({share['image']}, {share['size'][1]}x{share['size'][0]}), median of "
            f"{share['runs']} after a warm-up; seconds, and the share of fixed-point entropy "
            "networks + rANS."
        )
        lines += [
            "",
            (
                "| device | codec | encode s | fixed point | rANS | entropy path share "
                "| decode s | fixed point | rANS | entropy path share |"
            ),
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for device in ("cpu", "cuda"):
            part = share.get(device, {})
            if _status(part):
                lines.append(f"| {device} | {_status(part)} | | | | | | | | |")
                continue
            for label, r in part["codecs"].items():
                lines.append(
                    f"| {device} | {label} | {_f(r['encode_total_s'])} | "
                    f"{_f(r['encode_fixed_point_s'])} | {_f(r['encode_rans_s'])} | "
                    f"{r['encode_entropy_path_share']:.0%} | {_f(r['decode_total_s'])} | "
                    f"{_f(r['decode_fixed_point_s'])} | {_f(r['decode_rans_s'])} | "
                    f"{r['decode_entropy_path_share']:.0%} |"
                )

    speed = report["sections"].get("training_speed", {})
    lines += ["", "## Training speed", ""]
    if _status(speed):
        lines.append(_status(speed))
    for device in [d for d in ("cpu", "cuda") if d in speed]:
        part = speed[device]
        if _status(part):
            lines.append(f"- {device}: {_status(part)}")
            continue
        lines.append(
            f"{device}: batch {part['batch']} × {part['crop']}², median of {part['timed_steps']} "
            f"steps after {part['warmup_steps']} warm-up steps; {part['timing']}; precisions: "
            f"{part['precisions']}. Ratio: images/s against CompressAI's loop on the reference "
            "nearest in parameter count."
        )
        lines += [
            "",
            "| codec | FEDS teacher | precision | parameters | images/s | reference | ratio |",
            "|---|---|---|---:|---:|---|---:|",
        ]
        for label, r in part["references"].items():
            note = "–" if r["status"] == "ok" else r["status"]
            lines.append(
                f"| {label} (CompressAI's loop) | – | fp32 | {r.get('parameters', 0):,} | "
                f"{_f(r.get('images_per_s'), 2)} | {note} | – |"
            )
        for r in part["rows"]:
            if r["status"] != "ok":
                lines.append(
                    f"| {r['codec']} | {r['feds_teacher'] or '–'} | {r['precision']} | | | "
                    f"{r['status']} | |"
                )
                continue
            lines.append(
                f"| {r['codec']} | {r['feds_teacher'] or '–'} | {r['precision']} | "
                f"{r['parameters']:,} | {_f(r['images_per_s'], 2)} | {r.get('reference', '–')} | "
                f"{_f(r.get('ratio_to_reference'), 2)} |"
            )
        lines.append("")
    failed = failures(report["sections"])
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- {where}: {status}" for where, status in failed]
    return "\n".join(lines) + "\n"


def failures(node, where: str = "") -> list[tuple[str, str]]:
    """Every ``status: failed: ...`` in the report, with where it is."""
    found = []
    if isinstance(node, dict):
        if str(node.get("status", "")).startswith("failed"):
            found.append((where, node["status"]))
        for key, value in node.items():
            found += failures(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += failures(value, f"{where}[{index}]")
    return found


# -- preparation for a device run ------------------------------------------------------------


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def prepare() -> int:
    """Kodak into ``datasets/kodak`` (git-ignored) and the size of what a device run carries."""
    import shutil

    from lic.evaluation.datasets import KODAK_FILES, sha256_of
    from lic.paths import shared_dir

    target = REPO / "datasets" / "kodak"
    source = shared_dir() / "datasets" / "kodak"
    target.mkdir(parents=True, exist_ok=True)
    for name, _, digest in KODAK_FILES:
        if (target / name).is_file() and sha256_of(target / name) == digest:
            continue
        if not (source / name).is_file():
            print(f"gpu_checks: error: {source / name} not found", file=sys.stderr)
            return 1
        shutil.copy(source / name, target / name)
        if sha256_of(target / name) != digest:
            print(f"gpu_checks: error: {name}: sha256 differs from Kodak's", file=sys.stderr)
            return 1
    ignored = subprocess.run(["git", "check-ignore", "-q", str(target)], cwd=REPO).returncode == 0
    wheels = REPO / ".whl"
    needed = ["compressai", "hydra_core", "omegaconf", "antlr4_python3_runtime", "pytorch_msssim"]
    needed += ["tensorboardX"]
    missing = [n for n in needed if not list(wheels.glob(f"{n}-*.whl"))]
    total = (
        device_tree_bytes(REPO)
        + _folder_bytes(target)
        + (_folder_bytes(wheels) if wheels.is_dir() else 0)
    )
    kodak_mib = _folder_bytes(target) / 2**20
    print(f"{target}: {len(KODAK_FILES)} images, sha256 checked ({kodak_mib:.1f} MiB)")
    print(f"git-ignored: {'yes' if ignored else 'NO: do not commit it'}")
    state = (
        f"missing {', '.join(missing)} (bash scripts/device_wheels.sh)" if missing else "complete"
    )
    print(f".whl: {state}")
    print(
        f"a device run carries {total / 2**20:.1f} MiB of {DEVICE_CARRY_BYTES / 2**20:.0f} MiB "
        "(working tree + .whl + datasets/kodak)"
    )
    if total > DEVICE_CARRY_BYTES:
        print(
            "gpu_checks: error: too much to carry; the campaign state may have grown",
            file=sys.stderr,
        )
        return 1
    print('device run, carry [".whl", "datasets/kodak"], timeout_s 600, command:')
    print("  OUT=$OUT bash scripts/gpu_checks.sh")
    return 0 if not missing else 1


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="folder for gpu-checks.json/.md")
    parser.add_argument("--prepare", action="store_true", help="get a device run ready, then stop")
    parser.add_argument("--limit", type=int, help="only the first N Kodak images")
    parser.add_argument(
        "--steps", type=int, help="timed training steps per row (default: 20 on CUDA, else 3)"
    )
    parser.add_argument(
        "--warmup", type=int, help="warm-up training steps per row (default: 3 on CUDA, else 1)"
    )
    parser.add_argument(
        "--sizes", choices=sorted(SIZES), help="codec sizes (default: paper on CUDA, else tiny)"
    )
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--precisions",
        help="transform precisions of the training rows (default: fp32,bf16 on CUDA, else fp32)",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs of the entropy split")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--skip", default="", help=f"sections to leave out: {','.join(SECTIONS)}")
    parser.add_argument(
        "--budget", type=float, default=420, help="seconds after which no new training row starts"
    )
    parser.add_argument("--tests-timeout", type=float, default=300)
    parser.add_argument("--kodak", type=Path, help="Kodak folder (default: lic evaluate's rule)")
    args = parser.parse_args(argv)
    if args.prepare:
        return prepare()
    if args.output is None:
        parser.error("-o/--output is required")
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(SECTIONS):
        parser.error(f"--skip takes {','.join(SECTIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    args.precisions = args.precisions or ("fp32,bf16" if cuda else "fp32")
    args.steps = args.steps or (20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.sizes = args.sizes or ("paper" if cuda else "tiny")
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(
            ["python scripts/gpu_checks.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cuda": cuda,
        "sections": {},
    }

    def save() -> None:
        report["seconds"] = elapsed()
        (out / "gpu-checks.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        try:
            text = markdown(report)
        except Exception:  # noqa: BLE001 (the JSON holds the figures; say why the table is not)
            text = f"# GPU checks\n\nthe tables failed:\n\n```\n{traceback.format_exc()}```\n"
        (out / "gpu-checks.md").write_text(text)

    def section(key: str, function, *fargs) -> None:
        start = time.perf_counter()
        try:
            report["sections"][key] = function(*fargs)
        except Exception as exc:  # noqa: BLE001 (one broken section must not cost the others)
            log(f"{key}:")
            report["sections"][key] = _failed(exc)
        report["sections"][key].setdefault("seconds", time.perf_counter() - start)
        save()
        log(f"{key}: done ({time.perf_counter() - start:.1f} s)")

    log(f"gpu checks into {out}; CUDA: {'yes' if cuda else 'no'}")
    images, kodak = find_kodak(args.kodak)
    if args.limit:
        images = images[: args.limit]
    section("environment", environment, kodak)
    no_kodak = {"status": f"not run: Kodak {kodak.get('status', '')}"}

    if "tests" in skip:
        report["sections"]["cuda_tests"] = {"status": SKIPPED}
    else:
        log("CUDA tests: pytest tests/cuda (subprocess)")

        def run_tests() -> dict:
            result = cuda_tests(out, args.tests_timeout)
            result["status"] = "ok" if cuda else NO_CUDA
            return result

        section("cuda_tests", run_tests)

    if "evaluation" in skip:
        report["sections"]["evaluation"] = {"status": SKIPPED}
    elif not images:
        report["sections"]["evaluation"] = no_kodak
    else:
        section("evaluation", evaluation, images, cuda)

    if "cross-device" in skip:
        report["sections"]["cross_device"] = {"status": SKIPPED}
    elif not cuda:
        report["sections"]["cross_device"] = {"status": NO_CUDA}
    elif not images:
        report["sections"]["cross_device"] = no_kodak
    else:
        devices = torch.device("cpu"), torch.device("cuda")
        section("cross_device", cross_device, images, *devices, None, True, _START + args.budget)

    if "entropy" in skip:
        report["sections"]["entropy_share"] = {"status": SKIPPED}
    else:
        from lic.evaluation.bench import test_image
        from lic.imageio import load_image

        if images:
            image, name = load_image(images[0]).to_tensor(), images[0].name
        else:
            image, name = test_image(512, 768), "bench test image"
        names = SIZES[args.sizes]["entropy_codecs"]
        devices = {"cpu": True, "cuda": cuda}
        section("entropy_share", entropy_share, image, name, devices, names, args.runs)

    if "training" in skip:
        report["sections"]["training_speed"] = {"status": SKIPPED}
    else:
        device = torch.device("cuda" if cuda else "cpu")
        budget_end = _START + args.budget

        def speed() -> dict:
            measured = {"status": "ok", device.type: training_speed(args, device, budget_end)}
            measured[device.type]["status"] = "ok"
            if not cuda:
                measured["cuda"] = {"status": NO_CUDA}
            return measured

        section("training_speed", speed)

    save()
    failed = [where for where, _ in failures(report["sections"])]
    counts = report["sections"].get("cuda_tests", {}).get("counts", {})
    if counts.get("failed") or counts.get("errors"):
        failed.append(
            f"cuda_tests ({counts.get('failed', 0)} failed, {counts.get('errors', 0)} errors)"
        )
    log(f"wrote {out / 'gpu-checks.json'} and {out / 'gpu-checks.md'}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
