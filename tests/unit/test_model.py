"""Plain data of the pipeline: the event timestamps that ride along with counter increments."""

from __future__ import annotations

from exporter.model import (
    FAILED_VERSIONS,
    FORCED_VERSIONS,
    LAST_FAILURE,
    LAST_FORCED,
    NEW_VERSIONS,
    CounterKey,
    ImageSetKey,
    stamp_events,
)

KEY = ImageSetKey("d" * 32, "i" * 32)


def test_counted_failures_and_forced_versions_are_stamped_with_the_time_counted() -> None:
    increments = {
        CounterKey(NEW_VERSIONS, KEY.datastore_id, "", "COPY_FAILED"): 2,
        CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED"): 2,
        CounterKey(FAILED_VERSIONS, *KEY, "UPDATE_FAILED"): 1,
        CounterKey(FORCED_VERSIONS, *KEY): 1,
    }
    stamped = stamp_events(increments, 1234.5)
    assert stamped == {
        **increments,
        CounterKey(LAST_FAILURE, *KEY, "COPY_FAILED"): 1234.5,
        CounterKey(LAST_FAILURE, *KEY, "UPDATE_FAILED"): 1234.5,
        CounterKey(LAST_FORCED, *KEY): 1234.5,
    }


def test_a_baseline_or_a_zero_increment_sets_no_timestamp() -> None:
    assert stamp_events({}, 1.0) == {}
    zero = {CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED"): 0}
    assert stamp_events(zero, 1.0) == zero
