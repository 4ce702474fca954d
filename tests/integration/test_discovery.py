"""`image_sets: all`: backfill, change detection by search, new image sets, shards, no PHI out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.config import Config
from exporter.emulator import EmulatorServer
from exporter.service import ExporterService
from tests.helpers import run_backfill
from tests.integration.conftest import ConfigFactory
from tests.integration.test_poll import samples_of, value

ServiceFactory = Callable[[Config], ExporterService]


def backfilled(service: ExporterService, datastore_id: str) -> ExporterService:
    """Run the first cycle, the backfill's pages, and one steady cycle."""
    service.poll()
    run_backfill(service, datastore_id)
    service.poll()
    return service


@pytest.fixture
def fleet(emulator: EmulatorServer) -> tuple[str, list[str]]:
    """A data store with 120 synthetic image sets."""
    datastore = emulator.backend.create_datastore(name="fleet")
    return datastore, emulator.backend.generate(datastore, 120, seed=5)


def discovery_config(make_config: ConfigFactory, datastore: str, **sections: object) -> Config:
    """Discovery of a whole data store, with a budget loopback can take (tests, not AWS)."""
    sections.setdefault(
        "aws", {"rate_limits": {"ListImageSetVersions": 500, "SearchImageSets": 500}}
    )
    return make_config("all", datastore_id=datastore, **sections)


def test_backfill_baselines_everything_and_counts_nothing(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    fleet: tuple[str, list[str]],
) -> None:
    datastore, ids = fleet
    service = service_for(discovery_config(make_config, datastore))
    assert service.poll().ok  # the first cycle only starts the backfill
    assert service.is_ready()
    run_backfill(service, datastore)
    service.poll()
    s = samples_of(service)
    assert value(s, "healthimaging_datastore_image_sets", datastore_id=datastore) == len(ids)
    assert value(s, "healthimaging_datastore_backfill_complete", datastore_id=datastore) == 1
    assert value(s, "healthimaging_datastore_backfill_image_sets", datastore_id=datastore) == len(
        ids
    )
    assert not [k for k in s if k[0] == "healthimaging_failed_versions_total"]
    # failures_only is the default for whole data stores.
    shown = {dict(k[1])["image_set_id"] for k in s if k[0] == "healthimaging_image_set_versions"}
    assert shown and shown < set(ids)


def test_steady_state_lists_only_what_changed(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    fleet: tuple[str, list[str]],
) -> None:
    datastore, ids = fleet
    service = backfilled(service_for(discovery_config(make_config, datastore)), datastore)
    emulator.backend.add_version(datastore, ids[7], "COPY_FAILED")
    emulator.backend.add_version(datastore, ids[9], "UPDATED", forced=True)
    emulator.backend.reset_request_counts()
    assert service.poll().ok
    counts = emulator.backend.request_counts()
    # Two changed image sets, plus this cycle's share of the daily reconciliation (1 of 120),
    # unless that share is one of the two.
    assert counts.get("ListImageSetVersions") in (2, 3)
    assert counts.get("SearchImageSets", 0) >= 1
    s = samples_of(service)
    labels = {"datastore_id": datastore, "image_set_id": ids[7]}
    assert (
        value(s, "healthimaging_failed_versions_total", **labels, workflow_status="COPY_FAILED")
        == 1
    )
    assert (
        value(s, "healthimaging_forced_versions_total", datastore_id=datastore, image_set_id=ids[9])
        == 1
    )
    emulator.backend.reset_request_counts()
    service.poll()  # nothing changed: the overlap re-finds them, but they are not listed again
    assert emulator.backend.request_counts().get("ListImageSetVersions", 0) <= 1


def test_image_set_created_after_discovery_counts_in_full(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    fleet: tuple[str, list[str]],
) -> None:
    datastore, _ = fleet
    service = backfilled(service_for(discovery_config(make_config, datastore)), datastore)
    time.sleep(0.01)
    new = emulator.backend.create_image_set(datastore, workflow_status="IMPORT_FAILED")
    service.poll()
    s = samples_of(service)
    labels = {"datastore_id": datastore, "image_set_id": new}
    assert (
        value(s, "healthimaging_failed_versions_total", **labels, workflow_status="IMPORT_FAILED")
        == 1
    )
    assert (
        value(
            s,
            "healthimaging_new_versions_total",
            datastore_id=datastore,
            workflow_status="IMPORT_FAILED",
        )
        == 1
    )


