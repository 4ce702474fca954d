"""Wire a config into an exporter: registry, budget, clients, poller, renders, reloads."""

from __future__ import annotations

import functools
import gc
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping

from prometheus_client import CollectorRegistry

from exporter.aws import ApiError, AttemptRecorder, ClientFactory
from exporter.budget import RateBudget
from exporter.config import Config, ConfigError
from exporter.events import EventConsumer
from exporter.imports.watcher import ImportJobs
from exporter.metrics.collectors import DatastoreCollector, EventCollector
from exporter.metrics.exposition import (
    PROMETHEUS_DEFAULT,
    Exposition,
    ExpositionCache,
    Restored,
    render,
)
from exporter.metrics.imports import ImportJobCollector
from exporter.metrics.kept import KeptImageSetLines
from exporter.metrics.own import EventMetrics, ExporterMetrics, process_registry
from exporter.metrics.view import FleetView
from exporter.outcomes import Outcome
from exporter.plan import shown_in_full
from exporter.poller import CycleResult, Poller
from exporter.state import FleetState
from exporter.store import SnapshotStore, StoredBody, StoreError

log = logging.getLogger(__name__)

ConfigLoader = Callable[[], Config]


def budget_for(config: Config, stopping: threading.Event | None = None) -> RateBudget:
    """Return this process's share of the account-wide request budget.

    With `stopping`, a wait for the budget ends as soon as it is set (the attempt is then
    refused), so a stop never waits out a throttled budget.
    """
    rates = {op: rate / config.total_shards for op, rate in config.aws.rate_limits.items()}
    if stopping is None:
        return RateBudget(rates)

    def sleep(seconds: float) -> None:
        stopping.wait(seconds)

    return RateBudget(rates, sleep=sleep)


