"""The durable snapshot: SQLite in WAL mode, versioned schema, one transaction per change."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.model import TIMESTAMP_FAMILIES, CounterKey, ImageSetKey, ImageSetSnapshot, Version

log = logging.getLogger(__name__)

MEMORY = ":memory:"


class StoreError(RuntimeError):
    """The snapshot store cannot be opened, read or written; the message is one line."""


@dataclass(frozen=True, slots=True)
class DatastoreRecord:
    """Per-data-store bookkeeping that must survive restarts."""

    datastore_id: str
    last_success: float | None = None
    cursor: float | None = None  # SearchImageSets: updatedAt already covered
    backfill_token: str | None = None  # where the inventory listing stopped
    backfill_complete: bool = False
    backfill_listed: int = 0
    discovery_started: float | None = None  # image sets created after this count in full
    shard_assignment: str | None = None  # "N/M" of the process that wrote this record
    resharded_at: float | None = None  # when that assignment last changed
    # The last complete poll before that change: later versions of an image set first seen
    # since are news (exporter.reshard), not a baseline.
    watched_until: float | None = None


@dataclass(frozen=True, slots=True)
class StoredState:
    """Everything the store holds, loaded at start-up."""

    image_sets: dict[ImageSetKey, ImageSetSnapshot]
    counters: dict[CounterKey, float]
    datastores: dict[str, DatastoreRecord]


def _encode_version(v: Version) -> list[object]:
    row: list[object] = [
        v.version_id,
        v.workflow_status,
        v.image_set_state,
        int(v.forced),
        None if v.is_primary is None else int(v.is_primary),
    ]
    # An object, never a number, in the sixth place: rows from before 0.1 hold a timestamp there.
    extra: dict[str, object] = {}
    if v.started_at is not None:  # settled: only in-progress versions have one
        extra["s"] = v.started_at
    if v.reason is not None:
        extra["r"] = v.reason
    if extra:
        row.append(extra)
    return row


def _encode_versions(versions: Iterable[Version]) -> list[list[object]]:
    return [_encode_version(v) for v in versions]


VersionCache = dict[tuple[object, ...], Version]


def _decode_versions(rows: list[list[object]], cache: VersionCache) -> tuple[Version, ...]:
    # Versions are immutable and repeat across image sets (version 1, IMPORTED, ACTIVE, ...):
    # one shared object per distinct row keeps 500,000 versions to a few hundred objects.
    # Rows written before version 0.1 also hold three timestamps, which are no longer kept;
    # since schema 3 an optional sixth element, an object, holds started_at ("s") and reason ("r").
    result = []
    for row in rows:
        extra = row[5] if len(row) > 5 else None
        if type(extra) is not dict:  # the common row: nothing but its five fields
            key: tuple[object, ...] = tuple(row[:5])
            version = cache.get(key)
            if version is None:
                version = cache[key] = _decode_version(row, None, None)
        else:
            started = _float_or_none(extra.get("s"))
            reason = extra.get("r")
            key = (*row[:5], started, reason)
            version = cache.get(key)
            if version is None:
                version = cache[key] = _decode_version(row, started, reason)
        result.append(version)
    return tuple(result)


def _decode_version(row: list[object], started: float | None, reason: object) -> Version:
    return Version(
        int(str(row[0])),
        sys.intern(str(row[1])),
        sys.intern(str(row[2])),
        bool(row[3]),
        None if row[4] is None else bool(row[4]),
        changed_at=started,
        reason=None if reason is None else sys.intern(str(reason)),
    )


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(str(value))


def encode_snapshot(snapshot: ImageSetSnapshot) -> str:
    """Serialise a snapshot's version lists as compact JSON."""
    data: dict[str, object] = {
        "v": _encode_versions(snapshot.versions),
        "r": _encode_versions(snapshot.removed),
    }
    if snapshot.seen_updated_at is not None:
        data["u"] = snapshot.seen_updated_at
    return json.dumps(data, separators=(",", ":"))


def decode_snapshot(
    key: ImageSetKey, payload: str, deleted_at: float | None, cache: VersionCache | None = None
) -> ImageSetSnapshot:
    """Rebuild a snapshot from its JSON; raise ValueError when the payload is not one."""
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("snapshot payload is not an object")
    return ImageSetSnapshot(
        key,
        _decode_versions(data["v"], {} if cache is None else cache),
        _decode_versions(data["r"], {} if cache is None else cache),
        deleted_at,
        _float_or_none(data.get("u")),
    )


