"""`lic evaluate`, `lic report` and `lic bench` end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from lic.cli import main
from lic.evaluation.report import write_report


def _results(path, name: str, bpp, psnr, msssim=None, **extra) -> str:
    results = {
        "bpp": bpp,
        "psnr-rgb": psnr,
        "encoding_time": [0.1] * len(bpp),
        "decoding_time": [0.2] * len(bpp),
    }
    if msssim:
        results["ms-ssim-rgb"] = msssim
    path.write_text(json.dumps({"name": name, "description": name, "results": results, **extra}))
    return str(path)


def test_report_from_fixture_results(tmp_path) -> None:
    anchor = _results(
        tmp_path / "a.json",
        "Anchor",
        [0.25, 0.5, 1.0, 2.0],
        [28.0, 31.0, 34.0, 37.0],
        [0.90, 0.94, 0.97, 0.985],
    )
    better = _results(
        tmp_path / "b.json",
        "Better",
        [0.2, 0.4, 0.8, 1.6],
        [28.0, 31.0, 34.0, 37.0],
        [0.90, 0.94, 0.97, 0.985],
        parameters=1234,
    )
    out = tmp_path / "report"
    report = write_report([tmp_path / "a.json", tmp_path / "b.json"], "Anchor", out)
    (row,) = report["rows"]
    assert row["name"] == "Better" and row["bd_rate_psnr"] == pytest.approx(-20.0, abs=1e-6)
    assert row["bd_rate_ms_ssim"] == pytest.approx(-20.0, abs=1e-6) and row["parameters"] == 1234
    assert row["encoding_time"] == pytest.approx(0.1) and row["decoding_time"] == pytest.approx(0.2)
    markdown = (out / "report.md").read_text()
    assert "-20.00%" in markdown and "Better" in markdown and "1,234" in markdown
    assert json.loads((out / "report.json").read_text())["anchor"] == "Anchor"
    for plot in ("rd-psnr.png", "rd-msssim.png"):
        with Image.open(out / plot) as image:
            assert image.format == "PNG" and image.size[0] > 400
    # each curve's file, named without this machine's temporary folder
    assert report["anchor_source"] == Path(anchor).name and row["source"] == Path(better).name


def test_report_json_is_unchanged_by_float_noise_in_the_curves(tmp_path) -> None:
    """Regenerating a report from the same measurements gives the same file: noise in the last
    bits of a curve (another summation order, another machine) does not reach report.json."""
    bpp, psnr = [0.2, 0.4, 0.8, 1.6], [28.0, 31.0, 34.0, 37.0]
    anchor = _results(tmp_path / "a.json", "Anchor", [0.25, 0.5, 1.0, 2.0], psnr)
    texts = []
    for noise in (0.0, 1e-12):
        better = _results(tmp_path / "b.json", "Better", bpp, [v + noise for v in psnr])
        write_report([Path(anchor), Path(better)], "Anchor", tmp_path / f"report{noise}")
        texts.append((tmp_path / f"report{noise}" / "report.json").read_text())
    assert texts[0] == texts[1]
    assert json.loads(texts[0])["rows"][0]["bd_rate_psnr"] == -20.0


def test_report_with_a_published_anchor_file(tmp_path, capsys) -> None:
    vtm = tmp_path / "vtm.json"
    _results(vtm, "VTM", [0.1, 0.3, 0.6, 1.2], [29.0, 32.0, 35.0, 38.0])
    ours = _results(tmp_path / "o.json", "Ours", [0.12, 0.33, 0.7, 1.3], [29.0, 32.0, 35.0, 38.0])
    assert main(["report", ours, "--anchor", str(vtm), "-o", str(tmp_path / "r")]) == 0
    assert "BD-rate vs VTM" in capsys.readouterr().out
    assert main(["report", ours, "--anchor", "Nope", "-o", str(tmp_path / "r2")]) == 2
    assert "neither a curve" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert (
        main(["report", str(tmp_path / "bad.json"), "--anchor", "x", "-o", str(tmp_path / "r3")])
        == 2
    )


def test_evaluate_on_kodak_then_report(kodak_dir, tiny_checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--dataset",
        str(kodak_dir),
        "--limit",
        "2",
        "--checkpoint",
        str(tiny_checkpoint),
        "--anchors",
        "jpeg",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    ours = json.loads((out / "student-tiny.json").read_text())
    jpeg = json.loads((out / "jpeg.json").read_text())
    assert ours["images"] == 2 and len(ours["results"]["bpp"]) == 1
    assert ours["parameters"] > 0 and ours["results"]["encoding_time"][0] > 0
    assert len(jpeg["results"]["bpp"]) == 13 and jpeg["results"]["bpp"] == sorted(
        jpeg["results"]["bpp"]
    )
    with open(out / "per-image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 + 2 * 13
    stream_bpp = [float(r["bpp"]) for r in rows if r["curve"] == "student-tiny"]
    assert ours["results"]["bpp"][0] == pytest.approx(sum(stream_bpp) / 2)
    assert (
        main(
            [
                "report",
                str(out / "jpeg.json"),
                str(out / "student-tiny.json"),
                "--anchor",
                "JPEG (libjpeg-turbo, 4:2:0)",
                "-o",
                str(out / "report"),
            ]
        )
        == 0
    )
    assert (out / "report" / "rd-psnr.png").is_file()


def test_evaluate_errors(tmp_path, tiny_checkpoint, capsys) -> None:
    assert (
        main(
            [
                "evaluate",
                "--dataset",
                str(tmp_path / "none"),
                "--anchors",
                "jpeg",
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    import torch

    if not torch.cuda.is_available():
        argv = [
            "evaluate",
            "--dataset",
            str(tmp_path),
            "--checkpoint",
            str(tiny_checkpoint),
            "--device",
            "cuda",
            "-o",
            str(tmp_path / "o"),
        ]
        assert main(argv) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_bench_side_by_side(tiny_checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "--codec",
        "teacher-tiny",
        "--checkpoint",
        str(tiny_checkpoint),
        "--size",
        "128x64",
        "--runs",
        "1",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    student = report["codecs"][f"student-tiny ({tiny_checkpoint.name})"]
    teacher = report["codecs"]["teacher-tiny"]
    assert (
        student["time_ratio"] == 1.0 and student["parameter_ratio"] == 1.0
    )  # checkpoints come first
    assert teacher["parameter_ratio"] > 1
    for r in (teacher, student):
        assert r["macs_per_pixel"] > 0 and r["encode_entropy_s"] > 0 and r["decode_network_s"] > 0
        assert r["encode_s"] == pytest.approx(r["encode_network_s"] + r["encode_entropy_s"])
    assert teacher["macs_per_pixel"] > student["macs_per_pixel"]
    assert "teacher-tiny" in capsys.readouterr().out
