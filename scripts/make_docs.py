#!/usr/bin/env python
"""Regenerate the default codec's results under docs/default-model/ and README.md's results block.

    python scripts/make_docs.py [--steps anchors,student,teacher,bench,reports] [--bench-runs 3]

Every step is a `lic` command, printed before it runs:

1. ``lic evaluate`` on all 24 Kodak images: the shipped default codec at all its rate points
   (every trained level of a variable-rate default) and Pillow's JPEG, WebP and AVIF (real
   files, decoded and measured);
2. ``lic evaluate`` of the teacher checkpoints, when the default has a teacher and
   ``runs/default_teacher`` is here (training output is not in the repository; without it the
   committed teacher results are reused);
3. ``lic evaluate`` of WebP and AVIF (step ``clic-anchors``) and of the default codec (step
   ``clic``) on the shared CLIC images; of the default codec with ``--refine 20`` (encoder-side
   refinement, step ``refine``) on Kodak. The two slow steps reuse results made with the
   installed weights (``--force`` redoes them);
4. ``lic report`` of the default against JPEG, WebP, AVIF, the published VTM curve and its
   teacher (if it has one) on Kodak, and against WebP and AVIF on CLIC; the refined default
   against WebP, AVIF, VTM and the default without refinement on Kodak; on both, against the
   default it replaced, where ``docs/default-model/previous/{kodak,clic}.json`` hold that
   codec's curves (this script's own earlier results, which ``scripts/package_default.py``
   keeps there, named after the codec, when it replaces it), and against the campaign's
   teacher curve (``scripts/feds_evidence.py``);
5. ``lic bench`` of the default (and its teacher) at 768x512 (CPU);
6. ``docs/default-model/README.md`` and the block between ``<!-- results:start -->`` and
   ``<!-- results:end -->`` in README.md, from the JSON those commands wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lic import pretrained
from lic.evaluation.bd import BDWarning, bd_rate
from lic.paths import RUNS_DIR, run_dirs, shared_dir

OUT = Path("docs/default-model")
STUDENT = "lic-default"
REFINE_STEPS = 20
REFINED = f"lic-default-refine{REFINE_STEPS}"
#: The refined default's Kodak results (step ``refine``).
REFINED_RESULT = OUT / "kodak-refine" / f"{REFINED}.json"
#: The refined default's reports on Kodak: folder -> (anchor, label).
REFINE_REPORTS = {
    "refine-vs-default": ("student", "the default without refinement"),
    "refine-vs-webp": ("webp", "WebP"),
    "refine-vs-avif": ("avif", "AVIF"),
    "refine-vs-vtm": ("vtm", "VTM (published)"),
}
TEACHER = "teacher-small"
REPORTS = {  # folder: (anchor, label)
    "vs-jpeg": ("jpeg", "JPEG (Pillow, libjpeg-turbo 4:2:0, measured here)"),
    "vs-webp": ("webp", "WebP (Pillow, libwebp method 6, measured here)"),
    "vs-avif": ("avif", "AVIF (Pillow, libavif speed 6 4:4:4, measured here)"),
    "vs-vtm": ("vtm", "VTM (CompressAI's published Kodak curve)"),
    "vs-teacher": ("teacher", "its FEDS teacher (teacher-small, same lambdas)"),
}
CLIC_REPORTS = {  # folder: (anchor, label); CLIC's published curves are of other images (2020)
    "clic-vs-webp": ("webp", "WebP on CLIC (measured here)"),
    "clic-vs-avif": ("avif", "AVIF on CLIC (measured here)"),
}
#: Curves the default is also compared with where they are here, per report folder: the
#: default it replaced (its curves as this script measured them, kept when it was replaced) and
#: the campaign's teacher curve (``scripts/feds_evidence.py``: ``teacher-fixed-*``, four λ).
OTHER_CURVES = {
    "vs-previous": ("the previous default", "Kodak", OUT / "previous" / "kodak.json"),
    "clic-vs-previous": ("the previous default", "CLIC", OUT / "previous" / "clic.json"),
    "vs-campaign-teacher": (
        "the campaign teacher",
        "Kodak",
        Path("docs/feds-study/campaign/student-feds/kodak/teachers"),
    ),
    "clic-vs-campaign-teacher": (
        "the campaign teacher",
        "CLIC",
        Path("docs/feds-study/campaign/student-feds/clic/teachers"),
    ),
}
ALL_STEPS = (
    "anchors",
    "student",
    "teacher",
    "clic-anchors",
    "clic",
    "refine",
    "bench",
    "reports",
)


def vtm_curve() -> Path:
    """CompressAI's published VTM curve on Kodak, in the shared reference material."""
    return shared_dir() / "reference" / "compressai" / "kodak" / "vtm.json"


