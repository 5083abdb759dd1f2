"""The wheel: built without packaging warnings, it holds every module, migration, static file and
the knowledge base, and installed into a clean venv the service finds its rules with no
settings."""

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tests.conftest import ROOT

SOURCES = ("cds_service", "rules", "pyproject.toml", "README.md", "LICENSE")
"""What a wheel is built from (the Dockerfile's builder copies the same)."""


def _copy(name: str, target: Path) -> None:
    source = ROOT / name
    if source.is_dir():
        shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy(source, target)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, built from a clean copy (no build/ left over), and the build's output."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        _copy(name, source)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), source],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("spine_cds-*.whl")
    return wheel, built.stdout + built.stderr


@pytest.mark.slow  # builds a wheel (and a venv) in subprocesses
def test_the_build_prints_no_packaging_warning(build: tuple[Path, str]) -> None:
    _, output = build
    assert "would be ignored" not in output
    assert not re.search(r"Setuptools\w*Warning|SetuptoolsDeprecationWarning", output)


@pytest.mark.slow  # builds a wheel (and a venv) in subprocesses
def test_the_wheel_ships_every_package_file_the_rules_and_the_licence(
    build: tuple[Path, str],
) -> None:
    wheel, _ = build
    shipped = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "cds_service"
    wanted = {
        str(path.relative_to(ROOT))
        for pattern in ("**/*.py", "static/**/*")
        for path in package.glob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    }
    wanted |= {
        f"cds_service/rules/{path.relative_to(ROOT / 'rules')}"
        for path in (ROOT / "rules").glob("**/*")
        if path.is_file()
    }
    assert wanted - shipped == set()
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in shipped)


@pytest.mark.slow  # builds a wheel (and a venv) in subprocesses
def test_a_clean_venv_checks_its_rules_with_no_settings(
    build: tuple[Path, str], tmp_path: Path
) -> None:
    wheel, _ = build
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel],
        check=True,
        capture_output=True,
        timeout=900,
    )
    somewhere = tmp_path / "elsewhere"  # not the checkout: nothing to find rules/ from
    somewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    checked = subprocess.run(
        [venv / "bin" / "cds-service", "rules", "check"],
        cwd=somewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert re.fullmatch(
        r"rule set \S+ \S+: \d+ rules, \d+ value sets ok \(\d+ codes\)\n", checked.stdout
    )
    assert list(somewhere.iterdir()) == []  # and it left nothing behind


def test_every_imported_library_is_declared() -> None:
    """The service's imports are runtime dependencies; the tests' and benches' are in `dev`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    assert _distributions(ROOT / "cds_service") <= runtime
    assert _distributions(ROOT / "tests") | _distributions(ROOT / "bench") <= runtime | dev


def _name(distribution: str) -> str:
    """A distribution's normalised name (PEP 503), from a requirement or a name."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", distribution)[0]).lower()


def _top_module(node: ast.AST) -> str:
    """The top-level module an absolute import statement imports from ("" for anything else)."""
    if isinstance(node, ast.Import):
        return node.names[0].name.split(".")[0]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return node.module.split(".")[0]
    return ""


def _distributions(folder: Path) -> set[str]:
    """The distributions `folder`'s Python files import (the standard library and the project's
    own packages left out)."""
    modules = {
        _top_module(node)
        for path in folder.glob("**/*.py")
        for node in ast.walk(ast.parse(path.read_text()))
    }
    modules -= set(sys.stdlib_module_names) | {"cds_service", "tests", "bench", ""}
    installed = packages_distributions()
    return {_name(d) for module in modules for d in installed.get(module, [module])}
