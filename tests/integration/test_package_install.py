"""The Dockerfile's install recipe, run without Docker: build the wheel, install it, run it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def builder_copies() -> list[str]:
    """The sources the Dockerfile's builder stage copies into the image (COPY lines)."""
    text = (ROOT / "Dockerfile").read_text()
    builder = text.split(" AS builder", 1)[1].split("\nFROM ", 1)[0]
    sources: list[str] = []
    for line in builder.splitlines():
        match = re.match(r"COPY\s+(?!--)(.+)$", line.strip())
        if match:
            sources.extend(match.group(1).split()[:-1])
    return sources


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command in a folder, failing the test with its output when it fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built like the builder stage from only the files the Dockerfile copies."""
    context = tmp_path_factory.mktemp("context")
    for source in builder_copies():
        path = ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, context / source)
    out = tmp_path_factory.mktemp("wheels")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, ".", cwd=context)
    wheels = list(out.glob("healthimaging_exporter-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Path]:
    """A new venv with the wheel installed; its dependencies come from the test venv, offline."""
    target = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(target)
    bin_dir = target / "bin"
    python = bin_dir / "python"
    run(python, "-m", "pip", "install", "--no-index", "--no-deps", wheel, cwd=target)
    # The dependencies are already in this test's venv: expose its site-packages as a plain path
    # (a path in a .pth does not run the .pth files there, so the editable install of the project
    # stays invisible and `exporter` can only come from the wheel).
    purelib = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=target
    )
    deps = sysconfig.get_paths()["purelib"]
    Path(purelib.stdout.strip(), "zz-test-dependencies.pth").write_text(deps + "\n")
    yield bin_dir


def test_the_wheel_holds_the_whole_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "exporter").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert sources <= names, sorted(sources - names)
    assert "exporter/py.typed" in names
    data = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "exporter").glob("emulator/data/*.yaml")
    }
    assert data <= names, sorted(data - names)


def test_the_wheel_declares_the_console_scripts(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    entry_points = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = archive.read(entry_points).decode()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        assert f"{name} = {target}" in text


def test_the_installed_package_comes_from_the_wheel(fresh_venv: Path) -> None:
    located = run(
        fresh_venv / "python", "-c", "import exporter; print(exporter.__file__)", cwd=fresh_venv
    )
    assert Path(located.stdout.strip()).is_relative_to(fresh_venv.parent)
    run(fresh_venv / "python", "-m", "pip", "check", cwd=fresh_venv)


def test_exporter_version(fresh_venv: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = run(fresh_venv / "healthimaging-exporter", "--version", cwd=fresh_venv)
    assert version in done.stdout + done.stderr


def test_emulator_help(fresh_venv: Path) -> None:
    done = run(fresh_venv / "healthimaging-emulator", "--help", cwd=fresh_venv)
    assert "usage" in done.stdout.lower()
    assert "--port" in done.stdout


def test_the_wheel_declares_its_license_and_links(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = archive.read(metadata_name).decode()
    headers = metadata.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers
    # PEP 639: an SPDX expression replaces the license classifiers, never both.
    assert not [h for h in headers if h.startswith("Classifier: License ::")]
    assert not [h for h in headers if h.startswith("License: ")]
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    for label, url in urls.items():
        assert f"Project-URL: {label}, {url}" in headers
    license_name = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
    shipped = archive.read(license_name).decode()
    assert shipped == (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in shipped
    assert "END OF TERMS AND CONDITIONS" in shipped
    # web.py renders its pages itself: no stray data files in the package
    assert not [n for n in names if n.startswith("exporter/") and n.endswith(".html")]
