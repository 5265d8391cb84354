"""lic installed like any package: a wheel carries the code, recipes, weights and sample photos.

The wheel is built from a copy of the sources (so no ``build/`` lands in the checkout), installed
without dependencies into a fresh virtual environment, and run from a folder outside the
checkout, so that ``lic`` is the installed copy. The dependencies come from the environment
running the tests, appended to the new environment's path by a ``.pth`` file (after its own
site-packages, and without this environment's editable-install hook, which is only processed
for a real site directory).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from (pyproject.toml names README.md as the long description).
SOURCES = ("pyproject.toml", "README.md", "lic", "recipes")


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300):
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done


def _relative_files(root: Path, pattern: str) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob(pattern)
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fresh venv with the lic wheel installed; returns its paths and a working folder."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            skip = shutil.ignore_patterns("__pycache__")
            shutil.copytree(REPO / name, source / name, ignore=skip)
        else:
            shutil.copy2(REPO / name, source / name)
    wheels = root / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        cwd=root,
    )
    (wheel,) = wheels.glob("lic-*.whl")
    env_dir = root / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=root)
    python = env_dir / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        cwd=root,
    )
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root
    ).stdout.strip()
    (Path(purelib) / "_lic_test_dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n"
    )
    work = root / "work"
    work.mkdir()
    return {"env": env_dir, "python": python, "work": work, "wheel": wheel}


def _clean_env() -> dict[str, str]:
    """This environment without what would point the installed lic back at the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LIC_RECIPES")}


def test_wheel_carries_code_recipes_weights_and_samples(installed) -> None:
    import zipfile

    with zipfile.ZipFile(installed["wheel"]) as wheel:
        names = set(wheel.namelist())
    # Every module of the package: the package list in pyproject.toml is written by hand.
    modules = {f"lic/{name}" for name in _relative_files(REPO / "lic", "*.py")}
    assert modules <= names, sorted(modules - names)
    recipes = {f"lic/recipes/{name}" for name in _relative_files(REPO / "recipes", "*.yaml")}
    assert recipes and recipes <= names, sorted(recipes - names)
    shipped = {f"lic/{name}" for name in _relative_files(REPO / "lic", "weights/*")}
    shipped |= {f"lic/{name}" for name in _relative_files(REPO / "lic", "samples/*")}
    assert {"lic/weights/manifest.json", "lic/samples/SOURCE.md"} <= shipped <= names, sorted(
        shipped - names
    )


def test_installed_package_finds_its_recipes_weights_and_samples(installed) -> None:
    probe = textwrap.dedent(
        """
        import json, lic
        from lic import pretrained
        from lic.demo import sample_photos
        from lic.paths import recipes_dir
        print(json.dumps({
            "lic": lic.__file__,
            "recipes": str(recipes_dir()),
            "weights": pretrained.verify(),
            "models": len(pretrained.default_models()),
            "samples": [p.name for p in sample_photos()],
        }))
        """
    )
    done = _run([str(installed["python"]), "-c", probe], installed["work"], _clean_env())
    found = json.loads(done.stdout.strip().splitlines()[-1])
    env = installed["env"].resolve()
    assert Path(found["lic"]).resolve().is_relative_to(env), found["lic"]
    recipes = Path(found["recipes"])
    assert recipes.resolve().is_relative_to(env) and (recipes / "train.yaml").is_file()
    assert found["weights"] == [] and found["models"] >= 1
    assert found["samples"] == sorted(p.name for p in (REPO / "lic" / "samples").glob("*.png"))


def test_installed_lic_train_composes_an_experiment(installed) -> None:
    bin_dir = installed["env"] / "bin"
    env = _clean_env()
    work = installed["work"]
    done = _run([str(bin_dir / "lic-train"), "--cfg", "job", "experiment=quick"], work, env)
    assert "name: quick" in done.stdout, done.stdout
    usage = _run([str(bin_dir / "lic-train"), "--help"], work, env).stdout
    assert "== Configuration groups ==" in usage and "experiment:" in usage, usage
    assert "COMMAND" in _run([str(bin_dir / "lic"), "--help"], work, env).stdout
