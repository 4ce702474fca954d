"""Faults against the emulator, each seen in metrics and logs and each recovered exactly."""

from __future__ import annotations

import copy
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import Config, parse_config
from exporter.daemon import Daemon
from exporter.emulator import EmulatorServer, Faults
from exporter.emulator.dataset import demo_path
from exporter.service import ExporterService
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET, fetch, wait_for
from tests.integration.conftest import ConfigFactory
from tests.integration.test_poll import Samples, samples_of, value

ServiceFactory = Callable[[Config], ExporterService]
DaemonFactory = Callable[..., Daemon]
EXPORTER = str(Path(sys.executable).parent / "healthimaging-exporter")
IS = {"datastore_id": DEMO_DATASTORE, "image_set_id": DEMO_IMAGE_SET}
DS = {"datastore_id": DEMO_DATASTORE}
LIST = "ListImageSetVersions"


def failed(s: Samples, status: str = "COPY_FAILED", **labels: str) -> float | None:
    """Return healthimaging_failed_versions_total for an image set (the demo one by default)."""
    return value(s, "healthimaging_failed_versions_total", **(labels or IS), workflow_status=status)


def errors(s: Samples, reason: str) -> float | None:
    """Return healthimaging_exporter_poll_errors_total of the demo data store for a reason."""
    return value(s, "healthimaging_exporter_poll_errors_total", **DS, reason=reason)


def attempts(s: Samples, outcome: str) -> float | None:
    """Return healthimaging_exporter_api_requests_total of ListImageSetVersions."""
    return value(s, "healthimaging_exporter_api_requests_total", operation=LIST, outcome=outcome)


def daemon_samples(daemon: Daemon) -> Samples:
    """Parse what the daemon serves on /metrics right now."""
    return samples_of(daemon.service)


def polls(daemon: Daemon) -> float:
    """Return how many poll cycles the daemon has finished."""
    count = value(daemon_samples(daemon), "healthimaging_exporter_poll_duration_seconds_count")
    return count or 0.0


def wait_polls(daemon: Daemon, cycles: int) -> None:
    """Wait until the daemon has finished this many more poll cycles."""
    target = polls(daemon) + cycles
    wait_for(lambda: polls(daemon) >= target)


