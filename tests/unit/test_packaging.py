"""One distribution, ``fedcare``, carries every layout folder and the embedded data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What the distribution is built from; everything else in the checkout is not its business.
SOURCE = ("pyproject.toml", "README.md", "fedcare", "server", "client", "privacy", "simulations")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the source: setuptools writes ``fedcare.egg-info`` into
    the folder it builds, and in the checkout that file is the installed package's metadata
    (its ``fedcare.tasks`` entry points), which tests running beside this one read."""
    out, tree = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    for name in SOURCE:
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(source, tree / name, ignore=ignore)
        else:
            shutil.copy2(source, tree / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(tree)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("fedcare-*.whl")
    return built


def test_wheel_contains_every_subpackage_and_the_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "server/app.py",
        "client/app.py",
        "privacy/__init__.py",
        "simulations/runner.py",
    ):
        assert f"fedcare/{module}" in names
    for site in ("cleveland", "hungarian", "switzerland", "va"):
        assert f"fedcare/data/heart-disease/processed.{site}.data" in names
    assert "fedcare/data/heart-disease/README.md" in names
    assert not any(name.startswith(("tests/", "server/", "client/")) for name in names)


def test_installed_wheel_imports_without_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        "import fedcare.server, fedcare.client, fedcare.privacy, fedcare.simulations as s;"
        "print(fedcare.server.__file__);"
        "print(len(s.get_scenario('heart-disease').sites))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    server_file, n_sites = result.stdout.split()
    assert server_file.startswith(str(target)) and n_sites == "4"
