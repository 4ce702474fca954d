"""The diff: baseline, new versions, transitions, shrinking lists; properties over any history."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.diff import diff_deleted, diff_versions
from exporter.model import (
    FAILED_VERSIONS,
    FAILURE_STATUSES,
    FORCED_VERSIONS,
    IMAGE_SETS_DELETED,
    NEW_VERSIONS,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    Version,
)

KEY = ImageSetKey("d" * 32, "i" * 32)


def v(version_id: int, status: str, forced: bool = False) -> Version:
    return Version(version_id, status, "ACTIVE", forced=forced)


def test_first_sight_is_a_baseline_that_counts_nothing() -> None:
    change = diff_versions(KEY, None, (v(2, "COPY_FAILED", True), v(1, "COPIED")))
    assert change.baseline
    assert change.increments == {}
    assert change.snapshot.versions[0].version_id == 2


def test_new_failed_forced_version_counts_everywhere() -> None:
    before = ImageSetSnapshot(KEY, (v(1, "COPIED"),))
    change = diff_versions(KEY, before, (v(2, "COPY_FAILED", True), v(1, "COPIED")))
    assert change.increments == {
        CounterKey(NEW_VERSIONS, KEY.datastore_id, "", "COPY_FAILED"): 1,
        CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED"): 1,
        CounterKey(FORCED_VERSIONS, *KEY): 1,
    }
    assert [x.version_id for x in change.failed] == [2]


def test_unknown_status_passes_through() -> None:
    before = ImageSetSnapshot(KEY, (v(1, "COPIED"),))
    change = diff_versions(KEY, before, (v(2, "SOMETHING_NEW"), v(1, "COPIED")))
    assert change.increments == {CounterKey(NEW_VERSIONS, KEY.datastore_id, "", "SOMETHING_NEW"): 1}


def test_shrinking_list_then_regrowing_counts_nothing_twice() -> None:
    full = (v(3, "COPY_FAILED"), v(2, "UPDATED"), v(1, "COPIED"))
    start = diff_versions(KEY, None, full).snapshot
    shrunk = diff_versions(KEY, start, full[1:])
    assert shrunk.vanished == 1 and shrunk.increments == {}
    regrown = diff_versions(KEY, shrunk.snapshot, full)
    assert regrown.increments == {}


def test_deletion_is_recorded_once() -> None:
    start = diff_versions(KEY, None, (v(1, "COPIED"),)).snapshot
    gone = diff_deleted(start, 100.0)
    assert gone is not None and gone.snapshot.is_deleted
    assert gone.increments == {CounterKey(IMAGE_SETS_DELETED, KEY.datastore_id): 1}
    assert diff_deleted(gone.snapshot, 200.0) is None
    assert diff_deleted(None, 200.0) is None


STATUSES = [
    "CREATED",
    "COPIED",
    "COPYING",
    "COPY_FAILED",
    "UPDATED",
    "UPDATE_FAILED",
    "IMPORTED",
    "IMPORT_FAILED",
]
version_lists = st.lists(
    st.dictionaries(
        st.integers(1, 8), st.tuples(st.sampled_from(STATUSES), st.booleans()), max_size=8
    ),
    min_size=1,
    max_size=12,
)


def as_list(entries: dict[int, tuple[str, bool]]) -> tuple[Version, ...]:
    return tuple(
        v(i, status, forced) for i, (status, forced) in sorted(entries.items(), reverse=True)
    )


def expected_counts(
    history: list[dict[int, tuple[str, bool]]],
) -> tuple[Counter[str], int, Counter[str]]:
    """Reference model: per-version timelines; count entries into failure and into forced."""
    timelines: dict[int, list[tuple[str, bool]]] = {}
    baseline_ids = set(history[0])
    for entries in history:
        for version_id, state in entries.items():
            timelines.setdefault(version_id, []).append(state)
    failures: Counter[str] = Counter()
    new: Counter[str] = Counter()
    forced = 0
    for version_id, timeline in timelines.items():
        previous: tuple[str, bool] | None = None
        if version_id in baseline_ids:
            previous, timeline = timeline[0], timeline[1:]
        else:
            new[timeline[0][0]] += 1
        for status, is_forced in timeline:
            if status in FAILURE_STATUSES and (previous is None or previous[0] != status):
                failures[status] += 1
            if is_forced and (previous is None or not previous[1]):
                forced += 1
            previous = (status, is_forced)
    return failures, forced, new


@settings(max_examples=400, deadline=None)
@given(version_lists)
def test_counters_equal_transitions_after_the_baseline(
    history: list[dict[int, tuple[str, bool]]],
) -> None:
    snapshot: ImageSetSnapshot | None = None
    totals: Counter[CounterKey] = Counter()
    for entries in history:
        change = diff_versions(KEY, snapshot, as_list(entries))
        totals.update(change.increments)
        snapshot = change.snapshot
        # Re-applying the same list changes nothing.
        again = diff_versions(KEY, snapshot, as_list(entries))
        assert again.increments == {}
        assert again.snapshot == snapshot
    failures, forced, new = expected_counts(history)
    got_failures = Counter(
        {k.workflow_status: n for k, n in totals.items() if k.family == FAILED_VERSIONS}
    )
    got_new = Counter({k.workflow_status: n for k, n in totals.items() if k.family == NEW_VERSIONS})
    assert got_failures == +failures
    assert totals[CounterKey(FORCED_VERSIONS, *KEY)] == forced
    assert got_new == +new


def test_duplicate_version_ids_in_an_unchanged_answer_count_nothing_again() -> None:
    # The hostile tester's case: five healthy versions, each listed twice with two statuses.
    answer = tuple(x for i in range(5, 0, -1) for x in (v(i, "COPIED"), v(i, "COPY_FAILED")))
    start = diff_versions(KEY, None, answer).snapshot
    assert [x.version_id for x in start.versions] == [5, 4, 3, 2, 1]
    for _ in range(3):
        change = diff_versions(KEY, start, answer)
        assert change.increments == {}
        assert change.snapshot == start
    # The same duplicates in another order are the same answer.
    assert diff_versions(KEY, start, answer[::-1]).increments == {}


def test_a_duplicate_in_a_failure_status_wins_and_counts_once() -> None:
    start = diff_versions(KEY, None, (v(1, "COPIED"),)).snapshot
    answer = (v(2, "COPIED"), v(2, "COPY_FAILED"), v(1, "COPIED"))
    first = diff_versions(KEY, start, answer)
    assert [(x.version_id, x.workflow_status) for x in first.snapshot.versions] == [
        (2, "COPY_FAILED"),
        (1, "COPIED"),
    ]
    assert first.increments[CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED")] == 1
    assert diff_versions(KEY, first.snapshot, answer[::-1]).increments == {}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 5), st.sampled_from(STATUSES), st.booleans()), max_size=12)
)
def test_any_answer_with_duplicates_counts_nothing_when_polled_again_in_any_order(
    entries: list[tuple[int, str, bool]],
) -> None:
    answer = tuple(v(i, status, forced) for i, status, forced in entries)
    snapshot = diff_versions(KEY, ImageSetSnapshot(KEY, ()), answer).snapshot
    assert len({x.version_id for x in snapshot.versions}) == len(snapshot.versions)
    for order in (answer, answer[::-1], tuple(sorted(answer, key=repr))):
        again = diff_versions(KEY, snapshot, order)
        assert again.increments == {} and again.snapshot == snapshot