# Each entry migrates from the schema version equal to its index to the next one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE image_sets (
        datastore_id TEXT NOT NULL,
        image_set_id TEXT NOT NULL,
        versions TEXT NOT NULL,
        deleted_at REAL,
        PRIMARY KEY (datastore_id, image_set_id)
    ) WITHOUT ROWID;
    CREATE TABLE counters (
        family TEXT NOT NULL,
        datastore_id TEXT NOT NULL,
        image_set_id TEXT NOT NULL,
        workflow_status TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (family, datastore_id, image_set_id, workflow_status)
    ) WITHOUT ROWID;
    CREATE TABLE datastores (
        datastore_id TEXT PRIMARY KEY,
        last_success REAL,
        cursor REAL,
        backfill_token TEXT,
        backfill_complete INTEGER NOT NULL DEFAULT 0,
        backfill_listed INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    """,
    """
    ALTER TABLE datastores ADD COLUMN discovery_started REAL;
    """,
    # Failures by reason: a `reason` column in the counters' key (empty for the other families),
    # and what a process needs to tell a reshard's moved image sets from a baseline.
    """
    CREATE TABLE counters_v3 (
        family TEXT NOT NULL,
        datastore_id TEXT NOT NULL,
        image_set_id TEXT NOT NULL,
        workflow_status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        value REAL NOT NULL,
        PRIMARY KEY (family, datastore_id, image_set_id, workflow_status, reason)
    ) WITHOUT ROWID;
    INSERT INTO counters_v3 (family, datastore_id, image_set_id, workflow_status, reason, value)
        SELECT family, datastore_id, image_set_id, workflow_status, '', value FROM counters;
    DROP TABLE counters;
    ALTER TABLE counters_v3 RENAME TO counters;
    ALTER TABLE datastores ADD COLUMN shard_assignment TEXT;
    ALTER TABLE datastores ADD COLUMN resharded_at REAL;
    ALTER TABLE datastores ADD COLUMN watched_until REAL;
    """,
    # Import jobs (issue 14; exporter/imports/store.py reads and writes these three tables).
    """
    CREATE TABLE import_ledgers (
        datastore_id TEXT PRIMARY KEY,
        baseline_at REAL NOT NULL,
        pruned_before REAL,
        reconciled_at REAL
    ) WITHOUT ROWID;
    CREATE TABLE import_jobs (
        datastore_id TEXT NOT NULL,
        job_id TEXT NOT NULL,
        job_status TEXT NOT NULL,
        submitted_at REAL,
        ended_at REAL,
        manifest_pending INTEGER NOT NULL DEFAULT 0,
        output_s3_uri TEXT,
        manifest_tries INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (datastore_id, job_id)
    ) WITHOUT ROWID;
    CREATE TABLE import_counters (
        datastore_id TEXT NOT NULL,
        name TEXT NOT NULL,
        label TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (datastore_id, name, label)
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class SnapshotStore:
    """SQLite-backed snapshot and counter store; every write is one transaction."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()  # one writer; readers only at start-up
        try:
            if path != MEMORY:
                directory = os.path.dirname(os.path.abspath(path))
                if not os.path.isdir(directory):
                    raise StoreError(f"state.path {path}: directory {directory} does not exist")
                if not os.access(directory, os.W_OK):
                    raise StoreError(f"state.path {path}: directory {directory} is not writable")
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 5000")
            if path != MEMORY:
                mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise StoreError(f"state.path {path}: cannot switch to WAL mode (got {mode})")
            # NORMAL in WAL mode: a power cut may lose the newest transactions, but a snapshot
            # and the counters it moved are always lost or kept together, so nothing double-counts.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {path}: {exc}") from None

    def _migrate(self) -> None:
        current = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"state.path {self.path}: schema version {current} is newer than this exporter "
                f"understands ({SCHEMA_VERSION}); upgrade the exporter or move the file away"
            )
        for version in range(current, SCHEMA_VERSION):
            with self._transaction():
                # Statement by statement: executescript would commit half a migration.
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version + 1}")
        if 0 < current < SCHEMA_VERSION:
            log.info("migrated state schema from version %d to %d", current, SCHEMA_VERSION)
        if current == 0:
            log.info("created state file %s (schema version %d)", self.path, SCHEMA_VERSION)

    def probe_writable(self) -> str | None:
        """Try a write that changes nothing; return why it failed, or None if it succeeded."""
        # SQLite opens a read-only file without complaint and fails only at the first write,
        # which may come hours later: find out at start instead.
        try:
            with self._transaction():
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            return f"state.path {self.path}: cannot write: {exc}"
        return None

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    def load(self) -> StoredState:
        """Read every snapshot, counter and data store record."""
        image_sets: dict[ImageSetKey, ImageSetSnapshot] = {}
        cache: VersionCache = {}
        try:
            rows = self._db.execute(
                "SELECT datastore_id, image_set_id, versions, deleted_at FROM image_sets"
            )
            for datastore_id, image_set_id, payload, deleted_at in rows:
                key = ImageSetKey(datastore_id, image_set_id)
                try:
                    image_sets[key] = decode_snapshot(key, payload, deleted_at, cache)
                except (ValueError, KeyError, TypeError):
                    # Its next poll rebuilds it as a baseline; better than refusing to start.
                    log.error("state: unreadable snapshot of image set %s; re-baselining it", key)
            counters = {
                CounterKey(family, ds, image_set, status, reason): float(value)
                for family, ds, image_set, status, reason, value in self._db.execute(
                    "SELECT family, datastore_id, image_set_id, workflow_status, reason, value "
                    "FROM counters"
                )
            }
            datastores = {
                row[0]: DatastoreRecord(
                    datastore_id=row[0],
                    last_success=row[1],
                    cursor=row[2],
                    backfill_token=row[3],
                    backfill_complete=bool(row[4]),
                    backfill_listed=int(row[5]),
                    discovery_started=row[6],
                    shard_assignment=row[7],
                    resharded_at=row[8],
                    watched_until=row[9],
                )
                for row in self._db.execute(
                    "SELECT datastore_id, last_success, cursor, backfill_token, "
                    "backfill_complete, backfill_listed, discovery_started, shard_assignment, "
                    "resharded_at, watched_until FROM datastores"
                )
            }
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot read: {exc}") from None
        return StoredState(image_sets, counters, datastores)

    def apply(
        self,
        snapshot: ImageSetSnapshot,
        increments: Mapping[CounterKey, float],
        drop_counters: bool = False,
    ) -> None:
        """Write an image set's new snapshot, add its counter increments, set its timestamps."""
        key = snapshot.key
        stamps = TIMESTAMP_FAMILIES
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO image_sets (datastore_id, image_set_id, versions, deleted_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (datastore_id, image_set_id) DO UPDATE SET "
                    "versions = excluded.versions, deleted_at = excluded.deleted_at",
                    (
                        key.datastore_id,
                        key.image_set_id,
                        encode_snapshot(snapshot),
                        snapshot.deleted_at,
                    ),
                )
                if drop_counters:
                    self._db.execute(
                        "DELETE FROM counters WHERE datastore_id = ? AND image_set_id = ?",
                        (key.datastore_id, key.image_set_id),
                    )
                self._db.executemany(
                    "INSERT INTO counters (family, datastore_id, image_set_id, workflow_status, "
                    "reason, value) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                    "(family, datastore_id, image_set_id, workflow_status, reason) "
                    "DO UPDATE SET value = value + excluded.value",
                    [(*k, v) for k, v in increments.items() if v and k.family not in stamps],
                )
                # Event timestamps (model.TIMESTAMP_FAMILIES) replace the stored value.
                self._db.executemany(
                    "INSERT INTO counters (family, datastore_id, image_set_id, workflow_status, "
                    "reason, value) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                    "(family, datastore_id, image_set_id, workflow_status, reason) "
                    "DO UPDATE SET value = excluded.value",
                    [(*k, v) for k, v in increments.items() if k.family in stamps],
                )
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot write: {exc}") from None

    def forget(self, keys: Iterable[ImageSetKey]) -> None:
        """Remove image sets (and their per-image-set counters) no longer configured."""
        pairs = [tuple(k) for k in keys]
        try:
            with self._transaction():
                self._db.executemany(
                    "DELETE FROM image_sets WHERE datastore_id = ? AND image_set_id = ?", pairs
                )
                self._db.executemany(
                    "DELETE FROM counters WHERE datastore_id = ? AND image_set_id = ?", pairs
                )
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot write: {exc}") from None

    def save_datastore(self, record: DatastoreRecord) -> None:
        """Write a data store's bookkeeping."""
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT OR REPLACE INTO datastores (datastore_id, last_success, cursor, "
                    "backfill_token, backfill_complete, backfill_listed, discovery_started, "
                    "shard_assignment, resharded_at, watched_until) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.datastore_id,
                        record.last_success,
                        record.cursor,
                        record.backfill_token,
                        int(record.backfill_complete),
                        record.backfill_listed,
                        record.discovery_started,
                        record.shard_assignment,
                        record.resharded_at,
                        record.watched_until,
                    ),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot write: {exc}") from None

    def write_rows(self, batches: Iterable[tuple[str, Iterable[Sequence[object]]]]) -> None:
        """Run each (statement, rows) with executemany, all in one transaction.

        For tables another module owns (exporter/imports/store.py): one commit or none.
        """
        try:
            with self._transaction():
                for statement, rows in batches:
                    self._db.executemany(statement, rows)
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot write: {exc}") from None

    def read_rows(self, statement: str) -> list[tuple[Any, ...]]:
        """Return every row of a query (at start-up, for tables another module owns)."""
        try:
            return list(self._db.execute(statement))
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot read: {exc}") from None

    def check_integrity(self) -> str:
        """Run SQLite's integrity check; return 'ok' or the first problem."""
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        """Close the database; the WAL is checkpointed by SQLite."""
        with self._lock:
            self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error, under the writer lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()  # a failed COMMIT must not leave the transaction open
                    raise
            else:
                self._rollback()
        finally:
            self._lock.release()

    def _rollback(self) -> None:
        # SQLITE_FULL, SQLITE_IOERR and the like may have rolled back already; a second
        # ROLLBACK would fail and replace the error that explains what went wrong.
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.DatabaseError):
                self._db.execute("ROLLBACK")
