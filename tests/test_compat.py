"""The torchvision shim acts on exactly one failure, and nowhere else."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NMS_FAILURE = "operator torchvision::nms does not exist"


# Loads lic/_compat.py on its own: the fake torchvision packages below cannot satisfy
# compressai, so the rest of lic is kept out of these processes.
LOAD_SHIM = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("shim", {str(REPO / "lic" / "_compat.py")!r})
compat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compat)
"""


def _python(
    code: str, extra_path: Path | None = None, shim: bool = False
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    paths = [str(extra_path)] if extra_path else []
    env["PYTHONPATH"] = os.pathsep.join(paths + [str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", (LOAD_SHIM if shim else "") + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _fake_torchvision(root: Path, body: str) -> Path:
    (root / "torchvision").mkdir()
    (root / "torchvision" / "__init__.py").write_text(textwrap.dedent(body))
    return root


def test_real_environment_imports_everything() -> None:
    bare = _python("import torchvision")
    done = _python(
        """
        import lic, lic._compat as compat
        import torchvision, compressai, timm, pytorch_lightning
        print(compat._schema_library is not None)
        """
    )
    assert done.returncode == 0, done.stderr
    acted = done.stdout.strip() == "True"
    if bare.returncode == 0:
        assert not acted, "torchvision imports on its own: the shim must do nothing"
    else:
        assert NMS_FAILURE in bare.stderr, bare.stderr
        assert acted


def test_working_torchvision_is_left_alone(tmp_path) -> None:
    root = _fake_torchvision(tmp_path, "FAKE = 'works'\n")
    done = _python(
        """
        assert compat.ensure_torchvision_importable() is False
        import torch, torchvision
        assert torchvision.FAKE == 'works'
        assert compat._schema_library is None
        try:
            torch.ops.torchvision.nms
        except (AttributeError, RuntimeError):
            print("no schema defined")
        """,
        root,
        shim=True,
    )
    assert done.returncode == 0, done.stderr
    assert "no schema defined" in done.stdout


def test_the_nms_failure_is_repaired(tmp_path) -> None:
    # Behaves like the CUDA-only build: its import needs the nms schema to exist.
    root = _fake_torchvision(
        tmp_path,
        f"""
        import torch
        try:
            torch.ops.torchvision.nms
        except (AttributeError, RuntimeError):
            raise RuntimeError({NMS_FAILURE!r})
        FAKE = 'imported'
        """,
    )
    done = _python(
        """
        acted = compat.ensure_torchvision_importable()
        import torchvision
        assert torchvision.FAKE == 'imported'
        print(acted)
        """,
        root,
        shim=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_other_failures_propagate_unchanged(tmp_path) -> None:
    root = _fake_torchvision(tmp_path, "raise RuntimeError('some other torchvision problem')\n")
    done = _python("compat.ensure_torchvision_importable()", root, shim=True)
    assert done.returncode != 0
    assert "some other torchvision problem" in done.stderr
