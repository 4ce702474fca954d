"""The console script as users run it: --once with promtool, --check-config, signals, JSON logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from exporter.emulator import EmulatorServer, Faults
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET, fetch, free_port, wait_for

BIN = Path(sys.executable).parent
EXPORTER = str(BIN / "healthimaging-exporter")
ROOT = Path(__file__).resolve().parents[2]


def require(tool: str) -> str:
    """Return a tool's path; in CI a missing tool fails the test instead of skipping it."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"{tool} is not installed (make test installs it: scripts/install-test-tools)"
            )
        pytest.skip(f"{tool} is not installed; run scripts/install-test-tools")
    return path


def write_config(path: Path, emulator: EmulatorServer, **extra: object) -> Path:
    raw = {
        "aws": {"endpoint_url": emulator.url},
        "poll": {"interval_seconds": 1},
        "datastores": [{"datastore_id": DEMO_DATASTORE, "image_sets": [DEMO_IMAGE_SET]}],
        "state": {"path": str(path.parent / "state.db")},
        "web": {"listen_address": "127.0.0.1:0"},
        **extra,
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def test_once_prints_metrics_that_promtool_accepts(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    promtool = require("promtool")
    config = write_config(tmp_path / "config.yaml", emulator)
    run = subprocess.run(
        [EXPORTER, "--config", str(config), "--once"], capture_output=True, timeout=60
    )
    assert run.returncode == 0, run.stderr.decode()
    assert b"healthimaging_image_set_versions{" in run.stdout
    check = subprocess.run(
        [promtool, "check", "metrics"], input=run.stdout, capture_output=True, timeout=60
    )
    assert check.returncode == 0, (check.stdout + check.stderr).decode()
    assert check.stdout.strip() == b"" and check.stderr.strip() == b"", "promtool lint findings"


def test_once_exits_1_when_the_poll_failed(emulator: EmulatorServer, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        emulator,
        datastores=[{"datastore_id": DEMO_DATASTORE, "image_sets": ["0" * 32]}],
    )
    run = subprocess.run(
        [EXPORTER, "--config", str(config), "--once"], capture_output=True, timeout=60
    )
    assert run.returncode == 1
    assert b"healthimaging_up{" in run.stdout
    assert b"Traceback" not in run.stderr


def check_config(config: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [EXPORTER, "--config", str(config), "--check-config"],
        capture_output=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_check_config_ok_and_bad(emulator: EmulatorServer, tmp_path: Path) -> None:
    good = write_config(tmp_path / "good.yaml", emulator)
    run = check_config(good)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.decode().strip() == f"{good}: ok (1 data store)"
    bad = ROOT / "tests" / "data" / "config" / "negative_interval.yaml"
    run = check_config(bad)
    assert run.returncode == 2
    lines = run.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "poll.interval_seconds" in lines[0]


@pytest.mark.parametrize(
    "name",
    ["alias_bomb", "huge_integer", "impossible_date", "deep_nesting", "many_errors"],
)
def test_check_config_refuses_hostile_yaml_in_one_short_line(name: str) -> None:
    run = check_config(ROOT / "tests" / "data" / "config" / f"{name}.yaml")
    assert run.returncode == 2
    assert b"Traceback" not in run.stderr
    lines = run.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 4000


def _startup_cases(
    tmp_path: Path, emulator: EmulatorServer
) -> dict[str, tuple[dict[str, object], str]]:
    folder = tmp_path / "folder"
    folder.mkdir()
    not_db = tmp_path / "not.db"
    not_db.write_text("not a database\n")
    return {
        "missing profile": (
            {"aws": {"endpoint_url": emulator.url, "profile": "no-such-profile"}},
            "aws.profile: The config profile (no-such-profile) could not be found",
        ),
        "state is a folder": ({"state": {"path": str(folder)}}, "is a directory, not a file"),
        "state folder missing": (
            {"state": {"path": str(tmp_path / "missing" / "s.db")}},
            f"directory {tmp_path / 'missing'} does not exist",
        ),
        "state not sqlite": ({"state": {"path": str(not_db)}}, "is not an SQLite database"),
    }


@pytest.mark.parametrize(
    "case", ["missing profile", "state is a folder", "state folder missing", "state not sqlite"]
)
def test_check_config_checks_what_the_daemon_needs(
    emulator: EmulatorServer, tmp_path: Path, case: str
) -> None:
    extra, expected = _startup_cases(tmp_path, emulator)[case]
    config = write_config(tmp_path / "config.yaml", emulator, **extra)
    run = check_config(config, AWS_CONFIG_FILE=str(tmp_path / "aws-config"))
    assert run.returncode == 2, run.stdout.decode()
    lines = run.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert lines[0].startswith(f"healthimaging-exporter: invalid config: {config}: ")


def test_check_config_refuses_a_port_in_use(emulator: EmulatorServer, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = write_config(
            tmp_path / "config.yaml", emulator, web={"listen_address": f"127.0.0.1:{port}"}
        )
        run = check_config(config)
    assert run.returncode == 2
    assert f"web.listen_address 127.0.0.1:{port}: cannot listen: Address already in use" in (
        run.stderr.decode()
    )


def test_daemon_refuses_a_missing_profile_at_start_as_check_config_does(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "config.yaml", emulator, aws={"endpoint_url": emulator.url, "profile": "nope"}
    )
    env = {**os.environ, "AWS_CONFIG_FILE": str(tmp_path / "aws-config")}
    check = subprocess.run(
        [EXPORTER, "--config", str(config), "--check-config"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    once = subprocess.run(
        [EXPORTER, "--config", str(config), "--once"], capture_output=True, env=env, timeout=60
    )
    assert check.returncode == once.returncode == 2
    assert b"Traceback" not in once.stderr
    assert check.stderr == once.stderr
    assert b"aws.profile: The config profile (nope) could not be found" in once.stderr


def test_unwritable_state_is_a_clear_startup_error(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "config.yaml", emulator, state={"path": str(tmp_path / "missing" / "s.db")}
    )
    run = subprocess.run(
        [EXPORTER, "--config", str(config), "--once"], capture_output=True, timeout=60
    )
    assert run.returncode == 1
    assert run.stderr.decode().strip().count("\n") == 0 and b"does not exist" in run.stderr


def test_version_flag() -> None:
    run = subprocess.run([EXPORTER, "--version"], capture_output=True, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith(b"healthimaging-exporter ")


def _metrics_port(process: subprocess.Popen[bytes], lines: list[str]) -> int:
    assert process.stderr is not None
    end = time.monotonic() + 20
    while time.monotonic() < end:
        line = process.stderr.readline().decode()
        lines.append(line)
        if "listening on" in line:
            record = json.loads(line)
            return int(record["message"].rsplit(":", 1)[1].split("/")[0])
    raise AssertionError("exporter did not start: " + "".join(lines))


@pytest.mark.parametrize("bad", ["invalid_value", "alias_bomb"])
def test_daemon_logs_json_reloads_on_sighup_and_stops_on_sigterm(
    emulator: EmulatorServer, tmp_path: Path, bad: str
) -> None:
    config = write_config(tmp_path / "config.yaml", emulator)
    process = subprocess.Popen(
        [EXPORTER, "--config", str(config), "--log.format", "json", "--log.level", "debug"],
        stderr=subprocess.PIPE,
        env={
            **os.environ,
            "AWS_ACCESS_KEY_ID": "AKIDCANARY",
            "AWS_SECRET_ACCESS_KEY": "secret-canary",
        },
    )
    lines: list[str] = []
    try:
        port = _metrics_port(process, lines)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while (
            urllib.request.urlopen(url + "/-/healthy", timeout=5).status != 200
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        if bad == "alias_bomb":  # once 93 s of stalled scrapes: now refused at once
            shutil.copy(ROOT / "tests" / "data" / "config" / "alias_bomb.yaml", config)
        else:
            config.write_text("poll: {interval_seconds: nope}\n")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        body = ""
        while time.monotonic() < deadline:
            body = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
            if "healthimaging_exporter_config_last_reload_successful 0.0" in body:
                break
            time.sleep(0.2)
        assert "healthimaging_exporter_config_last_reload_successful 0.0" in body
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 15
    finally:
        if process.poll() is None:
            process.kill()
    assert process.stderr is not None
    lines.extend(process.stderr.read().decode().splitlines())
    records = [json.loads(line) for line in lines if line.strip()]
    assert any("config reload failed" in r["message"] for r in records)
    assert records[-1]["message"] == "stopped"
    text = "\n".join(lines)
    # Debug level for us, never for botocore: no signed headers, no bodies, no keys.
    assert "Authorization" not in text and "AWS4-HMAC-SHA256" not in text
    assert "AKIDCANARY" not in text and "secret-canary" not in text


def test_once_always_exits_and_prints_the_exposition_when_calls_hang(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        emulator,
        aws={"endpoint_url": emulator.url, "max_attempts": 1, "read_timeout_seconds": 2},
        poll={"interval_seconds": 60, "timeout_seconds": 1},
    )
    emulator.backend.set_faults(Faults(latency_seconds=5.0))
    try:
        run = subprocess.run(
            [EXPORTER, "--config", str(config), "--once"], capture_output=True, timeout=60
        )
    finally:
        emulator.backend.set_faults(Faults())
    assert run.returncode == 1
    assert f'healthimaging_up{{datastore_id="{DEMO_DATASTORE}"}} 0.0'.encode() in run.stdout
    assert b'reason="timeout"' in run.stdout
    assert b"Traceback" not in run.stderr


def _fleet_lines(body: bytes) -> list[str]:
    # The process's own lines (CPU, memory, GC) change between two scrapes; the fleet's do not.
    return [
        line
        for line in body.decode().splitlines()
        if line.startswith("healthimaging_") and "_api_requests_" not in line
    ]


def test_daemon_flags_serve_every_address_on_the_telemetry_path(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Flags win over the file; `:PORT` binds every interface; deprecated flags say so once."""
    config = write_config(tmp_path / "config.yaml", emulator)  # web.listen_address 127.0.0.1:0
    port = free_port()
    process = subprocess.Popen(
        [
            EXPORTER,
            "--config",
            str(config),
            "--log-format",
            "json",
            "--log-level",
            "INFO",
            "--log-level=warn",
            "--log.level",
            "Info",
            f"--web.listen-address=:{port}",  # the default's form, on a free port
            "--web.listen-address",
            "127.0.0.1:0",
            "--web.telemetry-path",
            "/probe/metrics",
        ],
        stderr=subprocess.PIPE,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"},
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        end = time.monotonic() + 20
        while time.monotonic() < end and not any("listening on" in line for line in lines):
            lines.append(process.stderr.readline().decode())
        listening = json.loads(next(line for line in lines if "listening on" in line))
        urls = listening["message"].removeprefix("listening on ").split(", ")
        assert urls[0] == f"http://127.0.0.1:{port}/probe/metrics", urls
        assert len(urls) == 2 and urls[1].endswith("/probe/metrics") and urls[0] != urls[1]
        # Every interface: 127.0.0.2 is not the address a loopback-only bind would answer on.
        assert fetch(f"http://127.0.0.2:{port}/-/healthy")[0] == 200
        wait_for(lambda: fetch(f"http://127.0.0.1:{port}/-/ready")[0] == 200)
        first, second = (fetch(url) for url in urls)
        assert first[0] == second[0] == 200
        assert b"healthimaging_image_set_versions{" in first[2]
        assert _fleet_lines(first[2]) == _fleet_lines(second[2])
        assert b"process_resident_memory_bytes " in first[2]
        for url in urls:
            base = url.removesuffix("/probe/metrics")
            assert fetch(base + "/metrics")[0] == 404
            status, _, landing = fetch(base + "/")
            assert status == 200 and b'href="probe/metrics"' in landing
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    lines.extend(process.stderr.read().decode().splitlines())
    messages = [json.loads(line)["message"] for line in lines if line.strip()]
    deprecations = [m for m in messages if "is deprecated" in m]
    assert deprecations == [  # in the order given, each once however often given
        "flag --log-format is deprecated and goes in the next release: use --log.format",
        "flag --log-level is deprecated and goes in the next release: use --log.level",
    ]