def test_sustained_throttling_marks_the_datastore_down_then_recovers(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(
        aws={"max_attempts": 2},
        poll={"timeout_seconds": 30},
        import_jobs={"enabled": False},  # the counts below are the version listings'
    )
    service = service_for(config)
    assert service.poll().ok
    emulator.backend.set_faults(Faults(throttle_ratio=1.0))
    for _ in range(3):
        emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")
        assert not service.poll().ok
    s = samples_of(service)
    assert value(s, "healthimaging_up", **DS) == 0
    assert errors(s, "throttled") == 3
    assert (attempts(s, "throttled") or 0) >= 6  # every attempt, retries included
    assert value(s, "healthimaging_image_set_versions", **IS) == 4  # the last metrics stay
    assert failed(s) is None
    assert "ThrottlingException" in caplog.text
    emulator.backend.set_faults(Faults())
    assert service.poll().ok
    s = samples_of(service)
    assert value(s, "healthimaging_up", **DS) == 1
    assert failed(s) == 3
    assert value(s, "healthimaging_image_set_versions", **IS) == 7
    assert service.poll().ok
    assert failed(samples_of(service)) == 3


def test_latency_past_the_read_timeout_ends_the_cycle_at_its_deadline(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    ids = [emulator.backend.create_image_set(DEMO_DATASTORE) for _ in range(6)]
    config = make_config(
        ids,
        aws={"read_timeout_seconds": 0.5, "max_attempts": 1},
        poll={"concurrency": 1, "timeout_seconds": 2},
        import_jobs={"enabled": False},  # the counts below are the version listings'
    )
    service = service_for(config)
    assert service.poll().ok
    for image_set in ids:
        emulator.backend.add_version(DEMO_DATASTORE, image_set, "COPY_FAILED")
    emulator.backend.set_faults(Faults(latency_seconds=3.0))
    started = time.monotonic()
    result = service.poll()
    elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 0.5, f"the cycle ran {elapsed:.2f}s past its 2 s deadline"
    assert result.failed >= 1 and result.timed_out >= 1, result
    s = samples_of(service)
    assert value(s, "healthimaging_up", **DS) == 0
    assert (errors(s, "network_error") or 0) >= 1
    assert (errors(s, "timeout") or 0) >= 1
    assert (errors(s, "network_error") or 0) + (errors(s, "timeout") or 0) == 6
    assert (attempts(s, "network_error") or 0) >= 1
    emulator.backend.set_faults(Faults())
    assert service.poll().ok
    s = samples_of(service)
    assert value(s, "healthimaging_up", **DS) == 1
    for image_set in ids:
        labels = {"datastore_id": DEMO_DATASTORE, "image_set_id": image_set}
        assert failed(s, **labels) == 1, image_set


def test_connection_refused_keeps_serving_and_counts_once_after_recovery(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    daemon_for: DaemonFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = daemon_for(make_config(aws={"max_attempts": 2, "connect_timeout_seconds": 1}))
    wait_for(lambda: value(daemon_samples(daemon), "healthimaging_up", **DS) == 1)
    port, backend = emulator.port, emulator.backend
    emulator.stop()
    backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")  # while unreachable
    wait_for(lambda: value(daemon_samples(daemon), "healthimaging_up", **DS) == 0)
    wait_for(lambda: (errors(daemon_samples(daemon), "network_error") or 0) >= 1)
    status, _, body = fetch(daemon.url + "/metrics")
    assert status == 200
    assert f'healthimaging_image_set_versions{{datastore_id="{DEMO_DATASTORE}"'.encode() in body
    s = daemon_samples(daemon)
    assert value(s, "healthimaging_image_set_versions", **IS) == 4
    assert (attempts(s, "network_error") or 0) >= 2
    assert "Could not connect to the endpoint URL" in caplog.text
    # The same port, the same data (and what changed meanwhile).
    # dataset=None: with backend= the default dataset would replace the data with the demo's.
    with EmulatorServer(port=port, dataset=None, backend=backend):
        backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "UPDATED", forced=True)
        wait_for(lambda: value(daemon_samples(daemon), "healthimaging_up", **DS) == 1)
        wait_for(
            lambda: value(daemon_samples(daemon), "healthimaging_image_set_versions", **IS) == 6
        )
        wait_polls(daemon, 2)
        s = daemon_samples(daemon)
        assert failed(s) == 1
        assert value(s, "healthimaging_forced_versions_total", **IS) == 1


def _demo_with_versions(versions: list[dict[str, Any]]) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(demo_path().read_text())
    raw = copy.deepcopy(raw)
    image_set = next(
        i for i in raw["datastores"][0]["imageSets"] if i["imageSetId"] == DEMO_IMAGE_SET
    )
    image_set["versions"] = versions
    return raw


def test_a_version_list_that_shrinks_and_grows_back_counts_nothing_twice(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    full: list[dict[str, Any]] = yaml.safe_load(demo_path().read_text())["datastores"][0][
        "imageSets"
    ][0]["versions"]
    assert [v["versionId"] for v in full] == ["1", "2", "3", "4"]
    service = service_for(make_config())
    assert service.poll().ok
    emulator.backend.load_dataset(_demo_with_versions(full[:2]))
    assert service.poll().ok
    s = samples_of(service)
    assert value(s, "healthimaging_image_set_versions", **IS) == 2
    assert "2 versions left the list" in caplog.text
    assert failed(s) is None
    # Back again, with version 3 now UPDATE_FAILED and a new version 5 COPY_FAILED.
    grown = copy.deepcopy(full)
    grown[2]["ImageSetWorkflowStatus"] = "UPDATE_FAILED"
    grown.append({**full[3], "versionId": "5", "ImageSetWorkflowStatus": "COPY_FAILED"})
    for _ in range(2):  # the second round: shrink and grow back the same list
        emulator.backend.load_dataset(_demo_with_versions(full[:1]))
        assert service.poll().ok
        emulator.backend.load_dataset(_demo_with_versions(grown))
        assert service.poll().ok
        s = samples_of(service)
        assert value(s, "healthimaging_image_set_versions", **IS) == 5
        assert failed(s, "COPY_FAILED") == 1  # version 5 only; version 2 came back unchanged
        assert failed(s, "UPDATE_FAILED") == 1  # version 3's transition
        new = value(s, "healthimaging_new_versions_total", **DS, workflow_status="COPY_FAILED")
        assert new == 1
        assert value(s, "healthimaging_new_versions_total", **DS, workflow_status="UPDATED") is None


def test_a_full_disk_keeps_serving_then_counts_the_missed_events_once(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    daemon_for: DaemonFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    daemon = daemon_for(make_config())
    wait_for(lambda: fetch(daemon.url + "/-/ready")[0] == 200)
    wait_for(lambda: value(daemon_samples(daemon), "healthimaging_up", **DS) == 1)
    store = daemon.service.store
    with store._lock:  # the poll thread's own connection: really full, not a fake
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")
    for _ in range(100):  # a snapshot that needs pages the file may not grow
        emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")
    wait_for(lambda: value(daemon_samples(daemon), "healthimaging_exporter_state_writable") == 0)
    status, _, body = fetch(daemon.url + "/-/healthy")
    assert status == 200
    assert body == b"Healthy, but the snapshot store cannot be written; serving the last metrics\n"
    s = daemon_samples(daemon)
    assert (value(s, "healthimaging_exporter_state_write_errors_total") or 0) > 0
    assert value(s, "healthimaging_image_set_versions", **IS) == 4  # the last durable state
    assert failed(s) is None
    assert value(s, "healthimaging_up", **DS) == 0
    assert (errors(s, "state_error") or 0) >= 1
    assert "database or disk is full" in caplog.text
    assert "serving the last metrics until writes succeed again" in caplog.text
    status, _, _ = fetch(daemon.url + "/metrics")
    assert status == 200
    with store._lock:
        store._db.execute("PRAGMA max_page_count = 1073741823")
    wait_for(lambda: failed(daemon_samples(daemon)) == 100)
    s = daemon_samples(daemon)
    assert value(s, "healthimaging_exporter_state_writable") == 1
    assert value(s, "healthimaging_image_set_versions", **IS) == 104
    assert fetch(daemon.url + "/-/healthy")[2] == b"Healthy\n"
    assert "state writes succeed again" in caplog.text
    wait_polls(daemon, 2)
    s = daemon_samples(daemon)
    assert failed(s) == 100
    assert value(s, "healthimaging_up", **DS) == 1
    with store._lock:
        assert store.check_integrity() == "ok"
        stored = store._db.execute(
            "SELECT value FROM counters WHERE family = 'failed_versions' AND image_set_id = ?",
            (DEMO_IMAGE_SET,),
        ).fetchone()
    assert stored == (100.0,)


def test_sigterm_mid_cycle_exits_promptly_and_what_was_committed_is_consistent(
    emulator: EmulatorServer, tmp_path: Path, service_for: ServiceFactory
) -> None:
    ids = [emulator.backend.create_image_set(DEMO_DATASTORE) for _ in range(12)]
    raw: dict[str, Any] = {
        "aws": {"endpoint_url": emulator.url, "max_attempts": 1},
        "poll": {"interval_seconds": 60, "concurrency": 1, "timeout_seconds": 300},
        "datastores": [{"datastore_id": DEMO_DATASTORE, "image_sets": ids}],
        "state": {"path": str(tmp_path / "state.db")},
        "web": {"listen_address": "127.0.0.1:0"},
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    baseline = subprocess.run(
        [EXPORTER, "--config", str(config), "--once"], capture_output=True, timeout=60
    )
    assert baseline.returncode == 0, baseline.stderr.decode()
    for image_set in ids:
        emulator.backend.add_version(DEMO_DATASTORE, image_set, "COPY_FAILED")
    emulator.backend.set_faults(Faults(latency_seconds=2.0))
    log = tmp_path / "daemon.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [EXPORTER, "--config", str(config)], stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        wait_for(lambda: "listening on" in log.read_text())
        # Two or three image sets are through: the cycle is in its middle.
        wait_for(lambda: log.read_text().count("is COPY_FAILED") >= 2, timeout=20)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, log.read_text()
        stopped_in = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert stopped_in < 10, f"exited {stopped_in:.1f}s after SIGTERM"
    assert "image sets not polled" in text and text.rstrip().endswith("stopped"), text
    assert "Traceback" not in text
    committed = text.count("is COPY_FAILED")
    assert 2 <= committed < len(ids), text

    db = sqlite3.connect(tmp_path / "state.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    emulator.backend.set_faults(Faults())
    service = service_for(parse_config(raw, "test config"))
    s = samples_of(service)  # what the store holds, before any poll
    counted = [failed(s, datastore_id=DEMO_DATASTORE, image_set_id=i) for i in ids]
    assert all(c in (None, 1.0) for c in counted), counted
    assert sum(c or 0 for c in counted) == committed
    assert service.poll().ok
    s = samples_of(service)
    assert [failed(s, datastore_id=DEMO_DATASTORE, image_set_id=i) for i in ids] == [1.0] * 12
    assert value(s, "healthimaging_new_versions_total", **DS, workflow_status="COPY_FAILED") == 12


def test_sigterm_does_not_wait_for_a_stuck_aws_call(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A call hanging for 15 s delays the stop by its read timeout at most, not by the hang."""
    # The call is waited for (its thread is joined, nothing is abandoned) up to its read
    # timeout; before the runtime owned every thread this test ran with a 60 s read timeout
    # and the process left the call behind with os._exit.
    raw: dict[str, Any] = {
        "aws": {"endpoint_url": emulator.url, "max_attempts": 1, "read_timeout_seconds": 3},
        "poll": {"interval_seconds": 60, "concurrency": 2},
        "datastores": [{"datastore_id": DEMO_DATASTORE, "image_sets": [DEMO_IMAGE_SET]}],
        "state": {"path": str(tmp_path / "state.db")},
        "web": {"listen_address": "127.0.0.1:0"},
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    emulator.backend.set_faults(Faults(latency_seconds=15.0))
    log = tmp_path / "daemon.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [EXPORTER, "--config", str(config)], stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        wait_for(lambda: "listening on" in log.read_text())
        time.sleep(1.0)  # the first call is in flight, and will be for 14 more seconds
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, log.read_text()
        assert time.monotonic() - signalled < 5, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
        emulator.backend.set_faults(Faults())
    text = log.read_text()
    assert text.rstrip().endswith("stopped") and "Traceback" not in text, text
