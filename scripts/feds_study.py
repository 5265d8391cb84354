#!/usr/bin/env python
"""The small-scale FEDS study in one command.

For each lambda: train a tiny teacher, then a tiny student from scratch and a tiny FEDS student
(distilled from that teacher) with the same number of steps; evaluate all three on Kodak through
real bitstreams; report BD-rates of the FEDS student against the scratch student and against the
teacher.

    python scripts/feds_study.py [--lambdas 0.0067,0.013,0.025,0.0483] [--steps 1000]
                                 [--teacher-steps 1000] [--crop 64] [--limit 8] [--distill feds]
                                 [-o docs/feds-study]

Runs go to runs/feds_study_{teacher,scratch,feds}/lmbda_*/ (re-running resumes or skips them).
Extra Hydra overrides for every training run can follow ``--``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def train(experiment: str, name: str, lmbda: float, steps: int, extra: list[str]) -> Path:
    run_dir = Path("runs") / name / f"lmbda_{lmbda}"  # relative to the repository: runs there
    if (REPO / run_dir / "codec.ckpt").is_file():
        print(f"= {run_dir / 'codec.ckpt'} exists, skipping", flush=True)
        return run_dir / "codec.ckpt"
    run([
        str(BIN / "lic-train"), f"experiment={experiment}", f"name={name}", f"loss.lmbda={lmbda}",
        f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
        f"callbacks.checkpoint.every_n_train_steps={max(steps // 4, 1)}", "data.val_limit=4",
        "trainer.enable_progress_bar=false", *extra,
    ])
    return run_dir / "codec.ckpt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lambdas", default="0.0067,0.013,0.025,0.0483")
    parser.add_argument("--steps", type=int, default=1000, help="steps of each student")
    parser.add_argument("--teacher-steps", type=int, default=1000)
    parser.add_argument("--crop", type=int, default=64, help="training crop side")
    parser.add_argument("--limit", type=int, default=8, help="evaluate on the first N images (0: all)")
    parser.add_argument("--distill", default="feds", help="distill config: feds, joint, feature_only, channel_only")
    parser.add_argument("--dataset", default="kodak")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "feds-study")
    args, extra = parser.parse_known_args()
    args.output = args.output.resolve().relative_to(REPO) if args.output.resolve().is_relative_to(REPO) else args.output
    extra = [f"data.crop_size={args.crop}", *(e for e in extra if e != "--")]
    lambdas = [float(v) for v in args.lambdas.split(",")]
    start = time.time()
    curves: dict[str, list[Path]] = {"teacher": [], "scratch": [], "feds": []}
    for lmbda in lambdas:
        teacher = train("teacher_quick", "feds_study_teacher", lmbda, args.teacher_steps, extra)
        curves["teacher"].append(teacher)
        curves["scratch"].append(train("quick", "feds_study_scratch", lmbda, args.steps, extra))
        curves["feds"].append(train("feds_quick", f"feds_study_{args.distill}", lmbda, args.steps,
                                    [f"distill={args.distill}", f"teacher_checkpoint={teacher}", *extra]))
    trained = time.time() - start
    names = {"teacher": "teacher-tiny", "scratch": "student-tiny (scratch)", "feds": f"student-tiny ({args.distill})"}
    files = []
    for key, checkpoints in curves.items():
        out = args.output / key
        limit = ["--limit", str(args.limit)] if args.limit else []
        run([str(BIN / "lic"), "evaluate", "--dataset", args.dataset, *limit, "--checkpoint",
             *map(str, checkpoints), "--name", names[key], "-o", str(out)])
        files.append(next((REPO / out).glob("*.json")).relative_to(REPO))
    for anchor in ("scratch", "teacher"):
        run([str(BIN / "lic"), "report", *map(str, files), "--anchor", names[anchor],
             "-o", str(args.output / f"vs-{anchor}")])
    summary = {
        "lambdas": lambdas, "student_steps": args.steps, "teacher_steps": args.teacher_steps,
        "crop": args.crop, "evaluated_images": args.limit or "all",
        "distill": args.distill, "training_seconds": round(trained), "total_seconds": round(time.time() - start),
        "vs_scratch": json.loads((REPO / args.output / "vs-scratch" / "report.json").read_text())["rows"],
        "vs_teacher": json.loads((REPO / args.output / "vs-teacher" / "report.json").read_text())["rows"],
    }
    (REPO / args.output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if not k.startswith("vs_")}, indent=2))


if __name__ == "__main__":
    main()
