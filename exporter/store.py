"""The durable snapshot: SQLite in WAL mode, versioned schema, one transaction per change."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import sys
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zlib_ng import zlib_ng

from exporter.facts import (
    DatastoreTotals,
    ImageSetFacts,
    LatestVersion,
    TotalsKey,
    contribution,
    facts_of,
    totals_delta,
    totals_from,
)
from exporter.model import (
    NO_OWN_COUNTERS,
    TIMESTAMP_FAMILIES,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    OwnCounters,
    Version,
)

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
class StoredBody:
    """A rendered body kept in the file: its compressed length, CRC-32, size and generation."""

    length: int
    crc: int
    size: int
    generation: int


@dataclass(frozen=True, slots=True)
class StoredState:
    """What start-up loads: exported facts, counters, bookkeeping and totals; no version lists."""

    facts: dict[ImageSetKey, ImageSetFacts]
    counters: dict[CounterKey, float]  # data stores' own (no image set)
    datastores: dict[str, DatastoreRecord]
    totals: dict[str, DatastoreTotals]
    own: dict[ImageSetKey, OwnCounters]  # image sets' own counters


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


FactsCache = dict[str, ImageSetFacts]


def encode_facts(facts: ImageSetFacts) -> str:
    """Serialise an image set's facts as compact JSON (its `facts` column)."""
    if facts.deleted:
        return '{"d":1}'
    data: dict[str, object] = {"n": facts.versions, "s": facts.by_status}
    if facts.forced:
        data["f"] = facts.forced
    if facts.latest is not None:
        top = facts.latest
        data["l"] = [top.version_id, top.image_set_state, top.workflow_status, top.is_primary]
    if facts.last_failure is not None:
        data["x"] = facts.last_failure
    if facts.in_progress:
        data["p"] = facts.in_progress
    return json.dumps(data, separators=(",", ":"))


def decode_facts(payload: str, cache: FactsCache | None = None) -> ImageSetFacts:
    """Rebuild facts from their JSON; equal payloads share one object through `cache`."""
    if cache is not None:
        known = cache.get(payload)
        if known is not None:
            return known
    data = json.loads(payload)
    if not isinstance(data, dict):
        raise ValueError("facts payload is not an object")
    if data.get("d"):
        facts = ImageSetFacts(deleted=True)
    else:
        top = data.get("l")
        failure = data.get("x")
        facts = ImageSetFacts(
            versions=int(data["n"]),
            by_status=tuple((sys.intern(str(s)), int(n)) for s, n in data["s"]),
            forced=int(data.get("f", 0)),
            latest=None
            if top is None
            else LatestVersion(
                int(top[0]),
                sys.intern(str(top[1])),
                sys.intern(str(top[2])),
                None if top[3] is None else bool(top[3]),
            ),
            last_failure=None
            if failure is None
            else (
                sys.intern(str(failure[0])),
                None if failure[1] is None else sys.intern(str(failure[1])),
            ),
            in_progress=tuple((sys.intern(str(s)), float(t)) for s, t in data.get("p", ())),
        )
    if cache is not None:
        cache[payload] = facts
    return facts


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
    # Issue 16: memory holds what is exported, not every version list. Each snapshot carries its
    # exported facts, with a flag (and a partial index) for those `failures_only` shows, and
    # each data store its aggregates, so start-up reads neither the version lists nor every row
    # (the index holds the flagged rows' facts: start-up reads the index alone).
    # The facts of rows written before are derived once, after this migration (`_fill_facts`).
    """
    ALTER TABLE image_sets ADD COLUMN facts TEXT;
    ALTER TABLE image_sets ADD COLUMN notable INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX image_sets_notable ON image_sets (notable, datastore_id, image_set_id, facts)
        WHERE notable = 1;
    CREATE TABLE datastore_totals (
        datastore_id TEXT NOT NULL,
        name TEXT NOT NULL,
        label TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (datastore_id, name, label)
    ) WITHOUT ROWID;
    CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER NOT NULL);
    INSERT INTO generation (id, value) VALUES (0, 0);
    CREATE TABLE exposition (
        openmetrics INTEGER PRIMARY KEY,
        body BLOB NOT NULL,
        crc INTEGER NOT NULL,
        size INTEGER NOT NULL,
        generation INTEGER NOT NULL
    );
    """,
    # The saved exposition is sent as stored: its CRC-32 in the gzip trailer covers the text, so
    # a body altered in the file would reach scrapers as a gzip error. A checksum of the stored
    # bytes, checked at start-up (milliseconds), keeps it from being served; a row saved
    # without one is not served either.
    """
    ALTER TABLE exposition ADD COLUMN checksum INTEGER;
    """,
)
FACTS_SCHEMA = 5  # the first schema with facts and totals
KEY_PAGE = 10_000  # keys read per query when walking a data store's keys
VERSION_CACHE_LIMIT = 100_000  # distinct version rows shared between reads before starting over
SCHEMA_VERSION = len(MIGRATIONS)


