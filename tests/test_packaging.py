"""A non-editable install works: the wheel carries the built-in presets and modalities as package data.

The wheel is built from this checkout, installed without its dependencies into a fresh virtual environment,
and run from another directory. The dependencies (torch, MLflow, ...) come from the test environment's
site-packages through ``PYTHONPATH``: a directory on ``PYTHONPATH`` is not a site directory, so its ``.pth``
files (the editable install's finder among them) are not run, and ``simulator`` and ``advisor`` can only be
imported from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

LOCAL = (".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "banks", "reports",
         "studies", "bench-out")
"""What a copy of the checkout leaves out: environments, build outputs, caches and local workspaces."""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel .`` of a copy of this checkout (no dependencies, no build isolation: nothing downloaded;
    setuptools writes ``build/`` into the source tree, so the checkout itself is left as it is)."""
    source = tmp_path_factory.mktemp("source") / "lr-advisor"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*LOCAL))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(source)], check=True, capture_output=True, text=True)
    (built,) = out.glob("lr_advisor-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh virtual environment with only the wheel installed, and the environment to run it in."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, text=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]  # the dependencies, not the editable finder
    return venv, env


def test_the_wheel_carries_every_preset_and_modality(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = sorted(p.name for p in (ROOT / "simulator" / "data" / "presets").glob("*.toml"))
    modalities = sorted(p.name for p in (ROOT / "simulator" / "data" / "presets" / "modalities").glob("*.toml"))
    assert presets and modalities
    assert {f"simulator/data/presets/{p}" for p in presets} <= names
    assert {f"simulator/data/presets/modalities/{m}" for m in modalities} <= names


def test_the_repository_presets_folder_is_the_package_data(tmp_path: Path) -> None:
    """The user-facing ``presets/`` is the package's data folder itself, not a copy that could drift."""
    assert (ROOT / "presets").resolve() == (ROOT / "simulator" / "data" / "presets").resolve()


def test_an_installed_wheel_lists_and_simulates_the_builtin_presets(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = installed
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import simulator; print(simulator.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(venv)  # the wheel, not this checkout
    advisor = str(venv / "bin" / "advisor")
    catalog = subprocess.run([advisor, "catalog", "--json"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    assert catalog.returncode == 0, catalog.stderr
    document = json.loads(catalog.stdout)
    text = json.dumps(document)
    for name in ("tiny", "quick", "paper", "two_photon", "ephys"):
        assert name in text
    build = subprocess.run([advisor, "simulate", "--preset", "tiny", "--workspace", str(tmp_path / "ws")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    from simulator.bank import load_bank

    (bank,) = (tmp_path / "ws" / "banks").glob("tiny-*")
    assert len(load_bank(bank).metadata) == 4  # 2 rules x 2 networks
