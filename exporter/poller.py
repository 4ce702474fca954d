"""One poll cycle: fetch version lists concurrently within a deadline, diff, persist, publish."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from types import MappingProxyType

from exporter.aws import ApiError, ClientFactory, HealthImagingApi
from exporter.config import Config, DatastoreSettings
from exporter.diff import ImageSetChange, diff_deleted, diff_versions
from exporter.metrics.own import ExporterMetrics
from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import CounterKey, ImageSetKey, ImageSetSnapshot, Version
from exporter.store import DatastoreRecord, SnapshotStore, StoreError

log = logging.getLogger(__name__)


def shard_of(image_set_id: str, total_shards: int) -> int:
    """Return the shard owning an image set: a stable hash, the same in every process."""
    digest = hashlib.sha256(image_set_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % total_shards


@dataclass(frozen=True, slots=True)
class CycleResult:
    """What a cycle achieved."""

    polled: int
    failed: int
    timed_out: int
    changed: int
    duration_seconds: float

    @property
    def ok(self) -> bool:
        """Tell whether every image set was polled without error."""
        return self.failed == 0 and self.timed_out == 0


class Poller:
    """Owns the in-memory snapshot and runs poll cycles; only the cycle thread writes state."""

    def __init__(
        self,
        config: Config,
        clients: ClientFactory,
        store: SnapshotStore,
        metrics: ExporterMetrics,
        publish: Callable[[FleetView], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._clients = clients
        self._store = store
        self._metrics = metrics
        self._publish = publish
        self._clock = clock
        self._stop = threading.Event()
        self._cycle_lock = threading.Lock()
        stored = store.load()
        self._image_sets: dict[ImageSetKey, ImageSetSnapshot] = stored.image_sets
        self._counters: dict[CounterKey, float] = stored.counters
        self._records: dict[str, DatastoreRecord] = stored.datastores
        self._up: dict[str, bool] = {}
        self._state_ok = True
        self.completed_cycles = 0
        self._forget_unconfigured()

    @property
    def has_data(self) -> bool:
        """Tell whether there is anything to serve yet (persisted or polled)."""
        return bool(self._image_sets) or self.completed_cycles > 0

    def reconfigure(self, config: Config, clients: ClientFactory) -> None:
        """Switch to a new config between cycles; state of still-configured image sets is kept."""
        with self._cycle_lock:
            self._config = config
            self._clients = clients
            self._up = {ds: up for ds, up in self._up.items() if ds in self._datastore_ids()}
            self._forget_unconfigured()
        self.publish_view()

    def request_stop(self) -> None:
        """Ask a running cycle to stop after what it is applying; nothing half-written."""
        self._stop.set()

    def _datastore_ids(self) -> set[str]:
        return {ds.datastore_id for ds in self._config.datastores}

    def _targets(self, datastore: DatastoreSettings) -> list[ImageSetKey]:
        if datastore.discovers_all:
            return [
                key
                for key, snap in self._image_sets.items()
                if key.datastore_id == datastore.datastore_id and not snap.is_deleted
            ]
        total = self._config.total_shards
        return [
            ImageSetKey(datastore.datastore_id, image_set_id)
            for image_set_id in datastore.image_sets
            if total == 1 or shard_of(image_set_id, total) == self._config.shard
        ]

    def _forget_unconfigured(self) -> None:
        wanted: set[ImageSetKey] = set()
        discovering = set()
        for ds in self._config.datastores:
            if ds.discovers_all:
                discovering.add(ds.datastore_id)
            else:
                wanted.update(self._targets(ds))
        stale = [
            k for k in self._image_sets if k not in wanted and k.datastore_id not in discovering
        ]
        if not stale:
            return
        try:
            self._store.forget(stale)
        except StoreError as exc:
            log.error("%s", exc)
            return
        for key in stale:
            del self._image_sets[key]
        stale_set = set(stale)
        self._counters = {
            k: v
            for k, v in self._counters.items()
            if (k.datastore_id, k.image_set_id) not in stale_set
            and (k.image_set_id or k.datastore_id in self._datastore_ids())
        }
        log.info("forgot %d image sets no longer configured", len(stale))

    def run_cycle(self) -> CycleResult:
        """Poll every configured image set once; return a summary."""
        with self._cycle_lock:
            started = time.monotonic()
            result = self._run_cycle(started)
            self._metrics.poll_duration.observe(result.duration_seconds)
            self.completed_cycles += 1
        self.publish_view()
        return result

    def _run_cycle(self, started: float) -> CycleResult:
        config = self._config
        deadline = started + config.poll.deadline_seconds
        errors: dict[str, Counter[str]] = {ds.datastore_id: Counter() for ds in config.datastores}
        denied: set[str] = set()
        jobs: list[tuple[ImageSetKey, HealthImagingApi]] = []
        for ds in config.datastores:
            api = self._clients.for_datastore(ds)
            jobs.extend((key, api) for key in self._targets(ds))

        def fetch(key: ImageSetKey, api: HealthImagingApi) -> tuple[Version, ...]:
            if key.datastore_id in denied:
                raise ApiError("skipped", "access to the data store was denied")
            if self._stop.is_set() or time.monotonic() > deadline:
                raise ApiError("timeout", "skipped: the cycle's deadline passed")
            try:
                return api.list_image_set_versions(*key)
            except ApiError as exc:
                if exc.outcome == "access_denied":
                    # Here, not in the cycle thread: the next worker must see it at once.
                    denied.add(key.datastore_id)
                raise

        changed = failed = timed_out = 0
        pool = ThreadPoolExecutor(config.poll.concurrency, thread_name_prefix="poll")
        try:
            pending: dict[Future[tuple[Version, ...]], ImageSetKey] = {
                pool.submit(fetch, key, api): key for key, api in jobs
            }
            while pending and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Short waits, so a stop request is noticed promptly.
                done, _ = wait(pending, timeout=min(remaining, 0.25), return_when=FIRST_COMPLETED)
                for future in done:
                    key = pending.pop(future)
                    try:
                        outcome = self._handle(key, future.result())
                    except ApiError as exc:
                        outcome = self._handle_error(key, exc)
                    if outcome == "changed":
                        changed += 1
                    elif outcome == "skipped":
                        failed += 1  # the data store's denial is already counted once
                    elif outcome not in ("unchanged", "deleted"):
                        errors[key.datastore_id][outcome] += 1
                        failed += 1
            for key in pending.values():
                errors[key.datastore_id]["timeout"] += 1
                timed_out += 1
            if pending:
                log.warning(
                    "poll cycle stopped with %d image sets not polled (deadline %.0fs)",
                    len(pending),
                    config.poll.deadline_seconds,
                )
        finally:
            # Stuck calls end at their read timeout; their results are never applied.
            pool.shutdown(wait=False, cancel_futures=True)
        now = self._clock()
        for ds_id, reasons in errors.items():
            for reason, count in reasons.items():
                self._metrics.poll_errors.labels(ds_id, reason).inc(count)
            up = not reasons
            self._up[ds_id] = up
            if up:
                self._save_record(
                    replace(self._records.get(ds_id, DatastoreRecord(ds_id)), last_success=now)
                )
        duration = time.monotonic() - started
        log.info(
            "poll finished: %d image sets, %d changed, %d failed, %d timed out in %.2fs",
            len(jobs),
            changed,
            failed,
            timed_out,
            duration,
        )
        return CycleResult(len(jobs), failed, timed_out, changed, duration)

    def _handle(self, key: ImageSetKey, versions: tuple[Version, ...]) -> str:
        previous = self._image_sets.get(key)
        change = diff_versions(key, previous, versions)
        if previous is not None and change.snapshot == previous:
            return "unchanged"
        if not self._apply(change, drop_counters=False):
            return "state_error"
        if change.baseline:
            log.info("image set %s/%s: baseline of %d versions", *key, len(versions))
        for version in change.failed:
            log.warning(
                "image set %s/%s: version %d is %s: %s",
                *key,
                version.version_id,
                version.workflow_status,
                version.message or "no message",
            )
        if change.vanished:
            log.warning("image set %s/%s: %d versions left the list", *key, change.vanished)
        return "changed"

    def _handle_error(self, key: ImageSetKey, exc: ApiError) -> str:
        if exc.outcome == "not_found":
            change = diff_deleted(self._image_sets.get(key), self._clock())
            if change is not None:
                if not self._apply(change, drop_counters=True):
                    return "state_error"
                log.warning("image set %s/%s: deleted", *key)
                return "deleted"
            if key in self._image_sets:  # already recorded as deleted
                return "deleted"
        if exc.outcome == "access_denied":
            log.error("data store %s: %s", key.datastore_id, exc)
        elif exc.outcome not in ("skipped", "timeout"):
            log.error("image set %s/%s: %s", *key, exc)
        return exc.outcome

    def _apply(self, change: ImageSetChange, drop_counters: bool) -> bool:
        key = change.snapshot.key
        try:
            self._store.apply(change.snapshot, change.increments, drop_counters=drop_counters)
        except StoreError as exc:
            # Memory stays at the last durable snapshot, so the next cycle diffs and counts
            # this change again once the disk recovers: nothing lost, nothing doubled.
            self._metrics.state_write_errors.inc()
            if self._state_ok:
                log.error("%s; serving the last metrics until writes succeed again", exc)
            self._state_ok = False
            self._metrics.state_writable.set(0)
            return False
        if not self._state_ok:
            log.info("state writes succeed again")
            self._state_ok = True
            self._metrics.state_writable.set(1)
        self._image_sets[key] = change.snapshot
        if drop_counters:
            self._counters = {
                k: v for k, v in self._counters.items() if (k.datastore_id, k.image_set_id) != key
            }
        for counter, amount in change.increments.items():
            self._counters[counter] = self._counters.get(counter, 0.0) + amount
        return True

    def _save_record(self, record: DatastoreRecord) -> None:
        try:
            self._store.save_datastore(record)
        except StoreError as exc:
            self._metrics.state_write_errors.inc()
            log.error("%s", exc)
        self._records[record.datastore_id] = record

    @property
    def state_ok(self) -> bool:
        """Tell whether the last write to the snapshot store succeeded."""
        return self._state_ok

    def view(self) -> FleetView:
        """Build an immutable view of the current state for rendering."""
        config = self._config
        datastores = {}
        for ds in config.datastores:
            record = self._records.get(ds.datastore_id)
            datastores[ds.datastore_id] = DatastoreView(
                datastore_id=ds.datastore_id,
                per_image_set=config.metrics.mode_for(ds),
                up=self._up.get(ds.datastore_id),
                last_success=record.last_success if record else None,
                discovers_all=ds.discovers_all,
                backfill_listed=record.backfill_listed if record else 0,
                backfill_complete=record.backfill_complete if record else False,
            )
        return FleetView(
            image_sets=MappingProxyType(dict(self._image_sets)),
            counters=MappingProxyType(dict(self._counters)),
            datastores=MappingProxyType(datastores),
        )

    def publish_view(self) -> None:
        """Hand the current view to whoever renders it."""
        self._publish(self.view())