class SnapshotStore:
    """SQLite-backed snapshot and counter store; every write is one transaction."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()  # one user of the connection at a time
        self._bumped = False  # the open transaction changed what is exported
        self._versions: VersionCache = {}  # shared by reads: equal versions, one object
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
            self._generation = int(self._db.execute("SELECT value FROM generation").fetchone()[0])
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
        if 0 < current < FACTS_SCHEMA:
            self._fill_facts()
        if 0 < current < SCHEMA_VERSION:
            log.info("migrated state schema from version %d to %d", current, SCHEMA_VERSION)
        if current == 0:
            log.info("created state file %s (schema version %d)", self.path, SCHEMA_VERSION)

    def _fill_facts(self) -> None:
        """Derive the facts, flags and totals of rows written before schema 5 (once)."""
        totals: dict[str, Counter[TotalsKey]] = {}
        updates: list[tuple[str, int, str, str]] = []
        cache: VersionCache = {}
        rows = self._db.execute(
            "SELECT datastore_id, image_set_id, versions, deleted_at FROM image_sets"
        ).fetchall()
        for datastore_id, image_set_id, payload, deleted_at in rows:
            key = ImageSetKey(datastore_id, image_set_id)
            try:
                facts = facts_of(decode_snapshot(key, payload, deleted_at, cache))
            except (ValueError, KeyError, TypeError):
                continue  # left without facts: read as unreadable, re-baselined by its next poll
            totals.setdefault(datastore_id, Counter()).update(contribution(facts))
            updates.append((encode_facts(facts), int(facts.notable), datastore_id, image_set_id))
        with self._transaction():
            self._db.executemany(
                "UPDATE image_sets SET facts = ?, notable = ? "
                "WHERE datastore_id = ? AND image_set_id = ?",
                updates,
            )
            self._db.execute("DELETE FROM datastore_totals")
            self._db.executemany(
                "INSERT INTO datastore_totals (datastore_id, name, label, value) "
                "VALUES (?, ?, ?, ?)",
                [(ds, *k, v) for ds, entries in totals.items() for k, v in entries.items() if v],
            )
        if rows:
            log.info("state: derived the exported facts of %d image sets", len(updates))

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
        return _Transaction(self._db, self._lock, self._committed)

    def _committed(self, committed: bool) -> None:
        """Called as a transaction ends, under the writer lock."""
        if committed and self._bumped:
            self._generation += 1
        self._bumped = False

    def load(self, full: Collection[str] = ()) -> StoredState:
        """Read what start-up needs: no version list, and facts only of image sets shown.

        Facts are read for image sets `failures_only` shows (the flagged rows, through their
        partial index) and for every image set of the data stores in `full` (mode `all`).
        """
        facts: dict[ImageSetKey, ImageSetFacts] = {}
        cache: FactsCache = {}
        try:
            for datastore_id in sorted(full):
                facts.update(self.datastore_facts(datastore_id, cache))
            rows = self._db.execute(
                "SELECT datastore_id, image_set_id, facts FROM image_sets WHERE notable = 1"
            )
            for datastore_id, image_set_id, payload in rows:
                known = cache.get(payload)  # most facts repeat: no decoding, no method call
                if datastore_id in full:
                    continue
                if known is not None:
                    facts[ImageSetKey(sys.intern(datastore_id), image_set_id)] = known
                else:
                    self._add_facts(facts, datastore_id, image_set_id, payload, cache)
            # Strings and keys shared with the facts', not one copy per row: a million image
            # sets have ~300,000 counter series.
            keys: dict[ImageSetKey, ImageSetKey] = {key: key for key in facts}
            intern = sys.intern
            counters: dict[CounterKey, float] = {}
            own: dict[ImageSetKey, OwnCounters] = {}
            for family, ds, image_set, status, reason, value in self._db.execute(
                "SELECT family, datastore_id, image_set_id, workflow_status, reason, value "
                "FROM counters"
            ):
                if not image_set:
                    counter = CounterKey(
                        intern(family), intern(ds), "", intern(status), intern(reason)
                    )
                    counters[counter] = float(value)
                    continue
                key = ImageSetKey(intern(ds), image_set)
                key = keys.setdefault(key, key)
                own[key] = own.get(key, NO_OWN_COUNTERS).with_value(
                    intern(family), intern(status), float(value)
                )
            del keys
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
            entries: dict[str, dict[TotalsKey, int]] = {}
            for datastore_id, name, label, value in self._db.execute(
                "SELECT datastore_id, name, label, value FROM datastore_totals"
            ):
                entries.setdefault(datastore_id, {})[(name, label)] = int(value)
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot read: {exc}") from None
        totals = {ds: totals_from(each) for ds, each in entries.items()}
        return StoredState(facts, counters, datastores, totals, own)

    def _add_facts(
        self,
        facts: dict[ImageSetKey, ImageSetFacts],
        datastore_id: str,
        image_set_id: str,
        payload: object,
        cache: FactsCache,
    ) -> None:
        key = ImageSetKey(sys.intern(datastore_id), image_set_id)
        try:
            facts[key] = decode_facts(str(payload), cache)
        except (ValueError, KeyError, TypeError, IndexError):
            # Shown again once its next poll rewrites it; better than refusing to start.
            log.error("state: unreadable facts of image set %s/%s", datastore_id, image_set_id)

    def datastore_facts(
        self, datastore_id: str, cache: FactsCache | None = None
    ) -> dict[ImageSetKey, ImageSetFacts]:
        """Return the facts of every image set of a data store not seen deleted (mode `all`)."""
        facts: dict[ImageSetKey, ImageSetFacts] = {}
        cache = {} if cache is None else cache
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT image_set_id, facts FROM image_sets "
                    "WHERE datastore_id = ? AND deleted_at IS NULL",
                    (datastore_id,),
                ).fetchall()
            for image_set_id, payload in rows:
                self._add_facts(facts, datastore_id, image_set_id, payload, cache)
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot read: {exc}") from None
        return facts

    def read(self, key: ImageSetKey) -> ImageSetSnapshot | None:
        """Return an image set's snapshot, read from the file; None if it has none (or unreadable).

        An unreadable snapshot is logged and read as none: its next poll re-baselines it.
        """
        try:
            with self._lock:  # one connection: reads never interleave with a write's transaction
                row = self._db.execute(
                    "SELECT versions, deleted_at FROM image_sets "
                    "WHERE datastore_id = ? AND image_set_id = ?",
                    key,
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot read: {exc}") from None
        if row is None:
            return None
        if len(self._versions) > VERSION_CACHE_LIMIT:
            self._versions = {}
        try:
            return decode_snapshot(key, row[0], row[1], self._versions)
        except (ValueError, KeyError, TypeError):
            log.error("state: unreadable snapshot of image set %s/%s; re-baselining it", *key)
            return None

    def keys_after(self, datastore_id: str, after: str, limit: int) -> list[ImageSetKey]:
        """Return up to `limit` of a data store's keys after `after`, in id order."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT image_set_id FROM image_sets "
                    "WHERE datastore_id = ? AND image_set_id > ? ORDER BY image_set_id LIMIT ?",
                    (datastore_id, after, limit),
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot read: {exc}") from None
        return [ImageSetKey(datastore_id, row[0]) for row in rows]

    def keys(self, datastore_id: str) -> Iterator[ImageSetKey]:
        """Yield every key of a data store with a snapshot, in id order, a page at a time."""
        after = ""
        while True:
            page = self.keys_after(datastore_id, after, KEY_PAGE)
            yield from page
            if len(page) < KEY_PAGE:
                return
            after = page[-1].image_set_id

    def datastore_ids(self) -> list[str]:
        """Return the data stores that have snapshots (their totals say so)."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT DISTINCT datastore_id FROM datastore_totals WHERE name = 'rows'"
                ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot read: {exc}") from None
        return [row[0] for row in rows]

    def apply(
        self,
        snapshot: ImageSetSnapshot,
        facts: ImageSetFacts,
        increments: Mapping[CounterKey, float],
        drop_counters: bool = False,
    ) -> ImageSetFacts | None:
        """Write an image set's snapshot, facts, totals and counters; return its previous facts.

        One transaction: the snapshot and facts, its data store's totals moved by the difference,
        its counter increments added and its event timestamps set.
        """
        key = snapshot.key
        stamps = TIMESTAMP_FAMILIES
        try:
            with self._transaction():
                previous = self._facts(key)
                self._db.execute(
                    "INSERT INTO image_sets (datastore_id, image_set_id, versions, deleted_at, "
                    "facts, notable) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (datastore_id, image_set_id) DO UPDATE SET "
                    "versions = excluded.versions, deleted_at = excluded.deleted_at, "
                    "facts = excluded.facts, notable = excluded.notable",
                    (
                        key.datastore_id,
                        key.image_set_id,
                        encode_snapshot(snapshot),
                        snapshot.deleted_at,
                        encode_facts(facts),
                        int(facts.notable),
                    ),
                )
                self._move_totals(key.datastore_id, totals_delta(previous, facts))
                self._bump()
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
        return previous

    def _facts(self, key: ImageSetKey) -> ImageSetFacts | None:
        """Return an image set's stored facts (inside a transaction); None if it has no row."""
        row = self._db.execute(
            "SELECT facts, versions, deleted_at FROM image_sets "
            "WHERE datastore_id = ? AND image_set_id = ?",
            key,
        ).fetchone()
        if row is None:
            return None
        try:
            return decode_facts(str(row[0])) if row[0] is not None else None
        except (ValueError, KeyError, TypeError, IndexError):
            pass
        try:  # unreadable facts: derive them again from the version lists
            return facts_of(decode_snapshot(key, row[1], row[2]))
        except (ValueError, KeyError, TypeError):
            return None

    def _move_totals(self, datastore_id: str, delta: Mapping[TotalsKey, int]) -> None:
        if not delta:
            return
        self._db.executemany(
            "INSERT INTO datastore_totals (datastore_id, name, label, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (datastore_id, name, label) DO UPDATE SET value = value + excluded.value",
            [(datastore_id, name, label, amount) for (name, label), amount in delta.items()],
        )
        self._db.execute(
            "DELETE FROM datastore_totals WHERE datastore_id = ? AND value = 0", (datastore_id,)
        )

    def forget(self, keys: Iterable[ImageSetKey]) -> dict[str, dict[TotalsKey, int]]:
        """Remove image sets (and their per-image-set counters) no longer configured.

        Return, per data store, how its totals moved.
        """
        moved: dict[str, Counter[TotalsKey]] = {}
        try:
            with self._transaction():
                self._bump()
                for key in keys:
                    previous = self._facts(key)
                    if previous is not None:
                        delta = totals_delta(previous, None)
                        self._move_totals(key.datastore_id, delta)
                        moved.setdefault(key.datastore_id, Counter()).update(delta)
                    self._db.execute(
                        "DELETE FROM image_sets WHERE datastore_id = ? AND image_set_id = ?", key
                    )
                    self._db.execute(
                        "DELETE FROM counters WHERE datastore_id = ? AND image_set_id = ?", key
                    )
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot write: {exc}") from None
        return {ds: dict(delta) for ds, delta in moved.items()}

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
                self._bump()
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

    def _bump(self) -> None:
        """Count a change of what is exported (inside its transaction): see `generation`."""
        self._db.execute("UPDATE generation SET value = value + 1")
        self._bumped = True  # counted in memory once the transaction commits

    @property
    def generation(self) -> int:
        """Return how many changes of exported state this file has committed.

        Snapshots, counters and import jobs: an exposition saved at a generation shows this
        file's state only while it is still the file's generation.
        """
        return self._generation

    def save_exposition(self, openmetrics: bool, body: StoredBody, pieces: Iterable[bytes]) -> None:
        """Keep a rendered body (`pieces`, `body.length` bytes in all) for the next start."""
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT OR REPLACE INTO exposition "
                    "(openmetrics, body, crc, size, generation, checksum) "
                    "VALUES (?, zeroblob(?), ?, ?, ?, NULL)",
                    (int(openmetrics), body.length, body.crc, body.size, body.generation),
                )
                # Written piece by piece into the blob: no copy of a body of tens of megabytes.
                checksum = 0
                with self._db.blobopen("exposition", "body", int(openmetrics)) as blob:
                    for piece in pieces:
                        blob.write(piece)
                        checksum = zlib_ng.crc32(piece, checksum)
                self._db.execute(
                    "UPDATE exposition SET checksum = ? WHERE openmetrics = ?",
                    (_seal(checksum, body.crc, body.size), int(openmetrics)),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot write: {exc}") from None

    def saved_exposition(self, openmetrics: bool) -> StoredBody | None:
        """Return a body saved at this file's current generation; None if none or stale.

        Its stored bytes are checked against the checksum written with them: a body altered
        in the file raises StoreError rather than being served.
        """
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT length(body), crc, size, generation, checksum FROM exposition "
                    "WHERE openmetrics = ?",
                    (int(openmetrics),),
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"state.path {self.path}: cannot read: {exc}") from None
        if row is None or row[3] != self._generation or row[4] is None:
            return None
        length, crc, size, generation, sealed = row
        checksum = 0
        for piece in self.read_exposition(openmetrics):
            checksum = zlib_ng.crc32(piece, checksum)
        if not all(isinstance(v, int) for v in row) or _seal(checksum, crc, size) != sealed:
            raise StoreError(f"state.path {self.path}: the saved exposition was altered")
        return StoredBody(length, crc, size, generation)

    def read_exposition(self, openmetrics: bool, piece: int = 1 << 22) -> Iterator[bytes]:
        """Yield a saved body in pieces, read as they are sent."""
        offset = 0
        while True:
            try:
                with (
                    self._lock,
                    self._db.blobopen(
                        "exposition", "body", int(openmetrics), readonly=True
                    ) as blob,
                ):
                    blob.seek(offset)
                    data = blob.read(piece)
            except sqlite3.Error as exc:
                raise StoreError(f"state.path {self.path}: cannot read: {exc}") from None
            if not data:
                return
            offset += len(data)
            yield data

    def check_integrity(self) -> str:
        """Run SQLite's integrity check; return 'ok' or the first problem."""
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        """Close the database; the WAL is checkpointed by SQLite."""
        with self._lock:
            self._db.close()


def _seal(checksum: int, crc: int, size: int) -> int:
    """Extend a checksum of a saved body's bytes over the CRC and size its gzip trailer shows."""
    return zlib_ng.crc32(f"{crc} {size}".encode(), checksum)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error, under the writer lock."""

    def __init__(
        self, db: sqlite3.Connection, lock: threading.Lock, ended: Callable[[bool], None]
    ) -> None:
        self._db = db
        self._lock = lock
        self._ended = ended

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
                    self._ended(False)
                    raise
                self._ended(True)
            else:
                self._rollback()
                self._ended(False)
        finally:
            self._lock.release()

    def _rollback(self) -> None:
        # SQLITE_FULL, SQLITE_IOERR and the like may have rolled back already; a second
        # ROLLBACK would fail and replace the error that explains what went wrong.
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.DatabaseError):
                self._db.execute("ROLLBACK")
