"""Makefile: `make demo PORT=...` and `make clean`, run by a real make in a scratch copy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A scratch folder with the Makefile and what its targets depend on."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed")  # `make test` runs the suite: make is always there
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").touch()  # newer than pyproject.toml: nothing to install
    return tmp_path


def make(project: Path, *args: str) -> str:
    """Run make in the scratch folder and return what it printed."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", str(project), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_honours_port(project: Path) -> None:
    assert make(project, "-n", "demo", "PORT=9999").split() == [
        ".venv/bin/healthimaging-exporter",
        "demo",
        "--port",
        "9999",
    ]
    assert make(project, "-n", "demo").split() == [".venv/bin/healthimaging-exporter", "demo"]


def test_clean_removes_every_generated_folder(project: Path) -> None:
    generated = [
        ".venv",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".hypothesis",
        "build",
        "dist",
        "healthimaging_exporter.egg-info",
    ]
    for name in generated:
        (project / name).mkdir(exist_ok=True)
        (project / name / "something").touch()
    make(project, "clean")
    assert sorted(p.name for p in project.iterdir()) == ["Makefile", "pyproject.toml"]
