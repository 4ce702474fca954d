"""Stuck workflows and failure reasons, over real HTTP: emulator admin API in, /metrics out."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.emulator import EmulatorServer
from exporter.emulator.testing import raw_request
from exporter.reasons import MAX_REASONS
from exporter.service import ExporterService
from tests.integration.conftest import DEMO_DATASTORE, DEMO_IMAGE_SET, ConfigFactory
from tests.integration.test_poll import Samples, samples_of, value

ServiceFactory = Callable[[Config], ExporterService]
IS = {"datastore_id": DEMO_DATASTORE, "image_set_id": DEMO_IMAGE_SET}
DS = {"datastore_id": DEMO_DATASTORE}
VERSIONS = f"/_emulator/datastores/{DEMO_DATASTORE}/imagesets/{DEMO_IMAGE_SET}/versions"
STARTED = 1_700_000_000.25


def admin(emulator: EmulatorServer, method: str, path: str, body: dict[str, Any]) -> Any:
    status, _, answer = raw_request(emulator.port, method, path, json.dumps(body), signed=False)
    assert status in (200, 201), answer
    return answer


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def test_stuck_copy_is_exported_as_the_time_it_started_and_survives_a_restart(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    config = make_config(metrics={"per_image_set": "failures_only"})
    service = service_for(config)
    assert service.poll().ok
    version = admin(
        emulator, "POST", VERSIONS, {"workflowStatus": "COPYING", "updatedAt": STARTED}
    )["versionId"]
    assert service.poll().ok

    def check_stuck(s: Samples) -> None:
        since = "healthimaging_image_set_in_progress_since_timestamp_seconds"
        assert value(s, since, **IS, workflow_status="COPYING") == STARTED
        oldest = "healthimaging_datastore_oldest_in_progress_version_timestamp_seconds"
        assert value(s, oldest, **DS, workflow_status="COPYING") == STARTED
        count = "healthimaging_datastore_in_progress_versions"
        assert value(s, count, **DS, workflow_status="COPYING") == 1
        assert value(s, count, **DS, workflow_status="UPDATING") == 0

    check_stuck(samples_of(service))
    service.close()
    restarted = service_for(config)
    check_stuck(samples_of(restarted))  # from the state file, before any poll

    admin(emulator, "PUT", f"{VERSIONS}/{version}", {"workflowStatus": "COPIED"})
    assert restarted.poll().ok
    s = samples_of(restarted)
    assert not series(s, "healthimaging_image_set_in_progress_since_timestamp_seconds")
    assert not series(s, "healthimaging_datastore_oldest_in_progress_version_timestamp_seconds")
    assert (
        value(s, "healthimaging_datastore_in_progress_versions", **DS, workflow_status="COPYING")
        == 0
    )


def test_admin_api_refuses_a_timestamp_that_is_not_a_number(emulator: EmulatorServer) -> None:
    body = json.dumps({"workflowStatus": "COPYING", "updatedAt": "yesterday"})
    status, _, answer = raw_request(emulator.port, "POST", VERSIONS, body, signed=False)
    assert status == 400 and "updatedAt" in answer["message"]


def test_failure_reason_is_counted_and_nothing_else_of_the_message_leaves(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    service = service_for(make_config(metrics={"per_image_set": "failures_only"}))
    assert service.poll().ok
    s = samples_of(service)
    # The seed's old INVALID_REQUEST failure is baseline: no reason is counted for it.
    assert not series(s, "healthimaging_failures_total")
    secret = "DOE^JANE-0042"
    admin(
        emulator,
        "POST",
        VERSIONS,
        {"workflowStatus": "COPY_FAILED", "message": f"INVALID_REQUEST: series of {secret}"},
    )
    admin(
        emulator,
        "POST",
        VERSIONS,
        {"workflowStatus": "UPDATE_FAILED", "message": f"could not update {secret}: sorry"},
    )
    assert service.poll().ok
    s = samples_of(service)
    failures = series(s, "healthimaging_failures_total")
    assert failures == {
        frozenset({**DS, "workflow_status": "COPY_FAILED", "reason": "INVALID_REQUEST"}.items()): 1,
        frozenset({**DS, "workflow_status": "UPDATE_FAILED", "reason": "other"}.items()): 1,
    }
    # Counted exactly when the failed-versions counter is.
    assert sum(failures.values()) == sum(series(s, "healthimaging_failed_versions_total").values())
    info = series(s, "healthimaging_image_set_last_failure_info")
    assert info == {
        frozenset({**IS, "workflow_status": "UPDATE_FAILED", "reason": "other"}.items()): 1
    }
    assert secret not in service.exposition().text.decode()
    assert "is COPY_FAILED (reason INVALID_REQUEST)" in caplog.text
    assert secret not in caplog.text and "series of" not in caplog.text
    service.close()
    for stored in tmp_path.glob("state.db*"):
        assert secret.encode() not in stored.read_bytes(), stored.name
        assert b"series of" not in stored.read_bytes(), stored.name


def test_reason_cap_holds_across_a_restart(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    config = make_config()
    service = service_for(config)
    assert service.poll().ok
    for n in range(MAX_REASONS):
        body = {"workflowStatus": "COPY_FAILED", "message": f"CODE_{n:02d}: failed"}
        admin(emulator, "POST", VERSIONS, body)
    assert service.poll().ok
    service.close()
    restarted = service_for(config)
    for code in ("ONE_TOO_MANY", "CODE_05"):
        admin(emulator, "POST", VERSIONS, {"workflowStatus": "COPY_FAILED", "message": f"{code}:"})
    assert restarted.poll().ok
    failures = {
        dict(labels)["reason"]: v
        for labels, v in series(samples_of(restarted), "healthimaging_failures_total").items()
    }
    assert len(failures) == MAX_REASONS + 1
    assert failures["other"] == 1 and failures["CODE_05"] == 2 and "ONE_TOO_MANY" not in failures
