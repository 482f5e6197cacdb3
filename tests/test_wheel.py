"""The wheel ships its recipes: built, installed into a fresh venv and run from elsewhere.

The venv sees this machine's packages (torch and the rest: nothing is downloaded) but
holds the wheel itself, installed without dependencies, so it shadows the checkout or
an editable install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a clean copy of the sources (no build/ or egg-info left in the checkout)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    shutil.copytree(
        ROOT / "landscape", src / "landscape", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", src, "-w", dist)
    (wheel,) = dist.glob("*.whl")
    return wheel


def make_venv(venv: Path) -> Path:
    """A venv over this interpreter's packages; returns its python."""
    run(sys.executable, "-m", "venv", "--system-site-packages", venv)
    python = venv / "bin" / "python"
    if sys.prefix != sys.base_prefix:
        # This interpreter is a venv itself, whose packages --system-site-packages does not
        # reach: list them after the new venv's own, which therefore still wins.
        purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        import site

        (Path(purelib.stdout.strip()) / "outer.pth").write_text(
            "\n".join(site.getsitepackages()) + "\n"
        )
    return python


@pytest.mark.slow
def test_wheel_install_finds_its_recipes_and_runs_one(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        shipped = {Path(n).name for n in archive.namelist() if n.startswith("landscape/recipes/")}
    assert shipped == {p.name for p in (ROOT / "landscape" / "recipes").glob("*.toml")}

    venv = tmp_path / "venv"
    python = make_venv(venv)
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(
        python,
        "-c",
        "import landscape, landscape.figures as f; print(landscape.__file__); "
        "print(len(f.load_recipes()))",
        cwd=elsewhere,
    ).stdout.split()
    assert Path(where[0]).resolve().is_relative_to(venv.resolve()), where
    assert int(where[1]) == len(shipped) - 1  # all but models.toml

    done = run(
        venv / "bin" / "landscape",
        "figures",
        "--quick",
        "--only",
        "liu-fig7",
        "--device",
        "cpu",
        "--json",
        cwd=elsewhere,
    )
    assert json.loads(done.stdout)["liu-fig7"].startswith("4 files")
    with h5py.File(elsewhere / "runs" / "quick" / "liu-fig7.h5", "r") as f:
        assert sorted(f["schedule"]) == ["cifar10", "lr-resnet18", "lr-vgg8", "mnist"]
        assert f["schedule/mnist/cosine"][-1] == pytest.approx(0.4)
    assert sorted(p.name for p in (elsewhere / "figures" / "liu-fig7").iterdir()) == [
        "schedule_cifar10.png",
        "schedule_lr-resnet18.png",
        "schedule_lr-vgg8.png",
        "schedule_mnist.png",
    ]
    assert "## liu-fig7" in (elsewhere / "figures" / "index.md").read_text()
