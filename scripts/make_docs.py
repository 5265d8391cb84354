#!/usr/bin/env python
"""Regenerate the default codec's results under docs/default-model/ and README.md's results block.

    python scripts/make_docs.py [--steps anchors,student,teacher,bench,reports] [--bench-runs 3]

Every step is a `lic` command, printed before it runs:

1. ``lic evaluate`` on all 24 Kodak images: the shipped default student at all its rate points and
   Pillow's JPEG, WebP and AVIF (real files, decoded and measured);
2. ``lic evaluate`` of the teacher checkpoints, when ``runs/default_teacher`` is here (training
   output is not in the repository; without it the committed teacher results are reused);
3. ``lic report`` of the student against JPEG, WebP, AVIF, the published VTM curve and the teacher;
4. ``lic bench`` of student and teacher at 768x512 (CPU);
5. ``docs/default-model/README.md`` and the block between ``<!-- results:start -->`` and
   ``<!-- results:end -->`` in README.md, from the JSON those commands wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lic import pretrained
from lic.paths import RUNS_DIR, run_dirs, shared_dir

OUT = Path("docs/default-model")
STUDENT = "lic-default"
TEACHER = "teacher-small"
REPORTS = {  # folder: (anchor, label)
    "vs-jpeg": ("jpeg", "JPEG (Pillow, libjpeg-turbo 4:2:0, measured here)"),
    "vs-webp": ("webp", "WebP (Pillow, libwebp method 6, measured here)"),
    "vs-avif": ("avif", "AVIF (Pillow, libavif speed 6 4:4:4, measured here)"),
    "vs-vtm": ("vtm", "VTM (CompressAI's published Kodak curve)"),
    "vs-teacher": ("teacher", "its FEDS teacher (teacher-small, same lambdas)"),
}


def lic(*args: str) -> None:
    exe = Path(sys.executable).with_name("lic")
    command = [str(exe) if exe.exists() else "lic", *args]
    print("$ lic " + " ".join(shlex.quote(a) for a in args), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def load(path: Path) -> dict:
    return json.loads((REPO / path).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        help="comma-separated subset of anchors,student,teacher,bench,reports (default: all)",
    )
    parser.add_argument("--bench-runs", type=int, default=3)
    parser.add_argument(
        "--limit", type=int, help="only the first N Kodak images (a quick check, not the docs)"
    )
    args = parser.parse_args()
    os.environ.setdefault("LIC_SHARED", str(shared_dir()))
    vtm = shared_dir() / "reference" / "compressai" / "kodak" / "vtm.json"
    if not vtm.is_file():
        sys.exit(f"make_docs: {vtm} not found (set LIC_SHARED to the shared material)")
    teachers = [
        run.codec for run in run_dirs("default_teacher", REPO / RUNS_DIR) if run.codec.is_file()
    ]

    limit = ["--limit", str(args.limit)] if args.limit else []
    steps = (
        set(args.steps.split(","))
        if args.steps
        else {"anchors", "student", "teacher", "bench", "reports"}
    )
    if "anchors" in steps:
        lic(
            "evaluate",
            "--dataset",
            "kodak",
            *limit,
            "--anchors-only",
            "--anchors",
            "jpeg,webp,avif",
            "-o",
            str(OUT / "kodak-anchors"),
        )
    if "student" in steps:
        lic("evaluate", "--dataset", "kodak", *limit, "--name", STUDENT, "-o", str(OUT / "kodak"))
    if "teacher" in steps:
        if teachers:
            lic(
                "evaluate",
                "--dataset",
                "kodak",
                *limit,
                "--name",
                TEACHER,
                "--checkpoint",
                *[str(p.relative_to(REPO)) for p in teachers],
                "-o",
                str(OUT / "kodak-teacher"),
            )
        else:
            print(f"(no runs/default_teacher here: reusing {OUT / 'kodak-teacher'})")
    if "bench" in steps:
        bench = [
            "bench",
            "--size",
            "768x512",
            "--runs",
            str(args.bench_runs),
            "-o",
            str(OUT / "bench-cpu.json"),
        ]
        if teachers:
            bench += [
                "--checkpoint",
                *[str(p.relative_to(REPO)) for p in teachers[-1:]],
                *[str(p.relative_to(REPO)) for p in pretrained.default_checkpoints()[-1:]],
            ]
        lic(*bench)
    if "reports" not in steps:
        return

    curves = {
        "student": OUT / "kodak" / f"{STUDENT}.json",
        "jpeg": OUT / "kodak-anchors" / "jpeg.json",
        "webp": OUT / "kodak-anchors" / "webp.json",
        "avif": OUT / "kodak-anchors" / "avif.json",
        "teacher": OUT / "kodak-teacher" / f"{TEACHER}.json",
    }
    for folder, (anchor, _) in REPORTS.items():
        others = [
            str(curves[k]) for k in ("student", "teacher", "jpeg", "webp", "avif") if k != anchor
        ]
        anchor_arg = str(vtm) if anchor == "vtm" else load(curves[anchor])["name"]
        files = others + ([] if anchor == "vtm" else [str(curves[anchor])])
        lic("report", *files, "--anchor", anchor_arg, "-o", str(OUT / folder))
    write_markdown(curves)


def _bd(folder: str, name: str) -> str:
    for row in load(OUT / folder / "report.json")["rows"]:
        if row["name"] == name:
            value = row["bd_rate_psnr"]
            return "undefined" if value is None else f"{value:+.1f}%"
    return "—"


def points_by_fingerprint(curve: dict) -> dict[str, int]:
    """Where each checkpoint's rate point is in a results curve, by weights fingerprint.

    ``lic evaluate`` sorts a curve's points by rate and names each ``lmbda=<λ>`` (the file name
    when the checkpoint records no λ); its ``checkpoints`` list, in command-line order, gives each
    checkpoint's fingerprint, λ and file.
    """
    where = {point: i for i, point in enumerate(curve["points"])}
    found = {}
    for c in curve["checkpoints"]:
        point = f"lmbda={c['lmbda']}" if c["lmbda"] is not None else Path(c["checkpoint"]).stem
        if point in where:
            found[c["fingerprint"]] = where[point]
    return found


def _point(points: dict[str, int], fingerprint: str | None, curve: dict, what: str) -> int:
    if fingerprint not in points:
        sys.exit(f"make_docs: {curve['name']} has no result for the {what} weights {fingerprint}")
    return points[fingerprint]


def write_markdown(curves: dict[str, Path]) -> None:
    """Write docs/default-model/README.md and README.md's results block."""
    block = results_block(curves)
    (REPO / OUT / "README.md").write_text(
        "# The default codec on Kodak\n\nRegenerate: `python scripts/make_docs.py`.\n\n"
        + block.replace("docs/default-model/README.md", "README.md").replace(
            "(docs/default-model/", "("
        )
        + "\n\n![RD](vs-vtm/rd-psnr.png)\n\nReports: "
        + ", ".join(f"[{f}]({f}/report.md)" for f in REPORTS)
        + ".\n"
    )
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start in readme and end in readme:
        head, rest = readme.split(start, 1)
        _, tail = rest.split(end, 1)
        (REPO / "README.md").write_text(f"{head}{start}\n{block}\n{end}{tail}")
        print("updated README.md results block")
    print(REPO / OUT / "README.md")


