"""The one ingest path: diff -> store -> memory, with a real store in tmp_path; never raises."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.aws import ApiError
from exporter.execute import Listing
from exporter.ingest import Ingest, Ingested
from exporter.model import FAILED_VERSIONS, CounterKey, ImageSetKey, Version
from exporter.outcomes import Outcome
from exporter.plan import ListingHint
from exporter.state import FleetState
from exporter.store import DatastoreRecord
from tests.helpers import FullDisk, flat_counters

KEY = ImageSetKey("d" * 32, "i" * 32)
V1 = Version(1, "COPIED", "ACTIVE")
V2_FAILED = Version(2, "COPY_FAILED", "ACTIVE", reason="INVALID_REQUEST")
V3_FAILED = Version(3, "COPY_FAILED", "ACTIVE")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FullDisk]:
    store = FullDisk(str(tmp_path / "state.db"))
    yield store
    store.close()


def test_baseline_then_changes_are_counted_once(
    store: FullDisk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter")
    state = FleetState(store)
    ingest = Ingest(state, clock=lambda: 100.0)
    assert ingest.listing(Listing(KEY, (V1,)), None) == Ingested.CHANGED  # the baseline
    assert ingest.listing(Listing(KEY, (V1,)), None) == Ingested.UNCHANGED
    assert ingest.listing(Listing(KEY, (V3_FAILED, V2_FAILED, V1)), None) == Ingested.CHANGED
    assert state.counter(CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED")) == 2
    assert flat_counters(store.load())[CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED")] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # The reason code, never the free-text message; `other` when there is no code.
    assert f"image set {KEY[0]}/{KEY[1]}: version 3 is COPY_FAILED (reason other)" in warnings
    assert (
        f"image set {KEY[0]}/{KEY[1]}: version 2 is COPY_FAILED (reason INVALID_REQUEST)"
        in warnings
    )


def test_a_hint_records_the_search_time_and_a_new_image_set_counts_in_full(
    store: FullDisk,
) -> None:
    state = FleetState(store)
    state.save_record(DatastoreRecord(KEY.datastore_id, discovery_started=50.0))
    ingest = Ingest(state, clock=lambda: 100.0)
    result = ingest.listing(Listing(KEY, (V2_FAILED, V1)), ListingHint(70.0, created_at=60.0))
    assert result == Ingested.CHANGED
    snapshot = state.get(KEY)
    assert snapshot is not None and snapshot.seen_updated_at == 70.0
    assert state.counter(CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED")) == 1


def test_a_failed_write_is_a_state_error_and_memory_stays(store: FullDisk) -> None:
    state = FleetState(store)
    ingest = Ingest(state, clock=lambda: 100.0)
    ingest.listing(Listing(KEY, (V1,)), None)
    store.full = True
    assert ingest.listing(Listing(KEY, (V2_FAILED, V1)), None) == Outcome.STATE_ERROR
    assert not state.writable and state.write_failures == 1
    snapshot = state.get(KEY)
    assert snapshot is not None and snapshot.versions == (V1,)
    store.full = False
    assert ingest.listing(Listing(KEY, (V2_FAILED, V1)), None) == Ingested.CHANGED
    assert state.writable


def test_not_found_deletes_once_and_other_errors_are_their_outcome(store: FullDisk) -> None:
    state = FleetState(store)
    ingest = Ingest(state, clock=lambda: 100.0)
    ingest.listing(Listing(KEY, (V1,)), None)
    gone = Listing(KEY, error=ApiError(Outcome.NOT_FOUND, "ListImageSetVersions: not found"))
    assert ingest.listing(gone, None) == Ingested.DELETED
    assert ingest.listing(gone, None) == Ingested.DELETED  # already recorded
    snapshot = state.get(KEY)
    assert snapshot is not None and snapshot.is_deleted
    throttled = Listing(KEY, error=ApiError(Outcome.THROTTLED, "Rate exceeded"))
    assert ingest.listing(throttled, None) == Outcome.THROTTLED
    never_seen = ImageSetKey(KEY.datastore_id, "f" * 32)
    missing = Listing(never_seen, error=ApiError(Outcome.NOT_FOUND, "not found"))
    assert ingest.listing(missing, None) == Outcome.NOT_FOUND


def test_an_unexpected_exception_is_an_internal_error_in_one_line(
    store: FullDisk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    ingest = Ingest(FleetState(store), clock=lambda: 100.0)
    crashed = Listing(KEY, unexpected=ValueError("invalid literal for int(): '²'"))
    assert ingest.listing(crashed, None) == Outcome.INTERNAL_ERROR
    errors = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(errors) == 1 and errors[0].exc_info is None  # no traceback at info level
    assert errors[0].getMessage() == (
        f"image set {KEY[0]}/{KEY[1]}: internal error: ValueError: invalid literal for int(): '²'"
    )
    # A bug in the ingest itself (here: a snapshot that is not one) ends the same way.
    broken = Listing(KEY, versions=("not a version",))  # type: ignore[arg-type]
    assert ingest.listing(broken, None) == Outcome.INTERNAL_ERROR


def test_an_ordered_image_set_never_takes_an_older_listing_over_a_newer_one(
    store: FullDisk,
) -> None:
    """The event path and a cycle list one image set at once: the older answer is dropped.

    Applied over the newer one, it would take COPY_FAILED back to COPYING, and the next listing
    would count the failure a second time.
    """
    state = FleetState(store)
    ingest = Ingest(state, clock=lambda: 100.0)
    copying = Version(2, "COPYING", "LOCKED")
    failed = Version(2, "COPY_FAILED", "ACTIVE")
    assert ingest.listing(Listing(KEY, (V1,), started=1.0), None) == Ingested.CHANGED
    ingest.order(KEY, 5.0)  # the event path sends its listing at 5
    assert ingest.listing(Listing(KEY, (failed, V1), started=5.0), None) == Ingested.CHANGED
    # A cycle's listing sent at 4, answered late: dropped.
    assert ingest.listing(Listing(KEY, (copying, V1), started=4.0), None) == Ingested.UNCHANGED
    assert ingest.listing(Listing(KEY, (failed, V1), started=6.0), None) == Ingested.UNCHANGED
    assert state.counter(CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED")) == 1
    ingest.forget_order(before=10.0)  # unordered again: listings apply as they come
    assert ingest.listing(Listing(KEY, (copying, V1), started=4.0), None) == Ingested.CHANGED
