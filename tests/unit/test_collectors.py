"""Collectors: stuck workflows, failures by reason and the last failure of an image set."""

from __future__ import annotations

from types import MappingProxyType

from prometheus_client.parser import text_string_to_metric_families

from exporter.config import PerImageSet
from exporter.metrics.collectors import DatastoreCollector, EventCollector, ImageSetCollector
from exporter.metrics.families import chunks
from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import (
    FAILURES,
    IN_PROGRESS_STATUSES,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    Version,
)
from tests.helpers import fleet_view

DS = "d" * 32
COPYING = ImageSetKey(DS, "a" * 32)
FAILED = ImageSetKey(DS, "b" * 32)
QUIET = ImageSetKey(DS, "c" * 32)
GONE = ImageSetKey(DS, "e" * 32)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def view(mode: PerImageSet, counters: dict[CounterKey, float] | None = None) -> FleetView:
    image_sets = {
        COPYING: ImageSetSnapshot(
            COPYING,
            (
                Version(3, "COPYING", "LOCKED", changed_at=300.0),
                Version(2, "COPYING", "LOCKED", changed_at=200.0),
                Version(1, "IMPORTED", "ACTIVE"),
            ),
        ),
        FAILED: ImageSetSnapshot(
            FAILED,
            (
                Version(4, "UPDATING", "LOCKED", changed_at=150.0),
                Version(3, "UPDATE_FAILED", "ACTIVE", reason="NOT_COUNTED_YET"),
                Version(2, "COPY_FAILED", "ACTIVE", reason="INVALID_REQUEST"),
                Version(1, "IMPORTED", "ACTIVE"),
            ),
        ),
        QUIET: ImageSetSnapshot(QUIET, (Version(1, "IMPORTING", "ACTIVE"),)),  # no timestamp
        GONE: ImageSetSnapshot(
            GONE, (), (Version(1, "COPYING", "ACTIVE", changed_at=1.0),), deleted_at=9.0
        ),
    }
    return fleet_view(image_sets, counters or {}, {DS: DatastoreView(DS, mode, True, 12.5)})


def samples(fleet: FleetView) -> Samples:
    families = [
        f
        for c in (ImageSetCollector(), EventCollector(), DatastoreCollector())
        for f in c.collect(fleet)
    ]
    text = b"".join(chunks(families, openmetrics=False)).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def series(got: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in got.items() if n == name}


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def test_data_store_in_progress_counts_and_oldest_start() -> None:
    got = samples(view("none"))
    counts = series(got, "healthimaging_datastore_in_progress_versions")
    assert len(counts) == len(IN_PROGRESS_STATUSES)
    assert counts[labels(datastore_id=DS, workflow_status="COPYING")] == 2  # the deleted one: no
    assert counts[labels(datastore_id=DS, workflow_status="UPDATING")] == 1
    assert counts[labels(datastore_id=DS, workflow_status="IMPORTING")] == 1
    assert counts[labels(datastore_id=DS, workflow_status="DELETING")] == 0
    oldest = series(got, "healthimaging_datastore_oldest_in_progress_version_timestamp_seconds")
    # A timestamp, not an age: time() - x in PromQL. IMPORTING has no known start: absent.
    assert oldest == {
        labels(datastore_id=DS, workflow_status="COPYING"): 200.0,
        labels(datastore_id=DS, workflow_status="UPDATING"): 150.0,
    }
    assert not series(got, "healthimaging_image_set_in_progress_since_timestamp_seconds")
    assert not series(got, "healthimaging_image_set_last_failure_info")


def test_per_image_set_in_progress_since_in_all_and_failures_only() -> None:
    for mode in ("all", "failures_only"):
        got = series(
            samples(view(mode)), "healthimaging_image_set_in_progress_since_timestamp_seconds"
        )
        assert got == {
            labels(datastore_id=DS, image_set_id="a" * 32, workflow_status="COPYING"): 200.0,
            labels(datastore_id=DS, image_set_id="b" * 32, workflow_status="UPDATING"): 150.0,
        }, mode


def test_last_failure_info_names_the_latest_failure_with_a_bounded_reason() -> None:
    counted = CounterKey(FAILURES, DS, "", "COPY_FAILED", "INVALID_REQUEST")
    got = samples(view("failures_only", {counted: 2.0}))
    info = series(got, "healthimaging_image_set_last_failure_info")
    # The latest failure is version 3; its code was never counted but the cap has room.
    assert info == {
        labels(
            datastore_id=DS,
            image_set_id="b" * 32,
            workflow_status="UPDATE_FAILED",
            reason="NOT_COUNTED_YET",
        ): 1.0
    }
    failures = series(got, "healthimaging_failures_total")
    assert failures == {
        labels(datastore_id=DS, workflow_status="COPY_FAILED", reason="INVALID_REQUEST"): 2.0
    }


def test_last_failure_reason_beyond_the_cap_is_other() -> None:
    full = {CounterKey(FAILURES, DS, "", "COPY_FAILED", f"CODE_{n:02d}"): 1.0 for n in range(20)}
    info = series(samples(view("all", full)), "healthimaging_image_set_last_failure_info")
    assert [dict(k)["reason"] for k in info] == ["other"]


def test_data_store_status_is_one_for_the_current_and_zero_for_the_others() -> None:
    base = view("all")
    ds = DatastoreView(
        DS, "all", False, None, region="eu-west-1", name="radiology-prod", status="DELETING"
    )
    got = samples(FleetView(base.image_sets, base.counters, MappingProxyType({DS: ds})))
    assert series(got, "healthimaging_datastore_status") == {
        labels(datastore_id=DS, datastore_status="ACTIVE"): 0,
        labels(datastore_id=DS, datastore_status="CREATE_FAILED"): 0,
        labels(datastore_id=DS, datastore_status="CREATING"): 0,
        labels(datastore_id=DS, datastore_status="DELETED"): 0,
        labels(datastore_id=DS, datastore_status="DELETING"): 1,
    }
    assert series(got, "healthimaging_datastore_info") == {
        labels(datastore_id=DS, region="eu-west-1", datastore_name="radiology-prod"): 1
    }


def test_an_unknown_status_is_a_sixth_series_and_no_status_means_none() -> None:
    base = view("all")
    ds = DatastoreView(DS, "all", False, None, region="eu-west-1", name="x", status="ARCHIVED")
    got = samples(FleetView(base.image_sets, base.counters, MappingProxyType({DS: ds})))
    status = series(got, "healthimaging_datastore_status")
    assert len(status) == 6 and status[labels(datastore_id=DS, datastore_status="ARCHIVED")] == 1
    assert sum(status.values()) == 1
    assert series(got, "healthimaging_datastore_info") == {
        labels(datastore_id=DS, region="eu-west-1", datastore_name="x"): 1
    }
    unread = DatastoreView(DS, "all", True, None, region="eu-west-1")
    got = samples(FleetView(base.image_sets, base.counters, MappingProxyType({DS: unread})))
    assert series(got, "healthimaging_datastore_status") == {}
    # before GetDatastore answered: the region alone, as before
    assert series(got, "healthimaging_datastore_info") == {
        labels(datastore_id=DS, region="eu-west-1"): 1
    }
