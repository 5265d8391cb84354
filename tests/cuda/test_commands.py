"""The measuring commands on CUDA: ``lic bench`` and ``lic evaluate`` with ``--device cuda``."""

from __future__ import annotations

import json

import pytest

from lic import pretrained
from lic.cli import main
from tests.helpers import shipped_points

pytestmark = pytest.mark.cuda


def test_bench_on_cuda(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--device", "cuda", "--size", "256x256", "--runs", "2", "--warmup", "1"]
    assert main([*argv, "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["device"].startswith("cuda") and report["device_name"]
    # One row per checkpoint of the default codec (a variable-rate one at its default quality).
    assert len(report["codecs"]) == len(pretrained.default_models())
    for row in report["codecs"].values():
        assert row["peak_memory_kind"] == "cuda max_memory_allocated"
        assert 0 < row["encode_entropy_s"] < row["encode_s"]
        assert 0 < row["decode_entropy_s"] < row["decode_s"]
    assert "on cuda" in capsys.readouterr().out


def test_evaluate_on_cuda(image_folder, tmp_path, capsys) -> None:
    out = tmp_path / "results"
    argv = ["evaluate", "--dataset", str(image_folder), "--device", "cuda", "--limit", "2"]
    assert main([*argv, "-o", str(out)]) == 0
    summary = json.loads((out / f"{pretrained.default_models()[0].codec}.json").read_text())
    assert summary["device"].startswith("cuda") and summary["images"] == 2
    assert len(summary["results"]["bpp"]) == len(shipped_points())  # every rate point
    assert all(p > 10 for p in summary["results"]["psnr-rgb"])
    capsys.readouterr()
