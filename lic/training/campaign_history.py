"""Every committed state of a campaign run, measured again on the held-out crops.

The campaign commits each run's state at the end of every session, so git history holds a run's
weights at many steps. :func:`measure_history` loads each of them (the EMA weights, and the raw
weights while the run was still training) and measures them with
:func:`lic.training.campaign.measure_crops`: held-out RD loss, bpp, PSNR, the hyper-latent's bits
and the transforms' ceiling. It needs the repository's history (a full clone) and trains
nothing. Used by ``scripts/hyperprior_probe.py --history`` and ``scripts/transform_ceiling.py
--history``.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lic.training import campaign as cp


def committed_states(repo: Path, plan: cp.Plan, run: str) -> list[str]:
    """Commits (oldest first) that changed ``run``'s ``state.json``.

    Raises:
        UsageError: ``run`` is not a run of ``plan``.
    """
    plan.run(run)
    folder = f"campaign/{plan.name}/{run}"
    commits = subprocess.run(
        ["git", "log", "--format=%h", "--", f"{folder}/state.json"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return list(reversed(commits))


def measure_history(
    repo: Path,
    plan: cp.Plan,
    runs: list[str],
    on_row: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Rows ``{commit, step, weights ("ema" | "raw"), z_channels, **measure_crops}`` per run."""
    from lic.codecs import create_codec
    from lic.training.losses import RateDistortionLoss

    _, held = cp.training_split(plan)
    crops = cp.ResidentImages(held).center_crops(plan.eval_crop, plan.eval_images)
    results: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        folder = repo / "campaign" / plan.name / run
        rows = []
        for commit in committed_states(repo, plan, run):
            with tempfile.TemporaryDirectory() as tmp:
                run_dir = Path(tmp)
                cp.state_at(folder, commit, run_dir)
                if not (run_dir / "ema.pt").exists():
                    continue  # kept as its record alone from this commit on (keep: record)
                record = cp.read_record(run_dir)
                kinds = {"ema": cp.load_ema(run_dir)}
                if not cp.is_compacted(run_dir):
                    kinds["raw"] = cp.load_tensors(run_dir, "weights.pt", "codec")["codec"]
                for kind, state in kinds.items():
                    codec = create_codec(record["codec"])
                    codec.load_state_dict(state)
                    row = {"commit": commit, "step": record["step"], "weights": kind}
                    row |= cp.measure_crops(codec, crops, RateDistortionLoss(record["lmbda"]))
                    row["z_channels"] = codec.entropy_bottleneck.channels
                    rows.append(row)
                    if on_row is not None:
                        on_row(run, row)
        results[run] = rows
    return results
