"""The wheel the Docker image installs holds every module, migration and static file."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # builds a wheel in a subprocess


def test_the_wheel_ships_every_package_file(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a clean copy: no build/ left over from an earlier build
    shutil.copytree(ROOT / "cds_service", source / "cds_service")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("spine_cds-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "cds_service"
    wanted = {
        str(path.relative_to(ROOT))
        for pattern in ("**/*.py", "static/**/*")
        for path in package.glob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert wanted - shipped == set()
