"""Poll cycles: search -> plan (pure) -> execute (pool, deadline) -> ingest -> settle -> publish.

The poller only sequences the parts: `discovery` searches and keeps cursors, `plan` decides what
to list, `execute` lists it, `ingest` applies each listing. It never starts a thread: the cycle
runs on its caller's thread (the runtime's scheduler, or `--once`), listings on the listing pool
it is given, and backfill pages on whichever thread calls `run_backfills`.

A cycle is total: whatever goes wrong with one image set or one data store is counted for it
(`healthimaging_up` 0) and the cycle goes on; the cycle always ends by publishing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MappingProxyType

from exporter.aws import ApiError, ClientFactory, HealthImagingApi, ImageSetSummary
from exporter.config import Config, DatastoreSettings
from exporter.discovery import Backfill, Discovery
from exporter.execute import Execution, ListingPool
from exporter.imports.watcher import ImportJobs
from exporter.ingest import Ingest, Ingested, describe
from exporter.lifecycle import DatastoreLifecycle
from exporter.metrics.own import EventMetrics, ExporterMetrics
from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import ImageSetKey
from exporter.outcomes import Outcome
from exporter.plan import (
    DatastorePlan,
    ListingHint,
    already_seen,
    plan_datastore,
    shard_of,
    shown_in_full,
    uses_search,
    wanted_keys,
    watches,
)
from exporter.reshard import assignment_of, note_assignment
from exporter.state import FleetState
from exporter.store import DatastoreRecord

__all__ = ["CycleResult", "Poller", "shard_of"]

log = logging.getLogger(__name__)

# How long one call of run_backfills keeps paging before it returns to its scheduler.
BACKFILL_SLICE_SECONDS = 5.0
# The share of a cycle's deadline the import-job calls may take (exporter.imports).
IMPORT_SHARE = 0.5
# Listings the event path runs at once (its own pool, beside the cycle's and the backfill's).
EVENT_CONCURRENCY = 4
# A listing found by a cycle with one of these results is a change (events_missed_total).
CHANGES = (Ingested.CHANGED, Ingested.DELETED)
FORGET_PAGE = 10_000  # keys looked at per forget, when a reload or start drops image sets


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
    """Runs poll cycles and backfill pages over the fleet state."""

    def __init__(
        self,
        config: Config,
        clients: ClientFactory,
        state: FleetState,
        metrics: ExporterMetrics,
        publish: Callable[[Callable[[], FleetView]], None],
        clock: Callable[[], float] = time.time,
        imports: ImportJobs | None = None,
    ) -> None:
        self._config = config
        self._imports = imports  # None: import jobs are not watched (unit tests' fakes)
        self._clients = clients
        self._metrics = metrics
        self._publish = publish
        self._clock = clock
        self._stop = threading.Event()
        self._cycle_lock = threading.Lock()
        self._backfill_lock = threading.Lock()  # held while a page runs
        self._state = state
        self._ingest = Ingest(state, clock)
        self._discovery = Discovery(state, clock)
        self._cycle_pool = ListingPool("poll", config.poll.concurrency)
        self._backfill_pool = ListingPool("backfill", config.poll.concurrency)
        self._event_pool = ListingPool("event", min(EVENT_CONCURRENCY, config.poll.concurrency))
        # Set by the service while `events` is configured: cycles then count missed events.
        self.event_metrics: EventMetrics | None = None
        # Image sets an event named since their last listing by a cycle (or an event listing
        # that changed them): a change a cycle finds in one of these was announced.
        self._announced: set[ImageSetKey] = set()
        self._backfills: dict[str, Backfill] = {}
        self._up: dict[str, bool] = {}
        self._lifecycle = DatastoreLifecycle()
        self.completed_cycles = 0
        self._ingest.overlap_seconds = config.discovery.overlap_seconds
        self._forget_unconfigured()
        self._note_shard_assignment()

    @property
    def has_data(self) -> bool:
        """Tell whether metrics reflect a whole poll: a persisted one, or one of this run's."""
        # Not "any image set applied": halfway through the first poll is not ready.
        return self._state.loaded_image_sets or self.completed_cycles > 0

    @property
    def state_ok(self) -> bool:
        """Tell whether the snapshot store can be written (probed at start, then each write)."""
        return self._state.writable

    @property
    def config(self) -> Config:
        """Return the config in force (replaced whole by a reload)."""
        return self._config

    @property
    def stopping(self) -> bool:
        """Tell whether a stop was requested."""
        return self._stop.is_set()

    def reconfigure(self, config: Config, clients: ClientFactory) -> None:
        """Switch to a new config between cycles; state of still-configured image sets is kept."""
        with self._cycle_lock:
            for backfill in self._backfills.values():
                backfill.cancelled.set()  # a page in progress stops at its next image set
            with self._backfill_lock:
                # Restarted with the new clients (region, role, budget) by the next cycle.
                self._backfills = {}
            self._config = config
            self._clients = clients
            ids = {ds.datastore_id for ds in config.datastores}
            self._up = {ds: up for ds, up in self._up.items() if ds in ids}
            self._discovery.forget(ids)
            self._lifecycle.forget(ids)
            self._lifecycle.expire()
            self._cycle_pool.resize(config.poll.concurrency)
            self._backfill_pool.resize(config.poll.concurrency)
            self._ingest.overlap_seconds = config.discovery.overlap_seconds
            self._forget_unconfigured()
            self._note_shard_assignment()
            self._state.show_all(shown_in_full(config))
        self.publish_view()

    def request_stop(self) -> None:
        """Ask a running cycle and backfill page to stop; nothing is left half-written."""
        self._stop.set()

    def close(self) -> None:
        """Stop, drop queued calls and join the listing threads (in-flight calls end first)."""
        self.request_stop()
        self._cycle_pool.close()
        self._backfill_pool.close()
        self._event_pool.close()

    def _forget_unconfigured(self) -> None:
        config = self._config
        ids = {ds.datastore_id for ds in config.datastores}
        # A whole data store in one shard keeps every key: no need to walk a million of them.
        whole = {ds.datastore_id for ds in config.datastores if ds.discovers_all}
        if config.total_shards > 1:
            whole = set()
        for ds_id in sorted(self._state.datastore_ids() - whole):
            page: list[ImageSetKey] = []
            for key in self._state.image_set_keys(ds_id):
                page.append(key)
                if len(page) >= FORGET_PAGE:
                    self._forget_page(config, page, ids)
                    page = []
            self._forget_page(config, page, ids)
        self._state.forget([], ids)  # data stores no longer configured: their own counters

    def _forget_page(self, config: Config, page: list[ImageSetKey], ids: set[str]) -> None:
        wanted = wanted_keys(config, page)
        unwanted = [k for k in page if k not in wanted]
        if unwanted:
            self._state.forget(unwanted, ids)

    def _note_shard_assignment(self) -> None:
        """Record, per data store, a change of this process's shard assignment (reshards)."""
        assignment = assignment_of(self._config.shard, self._config.total_shards)
        now = self._clock()
        for ds_id in sorted({ds.datastore_id for ds in self._config.datastores}):
            try:
                record = self._state.record(ds_id)
                noted = note_assignment(
                    record, assignment, now, self._config.initial_lookback_seconds
                )
                if noted != record:
                    if noted.resharded_at != record.resharded_at:
                        log.info("data store %s: shard assignment now %s", ds_id, assignment)
                    self._state.save_record(noted)
            except Exception as exc:  # bookkeeping for reshards must not stop the exporter
                self._metrics.poll_errors.labels(ds_id, Outcome.INTERNAL_ERROR).inc()
                log.error("data store %s: internal error: %s", ds_id, describe(exc))
                log.debug("data store %s: internal error", ds_id, exc_info=exc)

    def run_cycle(self) -> CycleResult:
        """Poll every configured image set once; return a summary. Never raises."""
        started = time.monotonic()
        try:
            with self._cycle_lock:
                try:
                    result = self._cycle(started)
                except Exception as exc:  # the last line of defence: _cycle counts its own
                    log.error("poll cycle: internal error: %s", describe(exc))
                    log.debug("poll cycle: internal error", exc_info=exc)
                    for ds in self._config.datastores:
                        self._up[ds.datastore_id] = False
                        self._metrics.poll_errors.labels(
                            ds.datastore_id, Outcome.INTERNAL_ERROR
                        ).inc()
                    failed = len(self._config.datastores)
                    result = CycleResult(0, failed, 0, 0, time.monotonic() - started)
        finally:
            self.publish_view()
        # Only now: /-/ready must not answer before /metrics shows this poll.
        self.completed_cycles += 1
        return result

    def _cycle(self, started: float) -> CycleResult:
        config = self._config
        errors = {ds.datastore_id: Counter[Outcome]() for ds in config.datastores}
        try:
            plans, apis = self._plan(config, errors, started + config.poll.deadline_seconds)
            if self._imports is not None:
                # Before the listings, so a long cycle never starves them, and with half the
                # cycle's time at most, so a throttled import budget never starves the listings.
                self._imports.poll(
                    config,
                    apis,
                    self._clients.manifests_for_datastore,
                    errors,
                    started + config.poll.deadline_seconds * IMPORT_SHARE,
                    self._stop,
                )
            result = self._execute(config, plans, apis, errors, started)
            for ds in config.datastores:
                if not ds.discovers_all:
                    continue
                if self._lifecycle.listable(ds.datastore_id):
                    self._ensure_backfill(config, ds)
                else:
                    self._pause_backfill(ds.datastore_id)
        except Exception as exc:
            # A bug outside any one image set: every data store is reported down this cycle.
            log.error("poll cycle: internal error: %s", describe(exc))
            log.debug("poll cycle: internal error", exc_info=exc)
            for reasons in errors.values():
                reasons[Outcome.INTERNAL_ERROR] += 1
            duration = time.monotonic() - started
            result = CycleResult(0, len(errors), 0, 0, duration)
        self._settle(errors)
        self._metrics.poll_duration.observe(result.duration_seconds)
        return result

    def _plan(
        self, config: Config, errors: dict[str, Counter[Outcome]], deadline: float
    ) -> tuple[list[DatastorePlan], dict[str, HealthImagingApi]]:
        """Check each data store's status when due, search what needs searching, then plan.

        A data store that has no image sets to read (CREATING, CREATE_FAILED, DELETING,
        DELETED) is not searched or listed: the calls would only fail, and a deleted data
        store's image sets would each be counted as deleted; its last known state and counters
        stay as they were, and its search cursor waits for it to be ACTIVE again.
        """
        plans: list[DatastorePlan] = []
        apis: dict[str, HealthImagingApi] = {}
        for ds in config.datastores:
            ds_id = ds.datastore_id
            try:
                apis[ds_id] = api = self._clients.for_datastore(ds)
                self._lifecycle.refresh(config, ds, api, errors[ds_id], deadline)
                if not self._lifecycle.listable(ds_id):
                    continue
                hits, until = self._search(config, ds, api, errors[ds_id], deadline)
                reconcile = self._discovery.reconcile(config, ds)
                plans.append(plan_datastore(config, ds, self._state.get, hits, until, reconcile))
            except Exception as exc:
                errors[ds_id][Outcome.INTERNAL_ERROR] += 1
                log.error("data store %s: internal error: %s", ds_id, describe(exc))
                log.debug("data store %s: internal error", ds_id, exc_info=exc)
        return plans, apis

    def _search(
        self,
        config: Config,
        ds: DatastoreSettings,
        api: HealthImagingApi,
        errors: Counter[Outcome],
        deadline: float,
    ) -> tuple[list[ImageSetSummary] | None, float | None]:
        if not uses_search(config, ds):
            return None, None
        try:
            return self._discovery.search(config, ds, api, deadline)
        except ApiError as exc:
            errors[Outcome(exc.outcome)] += 1
            log.error("data store %s: change detection failed: %s", ds.datastore_id, exc)
            return None, None

    def _execute(
        self,
        config: Config,
        plans: list[DatastorePlan],
        apis: dict[str, HealthImagingApi],
        errors: dict[str, Counter[Outcome]],
        started: float,
    ) -> CycleResult:
        """List every planned image set within the deadline; ingest each result as it comes."""
        hints: dict[ImageSetKey, ListingHint | None] = {}
        for plan in plans:
            hints.update(plan.targets)
        jobs = {key: apis[key.datastore_id] for key in hints}
        execution = Execution(
            jobs, self._cycle_pool, started + config.poll.deadline_seconds, self._stop
        )
        changed = failed = timed_out = 0
        unfinished = dict(hints)
        missed: Counter[str] = Counter()
        for listing in execution:
            known = self._state.get(listing.key) is not None
            outcome = self._ingest.listing(listing, hints[listing.key])
            if outcome in (Ingested.CHANGED, Ingested.UNCHANGED, Ingested.DELETED):
                del unfinished[listing.key]
                changed += outcome == Ingested.CHANGED
                if self._was_missed(listing.key, known, outcome):
                    missed[listing.key.datastore_id] += 1
                continue
            failed += 1
            if outcome != Outcome.SKIPPED:  # the data store's denial is already counted once
                errors[listing.key.datastore_id][Outcome(outcome)] += 1
        left = execution.not_reached
        if left and execution.interrupted:
            # A shutdown, not a fault: nothing is counted, the next start polls them.
            log.info("poll cycle interrupted by shutdown: %d image sets not polled", len(left))
        elif left:
            for key in left:
                errors[key.datastore_id][Outcome.TIMEOUT] += 1
            timed_out = len(left)
            log.warning(
                "poll cycle stopped with %d image sets not polled (deadline %.0fs)",
                len(left),
                config.poll.deadline_seconds,
            )
        if self.event_metrics is not None:
            for ds_id, count in missed.items():
                self.event_metrics.events_missed.labels(ds_id).inc(count)
        self._discovery.advance_cursors(
            {p.datastore_id: p.searched_until for p in plans if p.searched_until is not None},
            unfinished.items(),
        )
        duration = time.monotonic() - started
        # A quiet cycle is not news at the default level; changes and failures are. "errors"
        # are image sets whose listing failed, not versions found failed (those are warned of).
        log.log(
            logging.INFO if changed or failed or timed_out else logging.DEBUG,
            "poll finished: %d image sets, %d changed, %d errors, %d timed out in %.2fs",
            len(jobs),
            changed,
            failed,
            timed_out,
            duration,
        )
        return CycleResult(len(jobs), failed, timed_out, changed, duration)

    def _was_missed(self, key: ImageSetKey, known: bool, outcome: Ingested | Outcome) -> bool:
        """Tell whether a cycle's listing found a change no event announced (and forget marks).

        Counted only for image sets with a snapshot before the listing (a first sight is a
        baseline, not a change) and only while the event path is on.
        """
        with self._state.lock:
            announced = key in self._announced
            self._announced.discard(key)
        return self.event_metrics is not None and known and outcome in CHANGES and not announced

    def has_seen(self, key: ImageSetKey, version: int | None, workflow_status: str | None) -> bool:
        """Tell whether the state already holds what an image set event announces."""
        return already_seen(self._state.get(key), version, workflow_status)

    def list_for_events(
        self, targets: dict[ImageSetKey, ListingHint | None]
    ) -> dict[ImageSetKey, Ingested | Outcome]:
        """List image sets events named, now, through the cycles' ingest path; never raises.

        Runs on the caller's thread (the runtime's event job) with listings on the event pool,
        beside a running cycle: listings of one image set are applied in the order they were
        sent. Image sets this process does not watch are left out of the result.
        """
        config = self._config
        settings = {ds.datastore_id: ds for ds in config.datastores}
        jobs: dict[ImageSetKey, HealthImagingApi] = {}
        results: dict[ImageSetKey, Ingested | Outcome] = {}
        sent = time.monotonic()
        for key in targets:
            if not watches(config, key):
                continue
            try:
                jobs[key] = self._clients.for_datastore(settings[key.datastore_id])
            except Exception as exc:
                log.error("image set %s/%s: internal error: %s", *key, describe(exc))
                results[key] = Outcome.INTERNAL_ERROR
                continue
            with self._state.lock:
                self._announced.add(key)
            self._ingest.order(key, sent)
        # Orders older than any listing that can still be in flight are of no use any more.
        self._ingest.forget_order(sent - config.poll.deadline_seconds - 60)
        execution = Execution(
            jobs, self._event_pool, sent + config.poll.deadline_seconds, self._stop
        )
        for listing in execution:
            outcome = self._ingest.listing(listing, targets[listing.key])
            results[listing.key] = outcome
            if outcome in CHANGES:
                with self._state.lock:
                    # The event's change is applied: a later change needs an event of its own.
                    self._announced.discard(listing.key)
        for key in execution.not_reached:
            results[key] = Outcome.TIMEOUT
        return results

    def _settle(self, errors: dict[str, Counter[Outcome]]) -> None:
        """Count the cycle's errors and record each data store's health."""
        now = self._clock()
        for ds_id, reasons in errors.items():
            if not reasons and not self._state.save_record(
                replace(self._state.record(ds_id), last_success=now)
            ):
                reasons[Outcome.STATE_ERROR] += 1
            for reason, count in reasons.items():
                self._metrics.poll_errors.labels(ds_id, reason).inc(count)
            self._up[ds_id] = not reasons

    def _ensure_backfill(self, config: Config, datastore: DatastoreSettings) -> None:
        ds_id = datastore.datastore_id
        record = self._state.record(ds_id)
        if record.backfill_complete or record.discovery_started is None or self._stop.is_set():
            return
        running = self._backfills.get(ds_id)
        if running is not None and not running.complete and not running.cancelled.is_set():
            return
        self._backfills[ds_id] = Backfill(
            ds_id,
            self._clients.for_datastore(datastore),
            config,
            until=record.discovery_started,
            token=record.backfill_token,
            listed=record.backfill_listed,
        )

    def _pause_backfill(self, datastore_id: str) -> None:
        """Stop the backfill of a data store that has no image sets to read (not ACTIVE).

        A page in progress stops at its next image set; the saved token stays, so the next
        cycle that finds the data store readable starts a backfill that resumes from it.
        """
        running = self._backfills.get(datastore_id)
        if running is not None:
            running.cancelled.set()

    @property
    def backfilling(self) -> bool:
        """Tell whether some backfill still has pages to list (a paused one has none now)."""
        return any(
            not b.complete and not b.cancelled.is_set() for b in list(self._backfills.values())
        )

    def run_backfills(self, slice_seconds: float = BACKFILL_SLICE_SECONDS) -> None:
        """Run due backfill pages for about `slice_seconds`; never raises."""
        end = time.monotonic() + slice_seconds
        with self._backfill_lock:
            while not self._stop.is_set():
                due = [b for b in self._backfills.values() if b.due()]
                if not due:
                    break
                for backfill in due:
                    failed = backfill.run_page(
                        self._backfill_pool, self._ingest, self._state, self._stop
                    )
                    if failed is not None:
                        self._metrics.poll_errors.labels(backfill.datastore_id, failed).inc()
                if time.monotonic() >= end:
                    break

    def datastore_changed(self, datastore_id: str) -> None:
        """A data store event arrived: read its status at the next cycle, not a period later."""
        self._lifecycle.mark_due(datastore_id)

    def read_import_job(self, datastore_id: str, job_id: str) -> bool:
        """Read one import job now and apply it as a cycle would; publish if it counted.

        For event-driven reads (an import job's EventBridge event): return whether the job was
        counted as ended; raise ApiError if it cannot be read. False when import jobs are not
        watched for the data store or it is not configured.
        """
        config = self._config
        ds = next((d for d in config.datastores if d.datastore_id == datastore_id), None)
        if self._imports is None or ds is None:
            return False
        api = self._clients.for_datastore(ds)
        counted = self._imports.ingest_job(config, ds, api, job_id)
        if counted:
            self.publish_view()
        return counted

    def view(self) -> FleetView:
        """Build an immutable view of the current state for rendering.

        It takes the state's changes since the last view: build one only to render it.
        """
        config = self._config
        with self._state.lock:
            facts, counters, own = self._state.copies()
            totals = self._state.totals()
            in_progress = self._state.in_progress()
            codes = self._state.failure_codes()
            changed = self._state.take_changes()
            generation = self._state.generation
            datastores = {
                ds.datastore_id: self._datastore_view(ds, self._state.record(ds.datastore_id))
                for ds in config.datastores
            }
        imports = self._imports.views(config) if self._imports is not None else None
        return FleetView(
            facts,
            counters,
            MappingProxyType(datastores),
            imports if imports is not None else MappingProxyType({}),
            totals=totals,
            changed=changed,
            own_counters=own,
            in_progress=in_progress,
            failure_codes=codes,
            generation=generation,
        )

    def _datastore_view(self, ds: DatastoreSettings, record: DatastoreRecord) -> DatastoreView:
        properties = self._lifecycle.known.get(ds.datastore_id)
        return DatastoreView(
            datastore_id=ds.datastore_id,
            per_image_set=self._config.metrics.mode_for(ds),
            up=self._up.get(ds.datastore_id),
            last_success=record.last_success,
            discovers_all=ds.discovers_all,
            backfill_listed=record.backfill_listed,
            backfill_complete=record.backfill_complete,
            region=ds.region or self._config.aws.region,
            name=properties.name if properties is not None else None,
            status=properties.status if properties is not None else None,
        )

    def publish_view(self) -> None:
        """Have the current view rendered (built by the renderer, under its lock: in order)."""
        self._publish(self.view)
