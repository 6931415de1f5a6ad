"""What `pip install .` installs (the README's quick start): every module and data file of the package, and a
command line that starts from the installed copy alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy of what the package is made of: setuptools leaves a build/ folder beside the sources,
    # and a stale one (modules since moved) would end up in the wheel
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "alexcompress", source / "alexcompress", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build a wheel here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("alexcompress-*.whl")
    return path


def test_the_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "alexcompress"
    expected = {str(p.relative_to(ROOT)) for p in package.rglob("*") if p.suffix in (".py", ".json") and "__pycache__" not in p.parts}
    assert expected - names == set()


def test_the_installed_copy_runs(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "import sys, alexcompress, pkgutil, importlib\n"
        f"assert alexcompress.__file__.startswith({str(tmp_path)!r}), alexcompress.__file__\n"
        "for m in pkgutil.walk_packages(alexcompress.__path__, 'alexcompress.'):\n"
        "    if m.name != 'alexcompress.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "from alexcompress.cli.app import main\n"
        "sys.argv = ['alexcompress', 'info', '--help']\n"
        "main()\n"
    )
    result = subprocess.run(  # run from the unpacked wheel's folder: not the checkout, whose modules would win
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    assert "Table 4" in result.stdout
