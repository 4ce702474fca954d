"""The fleet's state in memory: a mirror of the snapshot store, changed only by atomic applies.

Write health is reported by return values and by `writable` / `write_failures`; the service turns
them into gauges (this layer knows nothing of Prometheus).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType

from exporter.diff import ImageSetChange
from exporter.model import (
    TIMESTAMP_FAMILIES,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    stamp_events,
)
from exporter.reasons import known_reasons
from exporter.store import DatastoreRecord, SnapshotStore, StoreError

log = logging.getLogger(__name__)


class FleetState:
    """Snapshots, counters and data store records; memory changes only after the store commits."""

    def __init__(self, store: SnapshotStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock  # stamps the time a failure or forced version was counted
        # Held for whole read-diff-apply sequences: the cycle and the backfills both apply.
        self.lock = threading.RLock()
        stored = store.load()
        self._image_sets: dict[ImageSetKey, ImageSetSnapshot] = stored.image_sets
        self._counters: dict[CounterKey, float] = stored.counters
        self._records: dict[str, DatastoreRecord] = stored.datastores
        # Per data store, its keys in a stable order (load order, then first sight): the
        # reconciliation walks it by position, so a cycle's batch costs O(batch), never a sort.
        self._rotations: dict[str, list[ImageSetKey]] = {}
        self._rebuild_rotations()
        self.loaded_image_sets = bool(stored.image_sets)
        self.write_failures = 0  # only grows: the service turns it into a counter
        problem = store.probe_writable()
        self._writable = problem is None
        if problem is not None:
            log.error("%s; serving the last metrics until writes succeed again", problem)

    @property
    def writable(self) -> bool:
        """Tell whether the last write to the snapshot store succeeded (probed at start)."""
        return self._writable

    def _write_failed(self, exc: StoreError) -> None:
        self.write_failures += 1
        if self._writable:
            log.error("%s; serving the last metrics until writes succeed again", exc)
        self._writable = False

    def _write_succeeded(self) -> None:
        if not self._writable:
            log.info("state writes succeed again")
            self._writable = True

    def get(self, key: ImageSetKey) -> ImageSetSnapshot | None:
        """Return an image set's snapshot, if it has one."""
        with self.lock:
            return self._image_sets.get(key)

    def image_set_keys(self, datastore_id: str | None = None) -> list[ImageSetKey]:
        """Return the image sets with a snapshot, of one data store or all, in rotation order."""
        with self.lock:
            if datastore_id is not None:
                return list(self._rotations.get(datastore_id, ()))
            return list(self._image_sets)

    def rotation(self, datastore_id: str) -> Sequence[ImageSetKey]:
        """Return a data store's keys in their stable order; live: read it under `lock`."""
        return self._rotations.get(datastore_id, ())

    def _rebuild_rotations(self) -> None:
        rotations: dict[str, list[ImageSetKey]] = {}
        for key in self._image_sets:
            rotations.setdefault(key.datastore_id, []).append(key)
        self._rotations = rotations

    def record(self, datastore_id: str) -> DatastoreRecord:
        """Return a data store's bookkeeping (empty if it has none yet)."""
        with self.lock:
            return self._records.get(datastore_id, DatastoreRecord(datastore_id))

    def save_record(self, record: DatastoreRecord) -> bool:
        """Persist a data store's bookkeeping; memory follows even if the disk does not.

        Return whether the write succeeded.
        """
        with self.lock:
            self._records[record.datastore_id] = record
            try:
                self._store.save_datastore(record)
            except StoreError as exc:
                self._write_failed(exc)
                return False
            self._write_succeeded()
            return True

    def apply(self, change: ImageSetChange, drop_counters: bool = False) -> bool:
        """Commit a change to the store, then to memory; False (memory unchanged) if it failed."""
        key = change.snapshot.key
        increments = stamp_events(change.increments, self._clock())
        with self.lock:
            try:
                self._store.apply(change.snapshot, increments, drop_counters=drop_counters)
            except StoreError as exc:
                # Memory stays at the last durable snapshot, so the next poll diffs and counts
                # this change again once the disk recovers: nothing lost, nothing doubled.
                self._write_failed(exc)
                return False
            self._write_succeeded()
            if key not in self._image_sets:
                self._rotations.setdefault(key.datastore_id, []).append(key)
            self._image_sets[key] = change.snapshot
            if drop_counters:
                self._counters = {
                    k: v
                    for k, v in self._counters.items()
                    if (k.datastore_id, k.image_set_id) != key
                }
            for counter, amount in increments.items():
                if counter.family in TIMESTAMP_FAMILIES:
                    self._counters[counter] = amount
                else:
                    self._counters[counter] = self._counters.get(counter, 0.0) + amount
            return True

    def forget(self, keys: Collection[ImageSetKey], datastores: Collection[str]) -> bool:
        """Drop image sets, and data stores' own counters, that are no longer configured.

        Return whether the store was written (or nothing needed forgetting).
        """
        with self.lock:
            gone_datastores = {k.datastore_id for k in self._counters} - set(datastores)
            pairs = [*keys, *(ImageSetKey(ds, "") for ds in gone_datastores)]
            if not pairs:
                return True
            try:
                self._store.forget(pairs)
            except StoreError as exc:
                self._write_failed(exc)
                return False
            self._write_succeeded()
            for key in keys:
                self._image_sets.pop(key, None)
            if keys:
                self._rebuild_rotations()  # rare: only when the configuration drops image sets
            dropped = set(pairs)
            self._counters = {
                k: v
                for k, v in self._counters.items()
                if ImageSetKey(k.datastore_id, k.image_set_id) not in dropped
            }
            if keys:
                log.info("forgot %d image sets no longer configured", len(keys))
            return True

    def failure_reasons(self, datastore_id: str) -> frozenset[str]:
        """Return the reasons a data store's failures were counted under (bounded per store)."""
        with self.lock:
            return known_reasons(self._counters, datastore_id)

    def copies(self) -> tuple[Mapping[ImageSetKey, ImageSetSnapshot], Mapping[CounterKey, float]]:
        """Return read-only copies of the snapshots and counters, for a view."""
        with self.lock:
            return MappingProxyType(dict(self._image_sets)), MappingProxyType(dict(self._counters))
