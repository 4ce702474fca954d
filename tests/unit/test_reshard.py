"""Reshards: a moved image set's first sight counts what changed after this process last saw."""

from __future__ import annotations

from exporter.diff import diff_versions
from exporter.model import FAILED_VERSIONS, NEW_VERSIONS, CounterKey, ImageSetKey, Version
from exporter.reshard import assignment_of, moved_baseline, note_assignment
from exporter.store import DatastoreRecord

DS = "d" * 32
KEY = ImageSetKey(DS, "i" * 32)
LAST_POLL = 1_000.0
OVERLAP = 60.0


def v(version_id: int, status: str, changed_at: float | None) -> Version:
    return Version(version_id, status, "ACTIVE", changed_at=changed_at)


def test_first_assignment_is_recorded_without_a_change() -> None:
    record = DatastoreRecord(DS, last_success=LAST_POLL)
    noted = note_assignment(record, assignment_of(0, 1), now=2_000.0)
    assert noted.shard_assignment == "0/1"
    assert noted.resharded_at is None and noted.watched_until is None
    assert note_assignment(noted, "0/1", now=3_000.0) is noted


def test_changed_assignment_keeps_when_and_the_last_complete_poll() -> None:
    record = DatastoreRecord(DS, last_success=LAST_POLL, shard_assignment="0/2")
    noted = note_assignment(record, assignment_of(0, 1), now=2_000.0)
    assert (noted.shard_assignment, noted.resharded_at, noted.watched_until) == (
        "0/1",
        2_000.0,
        LAST_POLL,
    )
    # Changed again before a complete poll: the older last poll stays the cutoff.
    again = note_assignment(noted, "0/3", now=2_500.0)
    assert (again.resharded_at, again.watched_until) == (2_500.0, LAST_POLL)


def test_process_that_never_completed_a_poll_baselines() -> None:
    record = DatastoreRecord(DS, shard_assignment="1/2")
    assert note_assignment(record, "0/1", now=5.0).watched_until is None


def test_no_reshard_means_a_plain_baseline() -> None:
    versions = (v(2, "COPY_FAILED", LAST_POLL + 500), v(1, "COPIED", 10.0))
    assert moved_baseline(KEY, versions, None, OVERLAP) is None


def test_all_versions_older_than_the_cutoff_is_a_plain_baseline() -> None:
    versions = (v(2, "COPY_FAILED", LAST_POLL - OVERLAP), v(1, "COPIED", 10.0))
    assert moved_baseline(KEY, versions, LAST_POLL, OVERLAP) is None


def test_failure_during_the_move_counts_once_and_old_ones_not_at_all() -> None:
    versions = (
        v(4, "COPY_FAILED", LAST_POLL + 30),  # failed while the image set moved
        v(3, "UPDATED", LAST_POLL - OVERLAP + 1),  # inside the overlap: counted too
        v(2, "COPY_FAILED", 500.0),  # an old failure: baseline
        v(1, "COPIED", None),  # no timestamp at all: taken as old
    )
    previous = moved_baseline(KEY, versions, LAST_POLL, OVERLAP)
    assert previous is not None
    assert [x.version_id for x in previous.versions] == [2, 1]
    assert all(x.changed_at is None for x in previous.versions)
    change = diff_versions(KEY, previous, versions)
    assert not change.baseline
    assert change.increments == {
        CounterKey(NEW_VERSIONS, DS, "", "COPY_FAILED"): 1,
        CounterKey(NEW_VERSIONS, DS, "", "UPDATED"): 1,
        CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED"): 1,
    }
    assert [x.version_id for x in change.failed] == [4]
    assert change.vanished == 0 and change.snapshot.removed == ()
    # What is kept is the listing without its transient fields.
    assert change.snapshot.versions == tuple(x.settled() for x in versions)
    assert [x.version_id for x in change.snapshot.versions] == [4, 3, 2, 1]
    assert all(x.changed_at is None for x in change.snapshot.versions)
    # The next poll of the same list counts nothing more.
    assert diff_versions(KEY, change.snapshot, versions).increments == {}


def test_a_new_shard_on_a_fresh_state_file_counts_the_last_moments() -> None:
    record = DatastoreRecord(DS)
    noted = note_assignment(record, assignment_of(1, 3), now=2_000.0, join_lookback=120.0)
    assert (noted.shard_assignment, noted.resharded_at, noted.watched_until) == (
        "1/3",
        2_000.0,
        1_880.0,
    )
    # Only a state file that never saw the data store joins this way: one that polled it keeps
    # the plain first-assignment rule (no change known).
    polled = DatastoreRecord(DS, last_success=LAST_POLL)
    assert note_assignment(polled, "1/3", now=2_000.0, join_lookback=120.0).watched_until is None
    # And without a lookback, a fresh state file is the first sight of the fleet: a baseline.
    assert note_assignment(record, "0/1", now=2_000.0).watched_until is None
