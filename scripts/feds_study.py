#!/usr/bin/env python
"""The small-scale FEDS study in one command.

For each lambda: train a tiny teacher, then a tiny student from scratch and a tiny FEDS student
(distilled from that teacher) with the same number of steps; evaluate all three on Kodak through
real bitstreams; report BD-rates of the FEDS student against the scratch student and against the
teacher.

    python scripts/feds_study.py [--lambdas 0.0035,0.013,0.0483,0.18] [--steps 1500]
                                 [--teacher-steps 1500] [--crop 128] [--limit 0] [--distill feds]
                                 [--jobs 2] [-o docs/feds-study]

Runs go to runs/feds_study_{teacher,scratch,feds}/lmbda_*/ (re-running resumes or skips them),
each with its log in train.log. ``--jobs N`` trains N lambdas at once, each with
cores/N threads and in-process data loading (small codecs use two cores better as two
single-threaded runs than as one two-threaded run). Extra Hydra overrides for every training
run can follow ``--``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from lic.paths import run_dir


def run(command: list[str], log: Path | None = None, threads: int | None = None) -> None:
    print("+", " ".join(command), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    if log is None:
        subprocess.run(command, cwd=REPO, check=True, env=env)
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        result = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"training failed (exit {result.returncode}); see {log}")


def train(
    experiment: str, name: str, lmbda: float, steps: int, extra: list[str], threads: int | None
) -> Path:
    folder = run_dir(name, lmbda)  # relative to the repository: runs there
    if (REPO / folder.codec).is_file():
        print(f"= {folder.codec} exists, skipping", flush=True)
        return folder.codec
    start = time.time()
    run(
        [
            str(BIN / "lic-train"),
            f"experiment={experiment}",
            f"name={name}",
            f"loss.lmbda={lmbda}",
            f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={steps}",
            f"callbacks.checkpoint.every_n_train_steps={max(steps // 4, 1)}",
            "data.val_limit=4",
            "trainer.enable_progress_bar=false",
            *extra,
        ],
        log=REPO / folder.train_log,
        threads=threads,
    )
    print(f"= {folder.path} trained in {time.time() - start:.0f} s", flush=True)
    return folder.codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lambdas",
        default="0.0035,0.013,0.0483,0.18",
        help="wide apart: early in training, rate answers lambda before distortion does",
    )
    parser.add_argument("--steps", type=int, default=1500, help="steps of each student")
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument(
        "--crop", type=int, default=128, help="training crop side (the codec downsamples 64x)"
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="evaluate on the first N images (0: all)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="lambdas trained at once")
    parser.add_argument(
        "--distill", default="feds", help="distill config: feds, joint, feature_only, channel_only"
    )
    parser.add_argument("--dataset", default="kodak")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "feds-study")
    args, extra = parser.parse_known_args()
    args.output = (
        args.output.resolve().relative_to(REPO)
        if args.output.resolve().is_relative_to(REPO)
        else args.output
    )
    extra = [f"data.crop_size={args.crop}", *(e for e in extra if e != "--")]
    threads = None
    if args.jobs > 1:
        threads = max((os.cpu_count() or 1) // args.jobs, 1)
        extra = ["data.num_workers=0", *extra]
    lambdas = [float(v) for v in args.lambdas.split(",")]
    start = time.time()

    def pipeline(lmbda: float) -> dict[str, Path]:
        teacher = train(
            "teacher_quick", "feds_study_teacher", lmbda, args.teacher_steps, extra, threads
        )
        scratch = train("student_quick", "feds_study_scratch", lmbda, args.steps, extra, threads)
        feds = train(
            "feds_quick",
            f"feds_study_{args.distill}",
            lmbda,
            args.steps,
            [f"distill={args.distill}", f"teacher_checkpoint={teacher}", *extra],
            threads,
        )
        return {"teacher": teacher, "scratch": scratch, "feds": feds}

    pool = ThreadPoolExecutor(max_workers=max(args.jobs, 1))
    try:
        done = list(pool.map(pipeline, lambdas))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # a failed lambda stops the study
        raise
    pool.shutdown()
    curves = {key: [d[key] for d in done] for key in ("teacher", "scratch", "feds")}
    trained = time.time() - start
    names = {
        "teacher": "teacher-tiny",
        "scratch": "student-tiny (scratch)",
        "feds": f"student-tiny ({args.distill})",
    }
    files = []
    for key, checkpoints in curves.items():
        out = args.output / key
        limit = ["--limit", str(args.limit)] if args.limit else []
        run(
            [
                str(BIN / "lic"),
                "evaluate",
                "--dataset",
                args.dataset,
                *limit,
                "--checkpoint",
                *map(str, checkpoints),
                "--name",
                names[key],
                "-o",
                str(out),
            ]
        )
        files.append(next((REPO / out).glob("*.json")).relative_to(REPO))
    for anchor in ("scratch", "teacher"):
        run(
            [
                str(BIN / "lic"),
                "report",
                *map(str, files),
                "--anchor",
                names[anchor],
                "-o",
                str(args.output / f"vs-{anchor}"),
            ]
        )
    summary = {
        "lambdas": lambdas,
        "student_steps": args.steps,
        "teacher_steps": args.teacher_steps,
        "crop": args.crop,
        "evaluated_images": args.limit or "all",
        "jobs": args.jobs,
        "distill": args.distill,
        "training_seconds": round(trained),
        "total_seconds": round(time.time() - start),
        "vs_scratch": json.loads((REPO / args.output / "vs-scratch" / "report.json").read_text())[
            "rows"
        ],
        "vs_teacher": json.loads((REPO / args.output / "vs-teacher" / "report.json").read_text())[
            "rows"
        ],
    }
    (REPO / args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if not k.startswith("vs_")}, indent=2))


if __name__ == "__main__":
    main()
