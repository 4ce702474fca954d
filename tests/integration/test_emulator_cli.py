"""The emulator as real tools meet it: the AWS CLI through a proxy, and the console script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from exporter.emulator import EmulatorServer
from exporter.emulator.testing import client_for
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET, free_port

BIN = Path(sys.executable).parent
DS = DEMO_DATASTORE
SET = DEMO_IMAGE_SET

# The "Output" of the list-image-set-versions example in the AWS CLI documentation, verbatim.
DOCUMENTED_EXAMPLE = """
{
    "imageSetPropertiesList": [
        {
            "ImageSetWorkflowStatus": "UPDATED",
            "versionId": "4",
            "updatedAt": 1680029436.304,
            "imageSetId": "ea92b0d8838c72a3f25d00d13616f87e",
            "imageSetState": "ACTIVE",
            "createdAt": 1680027126.436
        },
        {
            "ImageSetWorkflowStatus": "UPDATED",
            "versionId": "3",
            "updatedAt": 1680029163.325,
            "imageSetId": "ea92b0d8838c72a3f25d00d13616f87e",
            "imageSetState": "ACTIVE",
            "createdAt": 1680027126.436
        },
        {
            "ImageSetWorkflowStatus": "COPY_FAILED",
            "versionId": "2",
            "updatedAt": 1680027455.944,
            "imageSetId": "ea92b0d8838c72a3f25d00d13616f87e",
            "imageSetState": "ACTIVE",
            "message": "INVALID_REQUEST:  Series of SourceImageSet and DestinationImageSet don't match.",
            "createdAt": 1680027126.436
        },
        {
            "imageSetId": "ea92b0d8838c72a3f25d00d13616f87e",
            "imageSetState": "ACTIVE",
            "versionId": "1",
            "ImageSetWorkflowStatus": "COPIED",
            "createdAt": 1680027126.436
        }
    ]
}
"""  # noqa: E501


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """Dummy credentials and an empty HOME so no real AWS configuration is read."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.update(extra)
    return env


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(port=0, dataset="demo") as server:
        yield server


def test_aws_cli_prints_the_documented_example(emu: EmulatorServer, tmp_path: Path) -> None:
    # botocore puts "runtime-" before the endpoint's host, which does not resolve; going through
    # the emulator as an HTTP proxy delivers the request anyway, in absolute form.
    env = isolated_env(tmp_path, HTTP_PROXY=f"http://127.0.0.1:{emu.port}")
    result = subprocess.run(
        [
            str(BIN / "aws"),
            "medical-imaging",
            "list-image-set-versions",
            "--endpoint-url",
            f"http://localhost:{emu.port}",
            "--datastore-id",
            DS,
            "--image-set-id",
            SET,
            "--output",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # CLI v1 prints timestamps as they came over the wire: epoch seconds, as documented.
    assert json.loads(result.stdout) == json.loads(DOCUMENTED_EXAMPLE)
    assert emu.backend.request_counts() == {"ListImageSetVersions": 1}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_console_script_serves_and_stops_on_signal(tmp_path: Path, signum: int) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "healthimaging-emulator"), "--port", str(port)],
        env=isolated_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.endswith(f"http://127.0.0.1:{port}"), line
        versions = client_for(f"http://127.0.0.1:{port}").list_image_set_versions(
            datastoreId=DS, imageSetId=SET
        )
        assert len(versions["imageSetPropertiesList"]) == 4
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None and proc.stderr.read() == ""


def test_console_script_loads_data_file_and_reports_bad_ones(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("datastores:\n  - datastoreId: nope\n")
    result = subprocess.run(
        [str(BIN / "healthimaging-emulator"), "--data", str(bad)],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "healthimaging-emulator: error: datastores[0].datastoreId"
    )
    assert len(result.stderr.strip().splitlines()) == 1


def test_start_up_lines_say_how_to_point_the_exporter_at_it(tmp_path: Path) -> None:
    # A new user's first run: start the emulator, do what it prints, run the exporter.
    home = tmp_path / "home"
    home.mkdir()
    told_keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    bare = {k: v for k, v in isolated_env(home).items() if k not in told_keys}
    proc = subprocess.Popen(
        [str(BIN / "healthimaging-emulator"), "--port", str(free_port())],
        env=bare,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().rsplit(" ", 1)[1]
        exports = proc.stdout.readline().strip().split(" export ", 1)[1]
        told = dict(pair.split("=", 1) for pair in exports.split())
        assert set(told) == set(told_keys)
        config_line = proc.stdout.readline().strip()
        aws = yaml.safe_load(config_line.removeprefix("exporter config: "))["aws"]
        assert aws["endpoint_url"] == url
        config = tmp_path / "exporter.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "aws": {**aws, "max_attempts": 1},
                    "datastores": [{"datastore_id": DS, "image_sets": [SET]}],
                    "state": {"path": ":memory:"},
                }
            )
        )
        command = [str(BIN / "healthimaging-exporter"), "--config", str(config), "--once"]
        without = subprocess.run(command, env=bare, capture_output=True, text=True, timeout=60)
        assert "no AWS credentials found" in without.stderr
        told_env = {**bare, **told}
        run = subprocess.run(command, env=told_env, capture_output=True, text=True, timeout=60)
        assert f'healthimaging_up{{datastore_id="{DS}"}} 1.0' in run.stdout, run.stderr
        assert "no AWS credentials" not in run.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
