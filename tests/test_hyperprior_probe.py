"""scripts/hyperprior_probe.py: the hyper-latent's bits through a run's first steps, variants of
the run's settings, committed states measured from git history, and a clear refusal."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "hyperprior_probe.py"


def _probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )


def test_variants_are_trained_and_measured(tmp_path) -> None:
    out = tmp_path / "probe.json"
    result = _probe(
        "--steps", "4", "--every", "2", "--variant", "slow:lr=5e-4,precision=fp32", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    (variant,) = report["variants"].values()
    assert variant["overrides"] == {"lr": 5e-4, "precision": "fp32"}  # numbers parsed as numbers
    assert [row["step"] for row in variant["rows"]] == [2, 4]
    for row in variant["rows"]:
        assert 0 < row["bpp_z"] <= row["bpp"]  # z's bits are part of the total
        assert 0 < row["live_z_channels"] <= 32  # an untrained hyperprior carries bits
        assert 0 < row["psnr"] < 60


def test_committed_states_are_measured_from_history(tmp_path) -> None:
    commits = subprocess.run(
        ["git", "log", "--format=%h", "--", "campaign/default/student-fixed-1/state.json"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.split()
    if not commits:
        pytest.skip("no git history of the campaign state (not a full clone)")
    out = tmp_path / "history.json"
    result = _probe("--history", "student-fixed-1", "-o", str(out))
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["history"]["student-fixed-1"]
    assert {row["commit"] for row in rows} == set(commits)
    for row in rows:
        assert 0 <= row["live_z_channels"] <= row["z_channels"] == 32
        assert row["bpp"] > row["bpp_z"] >= 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant", "x:nonsense=1"], "unknown run settings"),
        (["--variant", "x:lr"], "expected KEY=VALUE"),
        (["--run", "nobody"], "has no run 'nobody'"),
        (["--history", "nobody"], "has no run 'nobody'"),
    ],
)
def test_bad_requests_fail_in_one_line(args, message) -> None:
    result = _probe(*args)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
