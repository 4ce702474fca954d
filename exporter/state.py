"""The fleet's state in memory: a mirror of the snapshot store, changed only by atomic applies.

Write health is reported by return values and by `writable` / `write_failures`; the service turns
them into gauges (this layer knows nothing of Prometheus).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from types import MappingProxyType

from exporter.diff import ImageSetChange
from exporter.facts import DatastoreTotals, ImageSetFacts, facts_of, totals_delta
from exporter.model import (
    NO_OWN_COUNTERS,
    TIMESTAMP_FAMILIES,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    OwnCounters,
    stamp_events,
)
from exporter.reasons import known_reasons
from exporter.store import DatastoreRecord, SnapshotStore, StoreError

log = logging.getLogger(__name__)
EMPTY_TOTALS = DatastoreTotals()


class FleetState:
    """What is exported, counters, bookkeeping and totals; the version lists stay in the store.

    Memory changes only after the store commits. It holds the facts of the image sets some
    mode shows (every one of the data stores in `full`, those with a failed, forced or
    in-progress version of the others), not every image set: planning and diffing read an image
    set's snapshot from the store when a cycle lists it (`get`).
    """

    def __init__(
        self,
        store: SnapshotStore,
        clock: Callable[[], float] = time.time,
        full: Collection[str] = (),
    ) -> None:
        self._store = store
        self._clock = clock  # stamps the time a failure or forced version was counted
        # Held for whole read-diff-apply sequences: the cycle and the backfills both apply.
        self.lock = threading.RLock()
        self._full = frozenset(full)
        stored = store.load(self._full)
        self._facts: dict[ImageSetKey, ImageSetFacts] = stored.facts
        self._counters: dict[CounterKey, float] = stored.counters  # data stores' own
        self._own: dict[ImageSetKey, OwnCounters] = stored.own  # image sets' own
        self._facts_lent = self._own_lent = False  # a view holds them (see copies)
        # Indexes of the facts, so that a view never walks them all: image sets with a version
        # in progress, and per data store the reason codes of the latest failures.
        self._in_progress: dict[ImageSetKey, tuple[tuple[str, float], ...]] = {}
        self._codes: dict[str, Counter[str | None]] = {}
        for key, facts in self._facts.items():
            self._index(key, facts, 1)
        self._records: dict[str, DatastoreRecord] = stored.datastores
        self._totals: dict[str, DatastoreTotals] = stored.totals
        # Image sets whose exported lines may differ from the last view's (see take_changes).
        self._changed: set[ImageSetKey] = set()
        self.loaded_image_sets = any(t.rows for t in self._totals.values())
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
        """Return an image set's snapshot, read from the store; None if it has none."""
        with self.lock:
            return self._store.read(key)

    def image_set_keys(self, datastore_id: str) -> Iterator[ImageSetKey]:
        """Yield a data store's image sets with a snapshot, in id order (read as they come)."""
        return self._store.keys(datastore_id)

    def datastore_ids(self) -> set[str]:
        """Return the data stores with snapshots or counters."""
        with self.lock:
            return {*self._store.datastore_ids(), *(k.datastore_id for k in self._counters)}

    def size(self, datastore_id: str) -> int:
        """Return how many snapshots a data store has, deleted image sets included."""
        with self.lock:
            return self._totals.get(datastore_id, EMPTY_TOTALS).rows

    def keys_after(self, datastore_id: str, after: str, limit: int) -> list[ImageSetKey]:
        """Return up to `limit` keys of a data store after the id `after`, in id order."""
        return self._store.keys_after(datastore_id, after, limit)

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

    def _set_facts(self, key: ImageSetKey, facts: ImageSetFacts | None) -> None:
        """Replace (or, with None, drop) an image set's facts and their indexes."""
        if facts is None and key not in self._facts:
            old = None
        else:
            writable = self._writable_facts()
            old = writable.pop(key, None) if facts is None else writable.get(key)
            if facts is not None:
                writable[key] = facts
        if old is not None:
            self._index(key, old, -1)
        if facts is not None:
            self._index(key, facts, 1)

    def _index(self, key: ImageSetKey, facts: ImageSetFacts, sign: int) -> None:
        """Add (+1) or take out (-1) an image set's facts from the indexes."""
        if facts.deleted:
            return
        if facts.last_failure is not None:
            codes = self._codes.setdefault(key.datastore_id, Counter())
            codes[facts.last_failure[1]] += sign
            if codes[facts.last_failure[1]] <= 0:
                del codes[facts.last_failure[1]]
        if facts.in_progress and sign > 0:
            self._in_progress[key] = facts.in_progress
        elif sign < 0:
            self._in_progress.pop(key, None)

    def _keeps(self, key: ImageSetKey, facts: ImageSetFacts) -> bool:
        """Tell whether some mode shows the image set, so its facts stay in memory."""
        return facts.notable or (key.datastore_id in self._full and not facts.deleted)

    def apply(self, change: ImageSetChange, drop_counters: bool = False) -> bool:
        """Commit a change to the store, then to memory; False (memory unchanged) if it failed."""
        key = change.snapshot.key
        facts = facts_of(change.snapshot)
        increments = stamp_events(change.increments, self._clock())
        with self.lock:
            try:
                previous = self._store.apply(
                    change.snapshot, facts, increments, drop_counters=drop_counters
                )
            except StoreError as exc:
                # Memory stays at the last durable snapshot, so the next poll diffs and counts
                # this change again once the disk recovers: nothing lost, nothing doubled.
                self._write_failed(exc)
                return False
            self._write_succeeded()
            ds_id = key.datastore_id
            self._totals[ds_id] = self._totals.get(ds_id, EMPTY_TOTALS).plus(
                totals_delta(previous, facts)
            )
            shown_before = key in self._facts
            self._set_facts(key, facts if self._keeps(key, facts) else None)
            if shown_before or key in self._facts:
                self._changed.add(key)
            if drop_counters and key in self._own:
                del self._writable_own()[key]
                self._changed.add(key)
            own = self._own.get(key, NO_OWN_COUNTERS)
            for counter, amount in increments.items():
                stamp = counter.family in TIMESTAMP_FAMILIES
                if not counter.image_set_id:
                    value = amount if stamp else self._counters.get(counter, 0.0) + amount
                    self._counters[counter] = value
                    continue
                if not stamp:
                    amount += own.get(counter.family, counter.workflow_status) or 0.0
                own = own.with_value(counter.family, counter.workflow_status, amount)
            if own.names and own != self._own.get(key):
                self._writable_own()[key] = own
                self._changed.add(key)
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
                moved = self._store.forget(pairs)
            except StoreError as exc:
                self._write_failed(exc)
                return False
            self._write_succeeded()
            for ds_id, delta in moved.items():
                totals = self._totals.get(ds_id, EMPTY_TOTALS).plus(delta)
                if totals.rows:
                    self._totals[ds_id] = totals
                else:
                    self._totals.pop(ds_id, None)
            for key in keys:
                if key in self._facts:
                    self._set_facts(key, None)
                    self._changed.add(key)
                if key in self._own:
                    del self._writable_own()[key]
                    self._changed.add(key)
            self._counters = {
                k: v for k, v in self._counters.items() if k.datastore_id not in gone_datastores
            }
            if keys:
                log.info("forgot %d image sets no longer configured", len(keys))
            return True

    def show_all(self, datastores: Collection[str]) -> None:
        """Keep every image set's facts for these data stores (mode `all`), notable ones else.

        Called when a reload changes data stores' modes; the facts of a data store that now
        shows all its image sets are read from the store.
        """
        full = frozenset(datastores)
        with self.lock:
            if full == self._full:
                return
            for ds_id in self._full - full:
                for key in [k for k, f in self._facts.items() if k.datastore_id == ds_id]:
                    if not self._facts[key].notable:
                        self._set_facts(key, None)
                        self._changed.add(key)
            for ds_id in full - self._full:
                added = self._store.datastore_facts(ds_id)
                self._changed.update(added.keys() - self._facts.keys())
                for key, facts in added.items():
                    self._set_facts(key, facts)
            self._full = full

    def failure_reasons(self, datastore_id: str) -> frozenset[str]:
        """Return the reasons a data store's failures were counted under (bounded per store)."""
        with self.lock:
            return known_reasons(self._counters, datastore_id)

    def copies(
        self,
    ) -> tuple[
        Mapping[ImageSetKey, ImageSetFacts],
        Mapping[CounterKey, float],
        Mapping[ImageSetKey, OwnCounters],
    ]:
        """Return read-only copies of the exported facts and both kinds of counters, for a view.

        The values are immutable, so a shallow copy is a snapshot.
        """
        with self.lock:
            # Lent, not copied: the next change copies first (copy on write), so a cycle with
            # changes copies once, and a view no longer referenced frees its copy.
            self._facts_lent = self._own_lent = True
            return (
                MappingProxyType(self._facts),
                MappingProxyType(dict(self._counters)),
                MappingProxyType(self._own),
            )

    def _writable_facts(self) -> dict[ImageSetKey, ImageSetFacts]:
        """Return the facts to change in place, copied first if a view holds them."""
        if self._facts_lent:
            self._facts = dict(self._facts)
            self._facts_lent = False
        return self._facts

    def _writable_own(self) -> dict[ImageSetKey, OwnCounters]:
        """Return the image sets' own counters to change in place, copied first if lent."""
        if self._own_lent:
            self._own = dict(self._own)
            self._own_lent = False
        return self._own

    def counter(self, key: CounterKey) -> float | None:
        """Return one counter series' value, a data store's or an image set's own."""
        with self.lock:
            if not key.image_set_id:
                return self._counters.get(key)
            own = self._own.get(ImageSetKey(key.datastore_id, key.image_set_id), NO_OWN_COUNTERS)
            return own.get(key.family, key.workflow_status)

    def in_progress(self) -> Mapping[ImageSetKey, tuple[tuple[str, float], ...]]:
        """Return the image sets with a version in progress: per status, its oldest start."""
        with self.lock:
            return MappingProxyType(dict(self._in_progress))

    def failure_codes(self) -> Mapping[str, frozenset[str | None]]:
        """Return, per data store, the reason codes of the image sets' latest failures."""
        with self.lock:
            return MappingProxyType({ds: frozenset(c) for ds, c in self._codes.items()})

    def totals(self) -> Mapping[str, DatastoreTotals]:
        """Return each data store's aggregates (immutable values), for a view."""
        with self.lock:
            return MappingProxyType(dict(self._totals))

    @property
    def generation(self) -> int:
        """Return the store's count of committed changes (read under `lock` for a view)."""
        return self._store.generation

    def take_changes(self) -> frozenset[ImageSetKey]:
        """Return the image sets whose exported lines changed since the last call, and reset."""
        with self.lock:
            changed, self._changed = frozenset(self._changed), set()
            return changed