def test_backfill_resumes_after_a_restart(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    fleet: tuple[str, list[str]],
) -> None:
    datastore, ids = fleet
    # A budget slow enough to stop the backfill halfway.
    config = discovery_config(
        make_config, datastore, aws={"rate_limits": {"ListImageSetVersions": 100}}
    )
    first = service_for(config)
    first.poll()
    run_backfill(
        first,
        datastore,
        until=lambda: first.poller.view().datastores[datastore].backfill_listed >= 50,
    )
    first.stop()
    first.close()
    listed_before = first.poller.view().datastores[datastore].backfill_listed
    assert 0 < listed_before < len(ids)
    second = backfilled(service_for(config), datastore)
    s = samples_of(second)
    assert value(s, "healthimaging_datastore_image_sets", datastore_id=datastore) == len(ids)
    assert not [
        k
        for k in s
        if k[0] in ("healthimaging_failed_versions_total", "healthimaging_new_versions_total")
    ]


def test_shards_partition_the_fleet(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    fleet: tuple[str, list[str]],
    tmp_path: Path,
) -> None:
    datastore, ids = fleet
    seen: list[set[str]] = []
    for shard in (0, 1):
        config = discovery_config(
            make_config,
            datastore,
            shard=shard,
            total_shards=2,
            state={"path": str(tmp_path / f"shard{shard}.db")},
            metrics={"per_image_set": "all"},
        )
        service = backfilled(service_for(config), datastore)
        s = samples_of(service)
        assert value(s, "healthimaging_exporter_shard_ordinal") == shard
        assert value(s, "healthimaging_exporter_total_shards") == 2
        budget = config.aws.rate_limits["ListImageSetVersions"] / 2  # split across the shards
        assert (
            value(
                s,
                "healthimaging_exporter_rate_budget_requests_per_second",
                operation="ListImageSetVersions",
            )
            == budget
        )
        seen.append(
            {dict(k[1])["image_set_id"] for k in s if k[0] == "healthimaging_image_set_versions"}
        )
    assert seen[0] | seen[1] == set(ids)
    assert not seen[0] & seen[1]
    assert seen[0] and seen[1]


CANARY_TAGS = {
    "DICOMPatientName": "CANARY^PATIENT^ZZQX",
    "DICOMPatientId": "CANARY-ID-77731",
    "DICOMPatientBirthDate": "19000101",
    "DICOMStudyDescription": "CANARY STUDY XJ9",
    "DICOMAccessionNumber": "CANARYACC5521",
}


def test_patient_data_never_reaches_metrics_logs_or_state(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    datastore = emulator.backend.create_datastore(name="phi")
    ids = [
        emulator.backend.create_image_set(
            datastore, workflow_status="COPY_FAILED", dicom_tags=CANARY_TAGS
        )
        for _ in range(3)
    ]
    caplog.set_level(logging.DEBUG)
    service = service_for(
        discovery_config(make_config, datastore, metrics={"per_image_set": "all"})
    )
    service.poll()
    run_backfill(service, datastore)
    emulator.backend.add_version(datastore, ids[0], "UPDATE_FAILED", message="failed")
    service.poll()
    service.close()
    exposition = service.exposition()
    state = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert ids[0].encode() in state and ids[0].encode() in exposition.text  # the checks can see
    logs = caplog.text
    for canary in CANARY_TAGS.values():
        assert canary not in logs
        for blob in (exposition.text, exposition.openmetrics, state):
            assert canary.encode() not in blob


def test_long_explicit_lists_use_change_detection(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: ServiceFactory,
    fleet: tuple[str, list[str]],
) -> None:
    datastore, ids = fleet
    chosen = ids[:10]
    config = make_config(
        chosen,
        datastore_id=datastore,
        discovery={"list_threshold": 5, "reconcile_seconds": 86400},
    )
    service = service_for(config)
    emulator.backend.reset_request_counts()
    assert service.poll().ok  # the first cycle lists every configured image set: the baseline
    assert emulator.backend.request_counts().get("ListImageSetVersions") == 10
    emulator.backend.add_version(datastore, chosen[3], "COPY_FAILED")
    emulator.backend.add_version(datastore, ids[50], "COPY_FAILED")  # not configured
    emulator.backend.reset_request_counts()
    assert service.poll().ok
    # The changed one, plus at most one for this cycle's share of the reconciliation.
    assert emulator.backend.request_counts().get("ListImageSetVersions") in (1, 2)
    s = samples_of(service)
    labels = {"datastore_id": datastore, "image_set_id": chosen[3]}
    assert (
        value(s, "healthimaging_failed_versions_total", **labels, workflow_status="COPY_FAILED")
        == 1
    )
    assert value(s, "healthimaging_datastore_image_sets", datastore_id=datastore) == 10
