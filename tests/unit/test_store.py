"""The SQLite snapshot store: round trips, atomic changes, migrations, bad files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exporter.model import FAILED_VERSIONS, CounterKey, ImageSetKey, ImageSetSnapshot, Version
from exporter.store import SCHEMA_VERSION, DatastoreRecord, SnapshotStore, StoreError

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


def test_round_trip_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SnapshotStore(path)
    store.apply(SNAP, {FAILED: 1})
    store.apply(SNAP, {FAILED: 2})
    store.save_datastore(DatastoreRecord(KEY.datastore_id, last_success=10.0, cursor=5.0))
    store.close()
    reopened = SnapshotStore(path)
    state = reopened.load()
    assert state.image_sets == {KEY: SNAP}
    assert state.counters == {FAILED: 3.0}
    assert state.datastores[KEY.datastore_id].cursor == 5.0
    assert reopened.check_integrity() == "ok"
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


def test_deletion_drops_the_image_sets_counters(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "s.db"))
    store.apply(SNAP, {FAILED: 1})
    gone = ImageSetSnapshot(KEY, (), SNAP.versions, deleted_at=9.0)
    store.apply(gone, {}, drop_counters=True)
    state = store.load()
    assert state.counters == {}
    assert state.image_sets[KEY].is_deleted


def test_memory_store_needs_no_file() -> None:
    store = SnapshotStore(":memory:")
    store.apply(SNAP, {FAILED: 1})
    assert store.load().counters == {FAILED: 1.0}


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
    store.apply(SNAP, {FAILED: 1})
    store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE image_sets SET versions = 'garbage'")
    db.commit()
    db.close()
    state = SnapshotStore(str(path)).load()
    assert state.image_sets == {}
    assert state.counters == {FAILED: 1.0}


def test_rows_with_the_old_timestamp_fields_still_load(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SnapshotStore(str(path)).close()
    db = sqlite3.connect(path)
    old = '{"v":[[2,"COPY_FAILED","ACTIVE",1,0,1.5,2.5,null]],"r":[]}'
    db.execute("INSERT INTO image_sets VALUES (?, ?, ?, NULL)", (*KEY, old))
    db.commit()
    db.close()
    state = SnapshotStore(str(path)).load()
    assert state.image_sets[KEY].versions == (Version(2, "COPY_FAILED", "ACTIVE", True, False),)


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
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE datastores DROP COLUMN discovery_started")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    SnapshotStore(path).close()
    assert [r.getMessage() for r in caplog.records] == ["migrated state schema to version 2"]