def refine_settings(checkpoint: dict) -> tuple:
    """The refinement a result's checkpoint record was made with; the installed defaults for a
    record that names none (refinement had no other settings before it recorded them)."""
    from lic.codecs import refine  # imports torch: only when a refined result is checked

    return (
        checkpoint.get("refine_schedule", refine.DEFAULT_SCHEDULE),
        checkpoint.get("refine_lr_per_sqrt_lmbda", refine.LR_PER_SQRT_LMBDA),
    )


def made_with_installed(path: Path, refine: int = 0) -> bool:
    """Whether a ``lic evaluate`` result holds every installed default checkpoint and no other
    (by weights fingerprint), refined by ``refine`` steps with the installed refinement
    settings: then evaluating again would give the same figures."""
    if not (REPO / path).is_file():
        return False
    checkpoints = load(path).get("checkpoints", [])
    made = {c["fingerprint"] for c in checkpoints}
    if any(c.get("refine_steps", 0) != refine for c in checkpoints):
        return False
    if refine and any(refine_settings(c) != refine_settings({}) for c in checkpoints):
        return False
    return made == {m.fingerprint for m in pretrained.default_models()}


def refined_is_current() -> bool:
    """Whether the refined default's results are of the installed weights and refinement:
    only then are they reused (not measured again), reported and linked."""
    return made_with_installed(REFINED_RESULT, REFINE_STEPS)


def has_teacher() -> bool:
    """Whether the default codec was distilled from a teacher the docs compare it with."""
    return bool(pretrained.manifest().get("teachers"))


def reports() -> dict[str, tuple[str, str]]:
    """The Kodak reports made: against its teacher only when it has one."""
    return {k: v for k, v in REPORTS.items() if k != "vs-teacher" or has_teacher()}


