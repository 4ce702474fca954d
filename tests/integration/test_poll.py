"""The exporter polling the emulator over real HTTP: values, diffs, baseline, faults."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config
from exporter.emulator import EmulatorServer, Faults
from exporter.service import ExporterService
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET
from tests.integration.conftest import ConfigFactory

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ServiceFactory = Callable[[Config], ExporterService]


def samples_of(service: ExporterService) -> Samples:
    """Parse the current text exposition into {(name, labels): value}."""
    text = service.exposition().text.decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """Return one sample's value, or None if the series is absent."""
    return samples.get((name, frozenset(labels.items())))


IS = {"datastore_id": DEMO_DATASTORE, "image_set_id": DEMO_IMAGE_SET}


def test_documented_example_is_exported_exactly(
    make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    service = service_for(make_config())
    assert service.poll().ok
    s = samples_of(service)
    assert value(s, "healthimaging_image_set_versions", **IS) == 4
    for status, count in (("UPDATED", 2), ("COPY_FAILED", 1), ("COPIED", 1)):
        got = value(
            s, "healthimaging_image_set_versions_by_workflow_status", **IS, workflow_status=status
        )
        assert got == count, status
    by_status = [k for k in s if k[0] == "healthimaging_image_set_versions_by_workflow_status"]
    assert len(by_status) == 3
    assert value(s, "healthimaging_image_set_latest_version", **IS) == 4
    assert value(s, "healthimaging_image_set_forced_versions", **IS) == 0
    info = {
        **IS,
        "image_set_state": "ACTIVE",
        "workflow_status": "UPDATED",
        "is_primary": "unknown",
    }
    assert value(s, "healthimaging_image_set_info", **info) == 1
    assert value(s, "healthimaging_up", datastore_id=DEMO_DATASTORE) == 1
    # Baseline: the first sight of the history counts nothing.
    assert not [
        k
        for k in s
        if k[0] in ("healthimaging_failed_versions_total", "healthimaging_new_versions_total")
    ]


def test_new_copy_failed_version_is_counted_once_on_the_next_poll(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    service = service_for(make_config())
    service.poll()
    emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED", message="boom")
    service.poll()
    s = samples_of(service)
    failed = value(s, "healthimaging_failed_versions_total", **IS, workflow_status="COPY_FAILED")
    assert failed == 1
    new = value(
        s,
        "healthimaging_new_versions_total",
        datastore_id=DEMO_DATASTORE,
        workflow_status="COPY_FAILED",
    )
    assert new == 1
    assert value(s, "healthimaging_image_set_latest_version", **IS) == 5
    service.poll()  # nothing new: nothing more counted
    s = samples_of(service)
    assert value(s, "healthimaging_failed_versions_total", **IS, workflow_status="COPY_FAILED") == 1


def test_status_transition_of_an_existing_version_counts_as_a_failure(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    service = service_for(make_config())
    service.poll()
    emulator.backend.set_workflow_status(DEMO_DATASTORE, DEMO_IMAGE_SET, "3", "UPDATE_FAILED")
    service.poll()
    s = samples_of(service)
    assert (
        value(s, "healthimaging_failed_versions_total", **IS, workflow_status="UPDATE_FAILED") == 1
    )
    # A transition is not a new version.
    assert (
        value(
            s,
            "healthimaging_new_versions_total",
            datastore_id=DEMO_DATASTORE,
            workflow_status="UPDATE_FAILED",
        )
        is None
    )
    got = value(
        s, "healthimaging_image_set_versions_by_workflow_status", **IS, workflow_status="UPDATED"
    )
    assert got == 1


def test_forced_override_is_counted(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    service = service_for(make_config())
    service.poll()
    emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "UPDATED", forced=True)
    service.poll()
    s = samples_of(service)
    assert value(s, "healthimaging_forced_versions_total", **IS) == 1
    assert value(s, "healthimaging_image_set_forced_versions", **IS) == 1
    assert (
        value(s, "healthimaging_failed_versions_total", **IS, workflow_status="COPY_FAILED") is None
    )


def test_pagination_past_fifty_versions(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    image_set = emulator.backend.create_image_set(DEMO_DATASTORE)
    for _ in range(119):
        emulator.backend.add_version(DEMO_DATASTORE, image_set, "UPDATED")
    service = service_for(make_config([image_set]))
    emulator.backend.reset_request_counts()
    assert service.poll().ok
    s = samples_of(service)
    labels = {"datastore_id": DEMO_DATASTORE, "image_set_id": image_set}
    assert value(s, "healthimaging_image_set_versions", **labels) == 120
    assert value(s, "healthimaging_image_set_latest_version", **labels) == 120
    assert emulator.backend.request_counts().get("ListImageSetVersions") == 3  # 50 + 50 + 20


def test_baseline_counts_nothing_even_with_failures_in_history(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    image_set = emulator.backend.create_image_set(DEMO_DATASTORE, workflow_status="IMPORT_FAILED")
    emulator.backend.add_version(DEMO_DATASTORE, image_set, "COPY_FAILED", forced=True)
    service = service_for(make_config([image_set]))
    service.poll()
    s = samples_of(service)
    counters = [
        k
        for k in s
        if k[0].endswith("_total") and k[0].startswith("healthimaging_") and "exporter" not in k[0]
    ]
    # The import-job counters are exported at 0 from their baseline on (the demo has no jobs).
    assert [k for k in counters if not k[0].startswith("healthimaging_import_")] == []
    assert all(s[k] == 0 for k in counters)
    assert (
        value(
            s,
            "healthimaging_image_set_forced_versions",
            datastore_id=DEMO_DATASTORE,
            image_set_id=image_set,
        )
        == 1
    )


def test_throttling_and_server_errors_survive_with_retries(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    # Retries back off for seconds: give the cycle room past the 1 s test interval.
    service = service_for(make_config(poll={"concurrency": 1, "timeout_seconds": 60}))
    service.poll()
    emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")
    emulator.backend.set_faults(Faults(throttle_ratio=0.25, error_ratio=0.25, seed=3))
    op = "ListImageSetVersions"
    results = []
    for _ in range(15):  # until both kinds of fault have been met, within bounds
        results.append(service.poll())
        s = samples_of(service)
        throttled = value(
            s, "healthimaging_exporter_api_requests_total", operation=op, outcome="throttled"
        )
        errors = value(
            s, "healthimaging_exporter_api_requests_total", operation=op, outcome="server_error"
        )
        if throttled and errors:
            break
    emulator.backend.set_faults(Faults())
    assert throttled and errors, "the emulator injected no faults"
    assert all(r.ok for r in results), results
    assert value(s, "healthimaging_failed_versions_total", **IS, workflow_status="COPY_FAILED") == 1
    assert value(s, "healthimaging_up", datastore_id=DEMO_DATASTORE) == 1


def test_deleted_image_set_series_go_away(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    other = emulator.backend.create_image_set(DEMO_DATASTORE)
    service = service_for(make_config([DEMO_IMAGE_SET, other]))
    service.poll()
    emulator.backend.delete_image_set(DEMO_DATASTORE, other)
    result = service.poll()
    assert result.ok
    s = samples_of(service)
    assert (
        value(
            s, "healthimaging_image_set_versions", datastore_id=DEMO_DATASTORE, image_set_id=other
        )
        is None
    )
    assert value(s, "healthimaging_image_set_versions", **IS) == 4
    assert value(s, "healthimaging_image_sets_deleted_total", datastore_id=DEMO_DATASTORE) == 1
    service.poll()  # still gone: recorded once
    s = samples_of(service)
    assert value(s, "healthimaging_image_sets_deleted_total", datastore_id=DEMO_DATASTORE) == 1


def test_unknown_image_set_is_an_error_that_leaves_others_alone(
    make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    missing = "0" * 32
    service = service_for(make_config([DEMO_IMAGE_SET, missing]))
    result = service.poll()
    assert not result.ok and result.failed == 1
    s = samples_of(service)
    assert value(s, "healthimaging_image_set_versions", **IS) == 4
    assert value(s, "healthimaging_up", datastore_id=DEMO_DATASTORE) == 0
    assert (
        value(
            s,
            "healthimaging_exporter_poll_errors_total",
            datastore_id=DEMO_DATASTORE,
            reason="not_found",
        )
        == 1
    )


def test_access_denied_datastore_is_down_and_skips_its_other_calls(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    ids = [emulator.backend.create_image_set(DEMO_DATASTORE) for _ in range(6)]
    # The counts below are the version listings' (import jobs count their own denial).
    service = service_for(make_config(ids, poll={"concurrency": 1}, import_jobs={"enabled": False}))
    assert service.poll().ok
    emulator.backend.set_faults(Faults(access_denied_datastores=frozenset({DEMO_DATASTORE})))
    emulator.backend.reset_request_counts()
    result = service.poll()
    assert not result.ok
    s = samples_of(service)
    assert value(s, "healthimaging_up", datastore_id=DEMO_DATASTORE) == 0
    assert (
        value(
            s,
            "healthimaging_exporter_poll_errors_total",
            datastore_id=DEMO_DATASTORE,
            reason="access_denied",
        )
        == 1
    )
    assert emulator.backend.request_counts().get("ListImageSetVersions", 0) < 6
    # The snapshot is kept: series do not vanish because of a permissions problem.
    assert (
        value(
            s, "healthimaging_image_set_versions", datastore_id=DEMO_DATASTORE, image_set_id=ids[0]
        )
        == 1
    )


def test_malformed_response_is_an_error_then_recovers(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    # One malformed answer, to a version listing: import jobs are not watched here.
    service = service_for(make_config(import_jobs={"enabled": False}))
    service.poll()
    emulator.backend.set_faults(Faults(malformed_responses=1))
    result = service.poll()
    assert not result.ok
    s = samples_of(service)
    assert (
        value(
            s,
            "healthimaging_exporter_poll_errors_total",
            datastore_id=DEMO_DATASTORE,
            reason="malformed_response",
        )
        == 1
    )
    assert value(s, "healthimaging_image_set_versions", **IS) == 4
    assert service.poll().ok


def test_counters_continue_after_a_restart(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    config = make_config()
    first = service_for(config)
    first.poll()
    emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")
    first.poll()
    first.close()
    emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")  # while down
    second = service_for(config)
    assert second.is_ready()  # serving the persisted snapshot before its first poll
    s = samples_of(second)
    assert value(s, "healthimaging_failed_versions_total", **IS, workflow_status="COPY_FAILED") == 1
    second.poll()
    s = samples_of(second)
    assert value(s, "healthimaging_failed_versions_total", **IS, workflow_status="COPY_FAILED") == 2
