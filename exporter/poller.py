"""Poll cycles: plan what to list, list it concurrently within a deadline, diff, apply, publish."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from types import MappingProxyType

from exporter.aws import ApiError, ClientFactory, HealthImagingApi
from exporter.config import Config, DatastoreSettings
from exporter.diff import diff_deleted, diff_versions
from exporter.discovery import Backfill, ListingHint, needs_listing, reconcile_batch
from exporter.metrics.own import ExporterMetrics
from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import ImageSetKey, ImageSetSnapshot, Version
from exporter.reasons import failure_increments
from exporter.reshard import assignment_of, moved_baseline, note_assignment
from exporter.state import FleetState
from exporter.store import DatastoreRecord, SnapshotStore

log = logging.getLogger(__name__)


def shard_of(image_set_id: str, total_shards: int) -> int:
    """Return the shard owning an image set: a stable hash, the same in every process."""
    digest = hashlib.sha256(image_set_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % total_shards


Jobs = dict[ImageSetKey, tuple[HealthImagingApi, ListingHint | None]]


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


@dataclass(frozen=True, slots=True)
class _Execution:
    summary: CycleResult
    unfinished: Mapping[ImageSetKey, ListingHint | None]  # listed neither well nor at all


class Poller:
    """Runs poll cycles over the fleet state: plan what to list, list it, apply what changed."""

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
        self._metrics = metrics
        self._publish = publish
        self._clock = clock
        self._stop = threading.Event()
        self._cycle_lock = threading.Lock()
        self._state = FleetState(store, metrics)
        self._backfills: dict[str, Backfill] = {}
        self._reconcile_position: dict[str, int] = {}
        self._up: dict[str, bool] = {}
        self.completed_cycles = 0
        self._forget_unconfigured()
        self._note_shard_assignment()  # issue 12

    @property
    def has_data(self) -> bool:
        """Tell whether metrics reflect a whole poll: a persisted one, or one of this run's."""
        # Not "any image set applied": halfway through the first poll is not ready.
        return self._state.loaded_image_sets or self.completed_cycles > 0

    @property
    def state_ok(self) -> bool:
        """Tell whether the last write to the snapshot store succeeded."""
        return self._state.writable

    def reconfigure(self, config: Config, clients: ClientFactory) -> None:
        """Switch to a new config between cycles; state of still-configured image sets is kept."""
        with self._cycle_lock:
            self._config = config
            self._clients = clients
            self._up = {ds: up for ds, up in self._up.items() if ds in self._datastore_ids()}
            for ds_id in list(self._backfills):
                # Restarted with the new clients (region, role, budget) on the next cycle.
                self._backfills.pop(ds_id).stop()
            self._forget_unconfigured()
            self._note_shard_assignment()  # issue 12
        self.publish_view()

    def request_stop(self) -> None:
        """Ask a running cycle and the backfills to stop; nothing is left half-written."""
        self._stop.set()
        for backfill in list(self._backfills.values()):
            backfill.stop()

    def _datastore_ids(self) -> set[str]:
        return {ds.datastore_id for ds in self._config.datastores}

    def _in_shard(self, image_set_id: str) -> bool:
        total = self._config.total_shards
        return total == 1 or shard_of(image_set_id, total) == self._config.shard

    def _listed_targets(self, datastore: DatastoreSettings) -> list[ImageSetKey]:
        if datastore.discovers_all:
            return []
        return [
            ImageSetKey(datastore.datastore_id, image_set_id)
            for image_set_id in datastore.image_sets
            if self._in_shard(image_set_id)
        ]

    def _uses_search(self, datastore: DatastoreSettings) -> bool:
        """Whole data stores, and lists long enough that searching for changes pays."""
        if datastore.discovers_all:
            return True
        return len(datastore.image_sets) > self._config.discovery.list_threshold

    def _forget_unconfigured(self) -> None:
        wanted: set[ImageSetKey] = set()
        discovering = set()
        for ds in self._config.datastores:
            if ds.discovers_all:
                discovering.add(ds.datastore_id)
            else:
                wanted.update(self._listed_targets(ds))
        stale = [
            k
            for k in self._state.image_set_keys()
            if k not in wanted
            and not (k.datastore_id in discovering and self._in_shard(k.image_set_id))
        ]
        self._state.forget(stale, self._datastore_ids())

    def _note_shard_assignment(self) -> None:
        """Record, per data store, a change of this process's shard assignment (issue 12)."""
        assignment = assignment_of(self._config.shard, self._config.total_shards)
        now = self._clock()
        for ds_id in sorted(self._datastore_ids()):
            record = self._state.record(ds_id)
            noted = note_assignment(record, assignment, now)
            if noted != record:
                if noted.resharded_at != record.resharded_at:
                    log.info("data store %s: shard assignment now %s", ds_id, assignment)
                self._state.save_record(noted)

    def run_cycle(self) -> CycleResult:
        """Poll every configured image set once; return a summary."""
        with self._cycle_lock:
            started = time.monotonic()
            jobs, cursors, errors = self._plan()
            result = self._execute(jobs, errors, started)
            self._advance_cursors(cursors, result.unfinished)
            for ds in self._config.datastores:
                if ds.discovers_all:
                    self._ensure_backfill(ds)
            self._settle(errors)
            self._metrics.poll_duration.observe(result.summary.duration_seconds)
            self.completed_cycles += 1
        self.publish_view()
        return result.summary

    def _plan(self) -> tuple[Jobs, dict[str, float], dict[str, Counter[str]]]:
        """Decide what this cycle lists: lists of ids, search hits, and reconciliation."""
        errors = {ds.datastore_id: Counter[str]() for ds in self._config.datastores}
        jobs: Jobs = {}
        cursors: dict[str, float] = {}
        for ds in self._config.datastores:
            api = self._clients.for_datastore(ds)
            if not self._uses_search(ds):
                jobs.update((key, (api, None)) for key in self._listed_targets(ds))
                continue
            try:
                found, cursors[ds.datastore_id] = self._search_changes(ds, api)
            except ApiError as exc:
                errors[ds.datastore_id][exc.outcome] += 1
                log.error("data store %s: change detection failed: %s", ds.datastore_id, exc)
                found = {}
            jobs.update((key, (api, hint)) for key, hint in found.items())
            jobs.update((key, (api, None)) for key in self._reconcile(ds) if key not in jobs)
        return jobs, cursors, errors

    def _execute(self, jobs: Jobs, errors: dict[str, Counter[str]], started: float) -> _Execution:
        """List every job's versions on a bounded pool within the deadline; apply as they come."""
        deadline = started + self._config.poll.deadline_seconds
        denied: set[str] = set()

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
        unfinished: set[ImageSetKey] = set(jobs)
        pool = ThreadPoolExecutor(self._config.poll.concurrency, thread_name_prefix="poll")
        try:
            pending: dict[Future[tuple[Version, ...]], ImageSetKey] = {
                pool.submit(fetch, key, api): key for key, (api, _) in jobs.items()
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
                        outcome = self._handle(key, future.result(), jobs[key][1])
                    except ApiError as exc:
                        outcome = self._handle_error(key, exc)
                    if outcome in ("changed", "unchanged", "deleted"):
                        unfinished.discard(key)
                    if outcome == "changed":
                        changed += 1
                    elif outcome == "skipped":
                        failed += 1  # the data store's denial is already counted once
                    elif outcome not in ("unchanged", "deleted"):
                        errors[key.datastore_id][outcome] += 1
                        failed += 1
            if pending and self._stop.is_set():
                # A shutdown, not a fault: nothing is counted, the next start polls them.
                log.info(
                    "poll cycle interrupted by shutdown: %d image sets not polled", len(pending)
                )
                pending.clear()
            for key in pending.values():
                errors[key.datastore_id]["timeout"] += 1
                timed_out += 1
            if pending:
                log.warning(
                    "poll cycle stopped with %d image sets not polled (deadline %.0fs)",
                    len(pending),
                    self._config.poll.deadline_seconds,
                )
        finally:
            # Stuck calls end at their read timeout; their results are never applied.
            pool.shutdown(wait=False, cancel_futures=True)
        duration = time.monotonic() - started
        # A quiet cycle is not news at the default level; changes and failures are.
        log.log(
            logging.INFO if changed or failed or timed_out else logging.DEBUG,
            "poll finished: %d image sets, %d changed, %d failed, %d timed out in %.2fs",
            len(jobs),
            changed,
            failed,
            timed_out,
            duration,
        )
        return _Execution(
            CycleResult(len(jobs), failed, timed_out, changed, duration),
            {k: jobs[k][1] for k in unfinished},
        )

    def _settle(self, errors: dict[str, Counter[str]]) -> None:
        """Count the cycle's errors and record each data store's health."""
        now = self._clock()
        for ds_id, reasons in errors.items():
            for reason, count in reasons.items():
                self._metrics.poll_errors.labels(ds_id, reason).inc(count)
            self._up[ds_id] = not reasons
            if not reasons:
                self._state.save_record(replace(self._state.record(ds_id), last_success=now))

    def _handle(
        self, key: ImageSetKey, versions: tuple[Version, ...], hint: ListingHint | None
    ) -> str:
        with self._state.lock:
            previous = self._state.get(key)
            if previous is None and self._created_while_watched(key, hint):
                # A new image set, not an old one met late: its whole history is news.
                previous = ImageSetSnapshot(key, ())
            if previous is None:  # issue 12: an image set moved here by a reshard
                watched_until = self._state.record(key.datastore_id).watched_until
                overlap = self._config.discovery.overlap_seconds
                previous = moved_baseline(key, versions, watched_until, overlap)
            change = diff_versions(key, previous, versions)
            if change.failed:  # issue 12: failures by bounded reason
                known = self._state.failure_reasons(key.datastore_id)
                extra = failure_increments(key, change.failed, known)
                change = replace(change, increments={**change.increments, **extra})
            if hint is not None and hint.updated_at is not None:
                change = replace(
                    change, snapshot=replace(change.snapshot, seen_updated_at=hint.updated_at)
                )
            if previous is not None and change.snapshot == previous:
                return "unchanged"
            if not self._state.apply(change):
                return "state_error"
        if change.baseline:
            log.debug("image set %s/%s: baseline of %d versions", *key, len(versions))
        for version in change.failed:
            log.warning(
                "image set %s/%s: version %d is %s (reason %s)",  # issue 12: not the message
                *key,
                version.version_id,
                version.workflow_status,
                version.reason or "other",
            )
        if change.vanished:
            log.warning("image set %s/%s: %d versions left the list", *key, change.vanished)
        return "changed"

    def _handle_error(self, key: ImageSetKey, exc: ApiError) -> str:
        if exc.outcome == "not_found":
            with self._state.lock:
                previous = self._state.get(key)
                change = diff_deleted(previous, self._clock())
                if change is not None:
                    if not self._state.apply(change, drop_counters=True):
                        return "state_error"
                    log.warning("image set %s/%s: deleted", *key)
                    return "deleted"
                if previous is not None:  # already recorded as deleted
                    return "deleted"
        if exc.outcome == "access_denied":
            log.error("data store %s: %s", key.datastore_id, exc)
        elif exc.outcome not in ("skipped", "timeout"):
            log.error("image set %s/%s: %s", *key, exc)
        return exc.outcome

    def _created_while_watched(self, key: ImageSetKey, hint: ListingHint | None) -> bool:
        started = self._state.record(key.datastore_id).discovery_started
        return (
            hint is not None
            and hint.created_at is not None
            and started is not None
            and hint.created_at >= started
        )

    def _search_changes(
        self, datastore: DatastoreSettings, api: HealthImagingApi
    ) -> tuple[dict[ImageSetKey, ListingHint], float]:
        """Return image sets updated since the cursor that the snapshot lags, and the new cursor."""
        ds_id = datastore.datastore_id
        record = self._state.record(ds_id)
        now = self._clock()
        found: dict[ImageSetKey, ListingHint] = {}
        if record.discovery_started is None:
            # First sight of the data store: from now on changes are searched for; what
            # came before is listed by the backfill (or, for a list, by this first cycle).
            self._state.save_record(replace(record, discovery_started=now, cursor=now))
        else:
            since = record.cursor if record.cursor is not None else now
            since -= self._config.discovery.overlap_seconds
            allowed = None if datastore.discovers_all else set(datastore.image_sets)
            for summary in api.search_updated(ds_id, since, now):
                if allowed is not None and summary.image_set_id not in allowed:
                    continue
                if not self._in_shard(summary.image_set_id):
                    continue
                key = ImageSetKey(ds_id, summary.image_set_id)
                if needs_listing(self._state.get(key), summary):
                    found[key] = ListingHint(summary.updated_at, summary.created_at)
        if not datastore.discovers_all:
            missing = [k for k in self._listed_targets(datastore) if self._state.get(k) is None]
            found.update((key, ListingHint()) for key in missing if key not in found)
        return found, now

    def _advance_cursors(
        self, cursors: dict[str, float], unfinished: Mapping[ImageSetKey, ListingHint | None]
    ) -> None:
        """Move each cursor to its search's end, or back to the oldest change not yet listed."""
        for ds_id, until in cursors.items():
            behind = [
                hint.updated_at
                for key, hint in unfinished.items()
                if key.datastore_id == ds_id and hint is not None and hint.updated_at is not None
            ]
            cursor = min([until, *behind])
            record = self._state.record(ds_id)
            if record.cursor != cursor:
                self._state.save_record(replace(record, cursor=cursor))

    def _reconcile(self, datastore: DatastoreSettings) -> list[ImageSetKey]:
        """Pick this cycle's share of the periodic full re-listing."""
        ds_id = datastore.datastore_id
        if datastore.discovers_all and not self._state.record(ds_id).backfill_complete:
            return []
        batch, self._reconcile_position[ds_id] = reconcile_batch(
            self._state.image_set_keys(ds_id),
            self._reconcile_position.get(ds_id, 0),
            self._config.poll.interval_seconds,
            self._config.discovery.reconcile_seconds,
        )
        return batch

    def _ensure_backfill(self, datastore: DatastoreSettings) -> None:
        ds_id = datastore.datastore_id
        record = self._state.record(ds_id)
        running = self._backfills.get(ds_id)
        if record.backfill_complete or record.discovery_started is None or self._stop.is_set():
            return
        if running is not None and running.running:
            return
        self._backfills[ds_id] = Backfill(
            ds_id,
            self._clients.for_datastore(datastore),
            self,
            until=record.discovery_started,
            token=record.backfill_token,
            listed=record.backfill_listed,
            concurrency=self._config.poll.concurrency,
            in_shard=self._in_shard,
        ).start()

    def is_known(self, key: ImageSetKey) -> bool:
        """Tell whether an image set has a snapshot (the backfill skips those)."""
        return self._state.get(key) is not None

    def apply_listing(
        self, key: ImageSetKey, versions: tuple[Version, ...], hint: ListingHint
    ) -> None:
        """Diff and persist a listing made outside a cycle (the backfill)."""
        self._handle(key, versions, hint)

    def save_backfill(self, datastore_id: str, token: str | None, listed: int, done: bool) -> None:
        """Persist the backfill's progress."""
        with self._state.lock:
            record = self._state.record(datastore_id)
            self._state.save_record(
                replace(
                    record, backfill_token=token, backfill_listed=listed, backfill_complete=done
                )
            )

    def view(self) -> FleetView:
        """Build an immutable view of the current state for rendering."""
        config = self._config
        with self._state.lock:
            image_sets, counters = self._state.copies()
            datastores = {
                ds.datastore_id: self._datastore_view(ds, self._state.record(ds.datastore_id))
                for ds in config.datastores
            }
        return FleetView(image_sets, counters, MappingProxyType(datastores))

    def _datastore_view(self, ds: DatastoreSettings, record: DatastoreRecord) -> DatastoreView:
        return DatastoreView(
            datastore_id=ds.datastore_id,
            per_image_set=self._config.metrics.mode_for(ds),
            up=self._up.get(ds.datastore_id),
            last_success=record.last_success,
            discovers_all=ds.discovers_all,
            backfill_listed=record.backfill_listed,
            backfill_complete=record.backfill_complete,
            region=ds.region or self._config.aws.region,
        )

    def publish_view(self) -> None:
        """Hand the current view to whoever renders it."""
        self._publish(self.view())