def other_reports() -> dict[str, tuple[Path, str, str]]:
    """The reports against :data:`OTHER_CURVES` whose curve is here: folder -> (curve, label,
    dataset). A folder names the one results JSON it holds."""
    made = {}
    for folder, (what, dataset, path) in OTHER_CURVES.items():
        if (REPO / path).is_dir():
            found = sorted((REPO / path).glob("*.json"))
            if len(found) != 1:
                continue
            path = found[0].relative_to(REPO)
        if (REPO / path).is_file():
            made[folder] = (path, f"{what}, {load(path)['name']}, on {dataset}", dataset)
    return made


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
        help=f"comma-separated subset of {','.join(ALL_STEPS)} (default: all)",
    )
    parser.add_argument("--bench-runs", type=int, default=3)
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-evaluate CLIC and the refined default even if made with these weights",
    )
    parser.add_argument(
        "--limit", type=int, help="only the first N Kodak images (a quick check, not the docs)"
    )
    args = parser.parse_args()
    os.environ.setdefault("LIC_SHARED", str(shared_dir()))
    vtm = vtm_curve()
    if not vtm.is_file():
        sys.exit(f"make_docs: {vtm} not found (set LIC_SHARED to the shared material)")
    teachers = [
        run.codec for run in run_dirs("default_teacher", REPO / RUNS_DIR) if run.codec.is_file()
    ]
    if not has_teacher():
        teachers = []  # the default has no teacher: nothing to compare it with

    limit = ["--limit", str(args.limit)] if args.limit else []
    steps = set(args.steps.split(",")) if args.steps else set(ALL_STEPS)
    unknown = steps - set(ALL_STEPS)
    if unknown:
        sys.exit(f"make_docs: unknown step {min(unknown)!r}; steps: {', '.join(ALL_STEPS)}")
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
    if "teacher" in steps and has_teacher():
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
    if "clic-anchors" in steps:
        lic(
            "evaluate",
            "--dataset",
            "clic",
            *limit,
            "--anchors-only",
            "--anchors",
            "webp,avif",
            "-o",
            str(OUT / "clic-anchors"),
        )
    if "clic" in steps:
        if made_with_installed(OUT / "clic" / f"{STUDENT}.json") and not (args.force or limit):
            print(f"({OUT / 'clic'}: made with the installed weights, reused; --force redoes it)")
        else:
            lic("evaluate", "--dataset", "clic", *limit, "--name", STUDENT, "-o", str(OUT / "clic"))
    if "refine" in steps:
        path = REFINED_RESULT
        if refined_is_current() and not (args.force or limit):
            print(f"({path.parent}: made with the installed weights, reused; --force redoes it)")
        else:
            lic(
                "evaluate",
                "--dataset",
                "kodak",
                *limit,
                "--refine",
                str(REFINE_STEPS),
                "--name",
                REFINED,
                "-o",
                str(path.parent),
            )
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
    names = (
        ("student", "teacher", "jpeg", "webp", "avif")
        if has_teacher()
        else ("student", "jpeg", "webp", "avif")
    )
    for folder, (anchor, _) in reports().items():
        others = [str(curves[k]) for k in names if k != anchor]
        anchor_arg = str(vtm) if anchor == "vtm" else load(curves[anchor])["name"]
        files = others + ([] if anchor == "vtm" else [str(curves[anchor])])
        lic("report", *files, "--anchor", anchor_arg, "-o", str(OUT / folder))
    clic = {
        "student": OUT / "clic" / f"{STUDENT}.json",
        "webp": OUT / "clic-anchors" / "webp.json",
        "avif": OUT / "clic-anchors" / "avif.json",
    }
    clic = {k: path for k, path in clic.items() if (REPO / path).is_file()}
    if "student" in clic:  # against each anchor measured on CLIC (step clic-anchors)
        for folder, (anchor, _) in CLIC_REPORTS.items():
            if anchor not in clic:
                continue
            others = [str(clic[k]) for k in clic if k != anchor]
            anchor_arg = load(clic[anchor])["name"]
            lic(
                "report",
                *others,
                str(clic[anchor]),
                "--anchor",
                anchor_arg,
                "-o",
                str(OUT / folder),
            )
    refined = REFINED_RESULT
    if refined_is_current():
        for folder, (anchor, _) in REFINE_REPORTS.items():
            anchor_arg = str(vtm) if anchor == "vtm" else load(curves[anchor])["name"]
            files = [str(refined)] + ([] if anchor == "vtm" else [str(curves[anchor])])
            lic("report", *files, "--anchor", anchor_arg, "-o", str(OUT / folder))
    for folder, (path, _, dataset) in other_reports().items():
        student = clic.get("student") if dataset == "CLIC" else curves["student"]
        if student is not None:
            anchor_arg = load(path)["name"]
            lic("report", str(student), str(path), "--anchor", anchor_arg, "-o", str(OUT / folder))
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
    refined = REFINE_REPORTS if refined_is_current() else ()
    made = [
        f
        for f in [*reports(), *CLIC_REPORTS, *other_reports(), *refined]
        if (REPO / OUT / f / "report.md").is_file()
    ]
    (REPO / OUT / "README.md").write_text(
        "# The default codec on Kodak and CLIC\n\nRegenerate: `python scripts/make_docs.py`.\n\n"
        + block.replace("docs/default-model/README.md", "README.md").replace(
            "(docs/default-model/", "("
        )
        + "\n\n![RD](vs-vtm/rd-psnr.png)\n\nReports: "
        + ", ".join(f"[{f}]({f}/report.md)" for f in made)
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


def _rd_table_fixed(manifest: dict, curves: dict[str, Path]) -> str:
    """One row per rate point, each paired with its results (and its teacher's) by fingerprint."""
    student, teacher = load(curves["student"]), load(curves["teacher"])
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
    return "\n".join(lines)


def _rd_table_variable(manifest: dict, curves: dict[str, Path]) -> str:
    """One row per trained level of the variable-rate default, on Kodak and CLIC."""
    (model,) = manifest["models"]
    fingerprint = model["fingerprint"]
    kodak = load(curves["student"])
    clic_path = OUT / "clic" / f"{STUDENT}.json"
    clic = load(clic_path) if (REPO / clic_path).is_file() else None
    for curve in (kodak, clic):
        if curve is not None and fingerprint not in {
            c["fingerprint"] for c in curve["checkpoints"]
        }:
            sys.exit(
                f"make_docs: {curve['name']} was not made with the installed weights {fingerprint}"
            )
    lines = [
        "| quality | λ | Kodak bpp | PSNR (dB) | MS-SSIM | encode s | decode s | CLIC bpp | PSNR (dB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level, lmbda in enumerate(model["lmbdas"], start=1):
        point = f"quality={level}"
        i = _index(kodak, point)
        r = kodak["results"]
        row = (
            f"| {level} | {lmbda:.4g} | {r['bpp'][i]:.3f} | {r['psnr-rgb'][i]:.2f} | "
            f"{r['ms-ssim-rgb'][i]:.4f} | {r['encoding_time'][i]:.2f} | {r['decoding_time'][i]:.2f} |"
        )
        if clic is not None:
            j = _index(clic, point)
            row += f" {clic['results']['bpp'][j]:.3f} | {clic['results']['psnr-rgb'][j]:.2f} |"
        else:
            row += " — | — |"
        lines.append(row)
    return "\n".join(lines)


def _index(curve: dict, point: str) -> int:
    if point not in curve["points"]:
        sys.exit(f"make_docs: {curve['name']} has no point {point}")
    return curve["points"].index(point)


def _budget(manifest: dict) -> str:
    data = manifest["data"]
    if manifest["models"][0].get("variable_rate"):
        training = manifest["training"]
        init = training.get("init") or {}
        continued = bool(init.get("variable_rate"))  # a variable-rate run continued
        before = init.get("compute")  # what the run it continues had cost
        spent = (
            f", {before['cpu_core_hours']:.2f} CPU core-hours and {before['gpu_hours']:.2f} GPU-hours"
            if before
            else ""
        )
        if continued:
            start = f" continuing the campaign's `{init['run']}` ({init['step']:,} steps{spent})"
        elif init:
            lmbda = f" at λ {init['lmbda']:g}" if init.get("lmbda") else ""
            start = f" from the campaign's `{init['run']}` ({init['step']:,} steps{lmbda}{spent})"
        else:
            start = ""
        return (
            f"Training budget, stated plainly: the campaign run `{manifest['recipe']['run']}` "
            f"(`{manifest['recipe']['plan']}`), {training['steps']:,} steps{start}, each batch of "
            f"{data['batch']} at a random quality, crops {' then '.join(str(c[1]) for c in data['crops'])} "
            f"pixels, {data['images']} training photos (shared `datasets/train`), "
            f"{training['compute']['cpu_core_hours']:.2f} CPU core-hours and "
            f"{training['compute']['gpu_hours']:.2f} GPU-hours for this run (its record in "
            "`campaign/`). It has no teacher: it is "
            + (
                "the scratch student made variable-rate"
                if init and not continued
                else "trained from scratch"
            )
            + "; a FEDS student replaces it when one measures better. Published codecs train "
            "for days on GPUs."
        )
    teachers = manifest.get("teachers", {})
    base = manifest.get("student_base") or {}
    teacher_steps = ", ".join(
        f"λ {k}: {v['steps']:,}" for k, v in sorted(teachers.items(), key=lambda kv: float(kv[0]))
    )
    return (
        f"Training budget, stated plainly: two CPU cores, one run per core, "
        f"{data['crop']}x{data['crop']} crops, batch {data['batch']}, "
        f"{data['images']} training photos (shared `datasets/train`). Teacher "
        f"(`{next(iter(teachers.values()))['codec'] if teachers else 'teacher-small'}`): "
        f"{teacher_steps} steps (the other λ fine-tuned from the base). Student: "
        f"{base.get('steps', 0):,} steps from scratch at λ {base.get('lmbda')}, then per λ "
        f"{manifest['models'][0]['steps']:,} steps of {manifest['recipe']['student']}. The wall "
        f"time of these runs was not recorded; published codecs train for days on GPUs."
    )


def results_block(curves: dict[str, Path]) -> str:
    """The results in markdown, from the manifest and the JSON the `lic` commands wrote.

    A fixed-rate default's rate points are paired with their results by weights fingerprint
    (the student's and its teacher's), never by position; a variable-rate default's trained
    levels by their point names (``quality=<level>``), after checking the curves were made
    with the installed weights.
    """
    manifest = pretrained.manifest()
    student = load(curves["student"])
    bench = load(OUT / "bench-cpu.json")
    variable = bool(manifest["models"][0].get("variable_rate"))
    rd_table = (_rd_table_variable if variable else _rd_table_fixed)(manifest, curves)
    bd_lines = ["| the default codec against | BD-rate (PSNR) |", "|---|---:|"]
    labels = [*reports().items(), *CLIC_REPORTS.items(), *other_reports().items()]
    for folder, (_, label, *_) in labels:
        if (REPO / OUT / folder / "report.json").is_file():
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
    refine_block = _refine_block(curves) if variable else None
    where = (
        "Kodak (all 24 images) and the shared CLIC images (21), real bitstreams"
        if variable
        else "Kodak, all 24 images, real bitstreams"
    )
    return "\n\n".join(
        [
            (
                f"{where} (`python scripts/make_docs.py`, which runs the `lic` commands "
                "it prints; full reports with plots in [docs/default-model](docs/default-model/README.md)):"
            ),
            rd_table,
            bd_table,
            *([refine_block] if refine_block else []),
            speed_table,
            _budget(manifest),
        ]
    )


def _refine_block(curves: dict[str, Path]) -> str | None:
    """The refined default on Kodak: per quality beside the default, and its BD-rates, over the
    range both curves cover and over the unrefined default's PSNR range (the refined curve
    reaches higher PSNR, where the anchors may lead, so the first figure averages over another
    interval than the default's own BD-rate)."""
    path = REFINED_RESULT
    if not (REPO / path).is_file():
        return None
    if not refined_is_current():  # step refine redoes it
        print(f"({path}: not made with the installed weights: left out of the results)")
        return None
    refined, kodak_default = load(path), load(curves["student"])
    lines = [
        (
            f"With encoder-side refinement (`lic encode --refine {REFINE_STEPS}`, "
            "`lic/codecs/refine.py`; the same weights, files and decoder), on Kodak:"
        ),
        "",
        "| quality | bpp | PSNR (dB) | MS-SSIM | encode s | without refinement: bpp | PSNR (dB) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    r, d = refined["results"], kodak_default["results"]
    for point in refined["points"]:
        i, j = _index(refined, point), _index(kodak_default, point)
        lines.append(
            f"| {point.removeprefix('quality=')} | {r['bpp'][i]:.3f} | {r['psnr-rgb'][i]:.2f} | "
            f"{r['ms-ssim-rgb'][i]:.4f} | {r['encoding_time'][i]:.1f} | {d['bpp'][j]:.3f} | "
            f"{d['psnr-rgb'][j]:.2f} |"
        )
    span = (min(d["psnr-rgb"]), max(d["psnr-rgb"]))
    lines += [
        "",
        (
            "| the refined default against, on Kodak | BD-rate (PSNR) | over the unrefined "
            f"default's {span[0]:.2f}–{span[1]:.2f} dB |"
        ),
        "|---|---:|---:|",
    ]
    for folder, (anchor, label) in REFINE_REPORTS.items():
        if (REPO / OUT / folder / "report.json").is_file():
            anchor_curve = load(vtm_curve() if anchor == "vtm" else curves[anchor])
            within = _bd_within(anchor_curve["results"], r, span)
            lines.append(f"| {label} | {_bd(folder, refined['name'])} | {within} |")
    return "\n".join(lines)


def _bd_within(anchor: dict, test: dict, span: tuple[float, float]) -> str:
    """BD-rate (PSNR) of ``test`` against ``anchor`` over the PSNR interval ``span`` only (the
    interval is chosen, so the warning that the curves' full ranges overlap little is moot)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BDWarning)
            value = bd_rate(
                anchor["bpp"],
                anchor["psnr-rgb"],
                test["bpp"],
                test["psnr-rgb"],
                quality_range=span,
            )
    except ValueError:
        return "undefined"
    return f"{value:+.1f}%"


if __name__ == "__main__":
    main()
