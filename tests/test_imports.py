"""What importing lic costs: the command line and the container never import torch.

``lic --help``, ``lic info`` and :mod:`lic.bitstream` only need the standard library; torch,
compressai and timm (seconds to import) load when a command codes images. Each check runs in a
fresh interpreter, since this one has imported everything long ago.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lic
from tests.test_cli import _encoded_sample

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "compressai", "timm", "pytorch_lightning")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _heavy_modules_after(code: str) -> list[str]:
    report = f"import sys; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = _python(textwrap.dedent(code) + "\n" + report)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])


def test_container_and_command_line_import_without_torch() -> None:
    code = "import lic, lic.bitstream, lic.cli, lic.paths, lic.pretrained"
    assert _heavy_modules_after(code) == []


def test_help_and_info_run_without_torch(tmp_path, tiny_checkpoint, capsys) -> None:
    stream = _encoded_sample(tmp_path, tiny_checkpoint, capsys)
    code = f"""
        import contextlib, io
        from lic.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            try:
                main(["--help"])
            except SystemExit:
                pass
            assert main(["info", {str(stream)!r}]) == 0
        assert "usage: lic" in out.getvalue() and "student-tiny" in out.getvalue()
    """
    assert _heavy_modules_after(code) == []


def test_public_names_load_on_first_use() -> None:
    done = _python(
        """
        import sys, lic
        assert set(lic.__all__) <= set(dir(lic))
        assert "lic.codecs" not in sys.modules and "lic.checkpoint" not in sys.modules
        assert "student-tiny" in lic.list_codecs()
        from lic import create_codec, load_codec, pretrained, save_codec
        assert pretrained.__name__ == "lic.pretrained" and callable(load_codec)
        assert lic.save_codec is save_codec and lic.create_codec is create_codec
        try:
            lic.no_such_name
        except AttributeError:
            print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert lic.__version__ and callable(lic.create_codec)


def test_torchvision_imports_after_lic_without_being_imported_by_it() -> None:
    """``import lic`` leaves torchvision alone but makes its import work (see lic._compat)."""
    code = """
        import sys, lic
        assert "torchvision" not in sys.modules
        import compressai, torchvision
    """
    assert "torchvision" in _heavy_modules_after(code)
