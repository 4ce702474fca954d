"""The SQLite snapshot store: round trips, atomic changes, migrations, bad files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exporter.facts import DatastoreTotals, ImageSetFacts, facts_of
from exporter.model import (
    FAILED_VERSIONS,
    FAILURES,
    LAST_FAILURE,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    Version,
)
from exporter.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DatastoreRecord,
    SnapshotStore,
    StoredBody,
    StoreError,
    encode_snapshot,
)
from tests.helpers import flat_counters

KEY = ImageSetKey("d" * 32, "i" * 32)
SNAP = ImageSetSnapshot(
    KEY,
    (
        Version(2, "COPY_FAILED", "ACTIVE", True, False),
        Version(1, "COPIED", "ACTIVE"),
    ),
    (Version(0, "IMPORTED", "ACTIVE"),),
)
FAILED = CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED")


def put(
    store: SnapshotStore,
    snapshot: ImageSetSnapshot,
    increments: dict[CounterKey, float],
    drop_counters: bool = False,
) -> ImageSetFacts | None:
    """Apply a snapshot with the facts the state layer derives from it."""
    return store.apply(snapshot, facts_of(snapshot), increments, drop_counters=drop_counters)


def old_file(path: Path | str, version: int) -> sqlite3.Connection:
    """Open a new state file as schema `version` left it (the migrations up to it applied)."""
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:version]:
        for statement in migration.split(";"):
            if statement.strip():
                db.execute(statement)
    db.execute(f"PRAGMA user_version = {version}")
    return db


def test_round_trip_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SnapshotStore(path)
    put(store, SNAP, {FAILED: 1})
    put(store, SNAP, {FAILED: 2})
    store.save_datastore(DatastoreRecord(KEY.datastore_id, last_success=10.0, cursor=5.0))
    store.close()
    reopened = SnapshotStore(path)
    state = reopened.load()
    assert reopened.read(KEY) == SNAP
    assert state.facts == {KEY: facts_of(SNAP)}  # failed: shown by failures_only
    assert state.totals[KEY.datastore_id].by_status == {"COPIED": 1, "COPY_FAILED": 1}
    assert flat_counters(state) == {FAILED: 3.0}
    assert state.datastores[KEY.datastore_id].cursor == 5.0
    assert reopened.check_integrity() == "ok"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


def test_deletion_drops_the_image_sets_counters(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s.db"))
    put(store, SNAP, {FAILED: 1})
    gone = ImageSetSnapshot(KEY, (), SNAP.versions, deleted_at=9.0)
    put(store, gone, {}, drop_counters=True)
    state = store.load()
    assert flat_counters(state) == {}
    assert state.facts == {}
    assert store.read(KEY) == gone
    assert state.totals[KEY.datastore_id] == DatastoreTotals(rows=1)  # walked, not tracked


def test_memory_store_needs_no_file() -> None:
    store = SnapshotStore(":memory:")
    put(store, SNAP, {FAILED: 1})
    assert flat_counters(store.load()) == {FAILED: 1.0}


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        SnapshotStore(str(tmp_path / "nope" / "state.db"))


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"state\.path"):
        SnapshotStore(str(path))


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SnapshotStore(str(path)).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this exporter"):
        SnapshotStore(str(path))


def test_unreadable_snapshot_row_is_rebaselined_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SnapshotStore(str(path))
    put(store, SNAP, {FAILED: 1})
    store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE image_sets SET versions = 'garbage'")
    db.commit()
    db.close()
    reopened = SnapshotStore(str(path))
    state = reopened.load()
    assert reopened.read(KEY) is None  # re-baselined by its next poll
    assert flat_counters(state) == {FAILED: 1.0}


def test_rows_with_the_old_timestamp_fields_still_load(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SnapshotStore(str(path)).close()
    db = sqlite3.connect(path)
    old = '{"v":[[2,"COPY_FAILED","ACTIVE",1,0,1.5,2.5,null]],"r":[]}'
    db.execute(
        "INSERT INTO image_sets (datastore_id, image_set_id, versions) VALUES (?, ?, ?)",
        (*KEY, old),
    )
    db.commit()
    db.close()
    snapshot = SnapshotStore(str(path)).read(KEY)
    assert snapshot is not None
    assert snapshot.versions == (Version(2, "COPY_FAILED", "ACTIVE", True, False),)


def test_in_progress_start_and_failure_reason_round_trip_and_others_stay_shared(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "state.db")
    store = SnapshotStore(path)
    copying = Version(3, "COPYING", "ACTIVE", changed_at=1_700_000_000.5)
    failed = Version(2, "COPY_FAILED", "ACTIVE", reason="INVALID_REQUEST")
    other = ImageSetKey("d" * 32, "j" * 32)
    put(store, ImageSetSnapshot(KEY, (copying, failed, Version(1, "COPIED", "ACTIVE"))), {})
    put(store, ImageSetSnapshot(other, (Version(1, "COPIED", "ACTIVE"),)), {})
    store.close()
    reopened = SnapshotStore(path)
    mine, theirs = reopened.read(KEY), reopened.read(other)
    assert mine is not None and theirs is not None
    assert mine.versions[:2] == (copying, failed)
    # The common version stays one shared object across image sets.
    assert mine.versions[2] is theirs.versions[0]
    assert reopened.load().facts[KEY].in_progress == (("COPYING", 1_700_000_000.5),)
    row = sqlite3.connect(path).execute("SELECT versions FROM image_sets").fetchone()[0]
    assert "free" not in row and "message" not in row


def test_failures_by_reason_and_reshard_bookkeeping_persist(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SnapshotStore(path)
    by_reason = CounterKey(FAILURES, KEY.datastore_id, "", "COPY_FAILED", "INVALID_REQUEST")
    other = by_reason._replace(reason="other")
    put(store, SNAP, {FAILED: 1, by_reason: 1, other: 1})
    put(store, SNAP, {by_reason: 1})
    record = DatastoreRecord(
        KEY.datastore_id,
        last_success=10.0,
        shard_assignment="0/3",
        resharded_at=20.0,
        watched_until=10.0,
    )
    store.save_datastore(record)
    store.close()
    state = SnapshotStore(path).load()
    assert flat_counters(state) == {FAILED: 1.0, by_reason: 2.0, other: 1.0}
    assert state.datastores[KEY.datastore_id] == record


def test_schema_2_state_migrates_with_its_counters(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = old_file(path, 2)
    db.execute("INSERT INTO counters VALUES ('failed_versions', ?, ?, 'COPY_FAILED', 4)", KEY)
    db.execute("INSERT INTO datastores (datastore_id, last_success) VALUES (?, 7.0)", (KEY[0],))
    db.commit()
    db.close()
    store = SnapshotStore(str(path))
    state = store.load()
    assert SCHEMA_VERSION == 6
    assert flat_counters(state) == {FAILED: 4.0}
    record = state.datastores[KEY.datastore_id]
    assert record.last_success == 7.0 and record.shard_assignment is None
    put(store, SNAP, {FAILED: 1})
    assert flat_counters(store.load()) == {FAILED: 5.0}
    assert store.check_integrity() == "ok"


def test_event_timestamps_replace_while_counters_add(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    stamp = CounterKey(LAST_FAILURE, *KEY, "COPY_FAILED")
    store = SnapshotStore(path)
    put(store, SNAP, {FAILED: 1, stamp: 1000.0})
    put(store, SNAP, {FAILED: 1, stamp: 2000.5})
    store.close()
    reopened = SnapshotStore(path)
    assert flat_counters(reopened.load()) == {FAILED: 2.0, stamp: 2000.5}
    put(reopened, SNAP, {}, drop_counters=True)
    assert flat_counters(reopened.load()) == {}
    reopened.close()


def test_a_new_file_is_created_not_migrated_and_an_old_one_is_migrated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="exporter")
    path = str(tmp_path / "state.db")
    SnapshotStore(path).close()
    assert [r.getMessage() for r in caplog.records] == [
        f"created state file {path} (schema version {SCHEMA_VERSION})"
    ]
    caplog.clear()
    SnapshotStore(path).close()
    assert caplog.records == []  # nothing to say on an ordinary start
    old = str(tmp_path / "old.db")
    db = old_file(old, 1)
    db.commit()
    db.close()
    SnapshotStore(old).close()
    assert [r.getMessage() for r in caplog.records] == [
        f"migrated state schema from version 1 to {SCHEMA_VERSION}"
    ]


def test_schema_4_state_gains_facts_flags_and_totals_when_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = old_file(path, 4)
    quiet = ImageSetKey("d" * 32, "q" * 32)
    rows = [
        (*KEY, encode_snapshot(SNAP)),
        (*quiet, '{"v":[[1,"IMPORTED","ACTIVE",0,null]],"r":[]}'),
    ]
    db.executemany("INSERT INTO image_sets VALUES (?, ?, ?, NULL)", rows)
    db.commit()
    db.close()
    store = SnapshotStore(str(path))
    state = store.load()
    assert state.facts == {KEY: facts_of(SNAP)}  # the quiet one is not kept in memory
    assert state.totals["d" * 32] == DatastoreTotals(
        rows=2, tracked=2, forced=1, by_status={"COPIED": 1, "COPY_FAILED": 1, "IMPORTED": 1}
    )
    assert store.load(full=["d" * 32]).facts[quiet].versions == 1
    store.close()


def test_a_saved_exposition_is_served_only_as_it_was_written(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SnapshotStore(path)
    pieces = [b"\x01" * 3000, b"\x02" * 5000]
    saved = StoredBody(8000, 1234, 99999, store.generation)
    store.save_exposition(True, saved, pieces)
    assert store.saved_exposition(True) == saved
    assert b"".join(store.read_exposition(True, piece=1024)) == b"".join(pieces)
    assert store.saved_exposition(False) is None  # never saved
    store.close()
    # A byte altered in the file, the length unchanged: refused, not served.
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE exposition SET body = ? WHERE openmetrics = 1",
        (b"\x01" * 2999 + b"\x03" + b"\x02" * 5000,),
    )
    db.commit()
    db.close()
    store = SnapshotStore(path)
    with pytest.raises(StoreError, match="saved exposition was altered"):
        store.saved_exposition(True)
    # The bytes as written, but the trailer's CRC or size altered, or not a number at all.
    for column, value in (("crc", 1235), ("size", 99998), ("crc", "1234x")):
        store.save_exposition(True, saved, pieces)
        db = sqlite3.connect(path)
        db.execute(f"UPDATE exposition SET {column} = ? WHERE openmetrics = 1", (value,))
        db.commit()
        db.close()
        with pytest.raises(StoreError, match="saved exposition was altered"):
            store.saved_exposition(True)
    store.close()


def test_an_exposition_saved_before_checksums_is_not_served(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = old_file(path, 5)
    db.execute("INSERT INTO exposition VALUES (1, ?, 0, 10, 0)", (b"x" * 10,))
    db.commit()
    db.close()
    store = SnapshotStore(str(path))
    assert store.generation == 0
    assert store.saved_exposition(True) is None  # formatted again instead
    store.close()
