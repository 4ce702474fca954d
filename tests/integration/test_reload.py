"""Config reloads: the last-success timestamp exists from the start and moves on success only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from exporter.config import load_config
from exporter.daemon import Daemon
from exporter.emulator import EmulatorServer
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET, fetch, wait_for
from tests.integration.test_poll import samples_of, value

DaemonFactory = Callable[..., Daemon]
EXPORTER = str(Path(sys.executable).parent / "healthimaging-exporter")
STAMP = "healthimaging_exporter_config_last_reload_success_timestamp_seconds"
OK = "healthimaging_exporter_config_last_reload_successful"


def raw_config(emulator: EmulatorServer, tmp_path: Path, interval: float = 1) -> dict[str, Any]:
    """A config as its YAML file holds it."""
    return {
        "aws": {"endpoint_url": emulator.url},
        "poll": {"interval_seconds": interval},
        "datastores": [{"datastore_id": DEMO_DATASTORE, "image_sets": [DEMO_IMAGE_SET]}],
        "state": {"path": str(tmp_path / "state.db")},
        "web": {"listen_address": "127.0.0.1:0"},
    }


def served(daemon: Daemon, name: str) -> float | None:
    """Return an unlabelled sample as /metrics serves it."""
    status, _, body = fetch(daemon.url + "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_reload_success_timestamp_moves_on_success_only(
    emulator: EmulatorServer, tmp_path: Path, daemon_for: DaemonFactory
) -> None:
    path = tmp_path / "config.yaml"
    raw = raw_config(emulator, tmp_path)
    path.write_text(yaml.safe_dump(raw))
    before_start = time.time()
    daemon = daemon_for(
        load_config(path), reload_config=lambda: load_config(path), enable_lifecycle=True
    )
    loaded = served(daemon, STAMP)
    assert loaded is not None, "the family must exist from the start"
    assert before_start <= loaded <= time.time()
    assert served(daemon, OK) == 1

    time.sleep(0.05)  # a timestamp that can visibly move
    raw["poll"]["interval_seconds"] = 2
    path.write_text(yaml.safe_dump(raw))
    before_reload = time.time()
    status, _, body = fetch(daemon.url + "/-/reload", method="POST")
    assert (status, body) == (200, b"Reloaded\n")
    reloaded = served(daemon, STAMP)
    assert reloaded is not None and before_reload <= reloaded <= time.time()
    assert reloaded > loaded
    assert daemon.service.config.poll.interval_seconds == 2

    path.write_text("poll: {interval_seconds: 0}\n")
    status, _, body = fetch(daemon.url + "/-/reload", method="POST")
    assert status == 500 and b"interval_seconds" in body
    assert served(daemon, OK) == 0
    assert served(daemon, STAMP) == reloaded  # a failed reload leaves it where it was
    s = samples_of(daemon.service)
    assert value(s, STAMP) == reloaded

    path.write_text(yaml.safe_dump(raw))
    assert daemon.reload() is None  # what SIGHUP runs
    assert served(daemon, OK) == 1
    last = served(daemon, STAMP)
    assert last is not None and last > reloaded


def test_sighup_moves_the_reload_success_timestamp(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    raw = raw_config(emulator, tmp_path, interval=60)
    path.write_text(yaml.safe_dump(raw))
    log = tmp_path / "exporter.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [EXPORTER, "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env=os.environ.copy(),
        )
    try:
        wait_for(lambda: "listening on" in log.read_text())
        line = next(x for x in log.read_text().splitlines() if "listening on" in x)
        url = line.rsplit("listening on ", 1)[1].removesuffix("/metrics")

        def stamp() -> float | None:
            for row in fetch(url + "/metrics")[2].decode().splitlines():
                if row.startswith(STAMP + " "):
                    return float(row.split()[1])
            return None

        first = stamp()
        assert first is not None
        raw["datastores"][0]["image_sets"] = [DEMO_IMAGE_SET, "b7d2c4e6f8a0b2c4d6e8f0a2b4c6d8e0"]
        path.write_text(yaml.safe_dump(raw))
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: (stamp() or 0) > first)
        assert "config reloaded: 1 data stores" in log.read_text()
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_a_signal_right_after_the_listening_line_is_handled(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """SIGHUP as soon as "listening on" is logged reloads; it does not kill the process."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw_config(emulator, tmp_path, interval=60)))
    for attempt in range(10):  # the window was a few microseconds wide: try it repeatedly
        process = subprocess.Popen(
            [EXPORTER, "--config", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert process.stderr is not None
        try:
            for line in process.stderr:
                if b"listening on" in line:
                    process.send_signal(signal.SIGHUP)
                    break
            for line in process.stderr:
                if b"config reloaded" in line:
                    break
            assert process.poll() is None, f"attempt {attempt}: exit {process.returncode}"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()
            process.stderr.close()


def test_an_image_set_added_by_a_reload_is_polled_at_once(
    emulator: EmulatorServer, tmp_path: Path, daemon_for: DaemonFactory
) -> None:
    added = "b7d2c4e6f8a0b2c4d6e8f0a2b4c6d8e0"
    path = tmp_path / "config.yaml"
    raw = raw_config(emulator, tmp_path, interval=3600)  # no scheduled cycle during the test
    path.write_text(yaml.safe_dump(raw))
    daemon = daemon_for(load_config(path), reload_config=lambda: load_config(path))
    wait_for(daemon.service.is_ready)
    raw["datastores"][0]["image_sets"] = [DEMO_IMAGE_SET, added]
    path.write_text(yaml.safe_dump(raw))
    assert daemon.reload() is None
    wait_for(lambda: f'image_set_id="{added}"' in fetch(daemon.url + "/metrics")[2].decode())