def load_state(
    store: SnapshotStore, clock: Callable[[], float] = time.time, full: Collection[str] = ()
) -> FleetState:
    """Load the fleet state with the cyclic garbage collector paused, then freeze what it holds.

    The load allocates millions of objects and frees none, so the collections it triggers find
    nothing; frozen, those long-lived objects are not traversed by later collections either
    (measured in docs/performance.md).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return FleetState(store, clock, full)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class StopGate:
    """Refuses new AWS attempts once the exporter is stopping; counts only attempts made.

    A stop then waits at most for the attempts already in flight (botocore's read timeout), not
    for their retries.
    """

    def __init__(self, recorder: AttemptRecorder, stopping: Callable[[], bool]) -> None:
        self._recorder = recorder
        self._stopping = stopping
        self._refused = threading.local()

    def before_attempt(self, operation: str) -> None:
        """Wait for the budget, or refuse the attempt if stopping."""
        self._refused.value = False
        if not self._stopping():
            self._recorder.before_attempt(operation)  # may wait for the budget
        if self._stopping():
            self._refused.value = True
            raise ApiError(Outcome.TIMEOUT, f"{operation}: not sent: the exporter is stopping")

    def after_attempt(self, operation: str, outcome: Outcome) -> None:
        """Count an attempt that was made."""
        if not getattr(self._refused, "value", False):
            self._recorder.after_attempt(operation, outcome)


class ExporterService:
    """The exporter minus its HTTP server and schedule: poll, render, reload."""

    def __init__(
        self,
        config: Config,
        load_config: ConfigLoader | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        store: SnapshotStore | None = None,
    ) -> None:
        self.config = config
        self._load_config = load_config
        self._clock = clock
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.metrics = ExporterMetrics(self.registry)
        # The process's metrics, collected per scrape (see exporter/metrics/exposition.py).
        self.process_registry = process_registry()
        self.cache = ExpositionCache()
        self._render_lock = threading.Lock()
        self._kept = KeptImageSetLines()  # the per-image-set lines, kept between publishes
        self._collectors = (
            EventCollector(),
            DatastoreCollector(),
            ImportJobCollector(),
        )
        self.store = store if store is not None else SnapshotStore(config.state.path)
        try:
            self.state = load_state(self.store, clock, shown_in_full(config))
            self.imports = ImportJobs(self.store, clock)
        except BaseException:
            self.store.close()
            raise
        self._write_failures_counted = 0
        self._stopping = threading.Event()
        self._budget = budget_for(config, self._stopping)
        self._note_config(config)
        self.poller = Poller(
            config,
            self._clients(config),
            self.state,
            self.metrics,
            self._publish,
            clock,
            imports=self.imports,
        )
        self.event_metrics: EventMetrics | None = None
        self.events: EventConsumer | None = None
        self._configure_events(config)
        # Published unbuilt: the first poll, which the daemon starts at once, builds it (or the
        # first scrape, if it comes first), so start-up formats the fleet once, not twice. Until
        # then, what the last process saved at its stop is served, if the state is unchanged.
        self._publish(self.poller.view, prepare=False, restored=self._restored())

    def _configure_events(self, config: Config) -> None:
        """Build (or drop) the event consumer for `config.events`; metrics stay registered."""
        settings = config.events
        if settings is None:
            self.events = None
            self.poller.event_metrics = None
            return
        if self.event_metrics is None:
            self.event_metrics = EventMetrics(self.registry)
        if (
            self.events is not None
            and self.events.settings == settings
            and self.events.queue_url == settings.queue_url_for(config.shard)
        ):
            self.poller.event_metrics = self.event_metrics
            return
        queue = self._clients(config).for_events(settings, config.shard)
        self.events = EventConsumer(
            settings,
            queue,
            self.poller,
            self.event_metrics,
            self.poller.publish_view,
            on_import_job=self.poller.read_import_job,
            on_datastore=self.poller.datastore_changed,
        )
        self.poller.event_metrics = self.event_metrics

    def consume_events(self, slice_seconds: float | None = None) -> None:
        """Receive and apply events for a while (the runtime's event job calls this)."""
        consumer = self.events
        if consumer is None or self._stopping.is_set():
            return
        if slice_seconds is None:
            consumer.run(self._stopping)
        else:
            consumer.run(self._stopping, slice_seconds)

    def _clients(self, config: Config) -> ClientFactory:
        recorder = StopGate(AttemptRecorder(self._budget, self.metrics), self._is_stopping)
        return ClientFactory(config.aws, recorder, pool_size=config.poll.concurrency + 2)

    def _is_stopping(self) -> bool:
        return self._stopping.is_set()

    def _note_config(self, config: Config) -> None:
        self.metrics.reload_successful.set(1)
        self.metrics.reload_success_time.set(self._clock())
        self.metrics.shard.set(config.shard)
        self.metrics.total_shards.set(config.total_shards)
        self.metrics.set_budget(self._budget.configured())

    def _restored(self) -> dict[bool, Restored]:
        """Return the formats a stopped process saved for this state, to serve until built."""
        restored: dict[bool, Restored] = {}
        try:
            for openmetrics in (True, False):
                body = self.store.saved_exposition(openmetrics)
                if body is not None:
                    read = functools.partial(self.store.read_exposition, openmetrics)
                    restored[openmetrics] = Restored(body, read)
        except StoreError as exc:
            log.warning("not serving the saved exposition: %s", exc)
            return {}
        return restored

    def _save_exposition(self) -> None:
        """Keep the built formats for the next start, if they show the state as it is now.

        At a stop only: the next start serves them at once (a million image sets take seconds
        to format), and only while the state file has not changed since (its generation).
        """
        current = self.cache.current()
        if current is None or current.generation != self.store.generation:
            return
        try:
            for openmetrics in current.built():
                fleet = current.fleet(openmetrics)
                if fleet is not None:
                    body = StoredBody(fleet.length, fleet.crc, fleet.size, current.generation)
                    self.store.save_exposition(openmetrics, body, fleet.parts)
        except StoreError as exc:
            log.warning("the exposition was not saved for the next start: %s", exc)

    def _publish(
        self,
        view_of: Callable[[], FleetView],
        prepare: bool = True,
        restored: Mapping[bool, Restored] | None = None,
    ) -> None:
        with self._render_lock:
            # Built under the render lock: views carry the changes since the last one, so they
            # are rendered in the order they were taken.
            view = view_of()
            self.metrics.set_budget(self._budget.rates())
            # The state layer reports its write health; the gauges are set here.
            self.metrics.state_writable.set(1 if self.state.writable else 0)
            failures = self.state.write_failures + self.imports.write_failures
            if failures > self._write_failures_counted:
                self.metrics.state_write_errors.inc(failures - self._write_failures_counted)
                self._write_failures_counted = failures
            live = None if self.config.web.disable_exporter_metrics else self.process_registry
            self._kept.note(view)
            exposition = render(self.registry, view, self._collectors, live, self._kept, restored)
            previous = self.cache.current()
            wanted = (previous.wanted() if previous else frozenset()) or PROMETHEUS_DEFAULT
            if prepare:
                # Build what scrapers asked of the last rendering now, here: a scrape only reads.
                exposition.prepare(wanted)
            else:
                exposition.expect(wanted)
            self.cache.publish(exposition)

    def poll(self) -> CycleResult:
        """Run one poll cycle and publish its rendering."""
        return self.poller.run_cycle()

    def run_backfills(self, slice_seconds: float | None = None) -> None:
        """List due backfill pages for a while (the runtime's backfill job calls this)."""
        if slice_seconds is None:
            self.poller.run_backfills()
        else:
            self.poller.run_backfills(slice_seconds)

    def exposition(self) -> Exposition:
        """Return the current rendering."""
        current = self.cache.current()
        assert current is not None  # published in __init__
        return current

    def is_ready(self) -> bool:
        """Ready once metrics reflect a completed poll, this run's or a persisted one."""
        return self.poller.has_data

    def health(self) -> str | None:
        """Return why the exporter is degraded, or None."""
        if not self.poller.state_ok:
            return "the snapshot store cannot be written; serving the last metrics"
        return None

    def reload(self) -> str | None:
        """Reload the config file; keep the running config if the new one is invalid."""
        if self._load_config is None:
            return "no config file to reload"
        try:
            new = self._load_config()
        except ConfigError as exc:
            self.metrics.reload_successful.set(0)
            self._publish(self.poller.view)
            log.error("config reload failed, keeping the running config: %s", exc)
            return str(exc)
        for what, old_value, new_value in (
            ("state.path", self.config.state.path, new.state.path),
            ("web.listen_address", self.config.web.listen_address, new.web.listen_address),
            ("web.config_file", self.config.web.config_file, new.web.config_file),
            ("web.telemetry_path", self.config.web.telemetry_path, new.web.telemetry_path),
        ):
            if old_value != new_value:
                log.warning("config reload: %s changes take effect after a restart", what)
        self.config = new
        self._budget = budget_for(new, self._stopping)
        self._note_config(new)
        self.poller.reconfigure(new, self._clients(new))
        self._configure_events(new)
        log.info("config reloaded: %d data stores", len(new.datastores))
        return None

    def stop(self) -> None:
        """Ask a running cycle and backfill page to stop at the next image set; send no more."""
        self._stopping.set()
        self.poller.request_stop()

    def close(self) -> None:
        """Join the listing threads (in-flight calls end first), then close the snapshot store."""
        self._stopping.set()
        self.poller.close()
        with self._render_lock:
            self._save_exposition()
        self.store.close()