def results_block(curves: dict[str, Path]) -> str:
    """The results in markdown, from the manifest and the JSON the `lic` commands wrote.

    Each manifest rate point is paired with its results by weights fingerprint (the student's,
    and its teacher's), never by position.
    """
    manifest = pretrained.manifest()
    student, teacher = load(curves["student"]), load(curves["teacher"])
    bench = load(OUT / "bench-cpu.json")
    r, t = student["results"], teacher["results"]
    student_points, teacher_points = points_by_fingerprint(student), points_by_fingerprint(teacher)
    lines = [
        "| quality | λ | steps | bpp | PSNR (dB) | MS-SSIM | encode s | decode s | teacher bpp | teacher PSNR |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in manifest["models"]:
        i = _point(student_points, model["fingerprint"], student, f"quality {model['quality']}")
        j = _point(
            teacher_points,
            model.get("teacher_fingerprint"),
            teacher,
            f"quality {model['quality']} teacher",
        )
        lines.append(
            f"| {model['quality']} | {model['lmbda']} | {model['steps']:,} | {r['bpp'][i]:.3f} | {r['psnr-rgb'][i]:.2f} | "
            f"{r['ms-ssim-rgb'][i]:.4f} | {r['encoding_time'][i]:.2f} | {r['decoding_time'][i]:.2f} | "
            f"{t['bpp'][j]:.3f} | {t['psnr-rgb'][j]:.2f} |"
        )
    rd_table = "\n".join(lines)
    bd_lines = ["| the default student against | BD-rate (PSNR) |", "|---|---:|"]
    for folder, (anchor, label) in REPORTS.items():
        bd_lines.append(f"| {label} | {_bd(folder, student['name'])} |")
    bd_table = "\n".join(bd_lines)
    speed_lines = [
        (
            f"| `lic bench`, {bench['size'][1]}x{bench['size'][0]}, {bench['device']} | parameters | "
            "encode s | decode s | parameters vs first | enc+dec time vs first |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, row in bench["codecs"].items():
        speed_lines.append(
            f"| {label} | {row['parameters']:,} | {row['encode_s']:.3f} | {row['decode_s']:.3f} | "
            f"{row['parameter_ratio']:.1%} | {row['time_ratio']:.1%} |"
        )
    speed_table = "\n".join(speed_lines)
    teachers = manifest.get("teachers", {})
    base = manifest.get("student_base") or {}
    teacher_steps = ", ".join(
        f"λ {k}: {v['steps']:,}" for k, v in sorted(teachers.items(), key=lambda kv: float(kv[0]))
    )
    data = manifest["data"]
    budget = (
        f"Training budget, stated plainly: two CPU cores, one run per core, "
        f"{data['crop']}x{data['crop']} crops, batch {data['batch']}, "
        f"{data['images']} training photos (shared `datasets/train`). Teacher "
        f"(`{next(iter(teachers.values()))['codec'] if teachers else 'teacher-small'}`): "
        f"{teacher_steps} steps (the other λ fine-tuned from the base). Student: "
        f"{base.get('steps', 0):,} steps from scratch at λ {base.get('lmbda')}, then per λ "
        f"{manifest['models'][0]['steps']:,} steps of {manifest['recipe']['student']}. The wall "
        f"time of these runs was not recorded; published codecs train for days on GPUs."
    )
    return "\n\n".join(
        [
            (
                "Kodak, all 24 images, real bitstreams (`python scripts/make_docs.py`, which runs the `lic` commands "
                "it prints; full reports with plots in [docs/default-model](docs/default-model/README.md)):"
            ),
            rd_table,
            bd_table,
            speed_table,
            budget,
        ]
    )


if __name__ == "__main__":
    main()
