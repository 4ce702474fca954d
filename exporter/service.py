"""Wire a config into an exporter: registry, budget, clients, poller, renders, reloads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from exporter.aws import ClientFactory
from exporter.budget import RateBudget
from exporter.config import Config, ConfigError
from exporter.metrics.collectors import DatastoreCollector, EventCollector, ImageSetCollector
from exporter.metrics.exposition import PROMETHEUS_DEFAULT, Exposition, ExpositionCache, render
from exporter.metrics.own import AttemptRecorder, ExporterMetrics
from exporter.metrics.view import FleetView
from exporter.poller import CycleResult, Poller
from exporter.store import SnapshotStore

log = logging.getLogger(__name__)

ConfigLoader = Callable[[], Config]


def budget_for(config: Config) -> RateBudget:
    """Return this process's share of the account-wide request budget."""
    return RateBudget(
        {op: rate / config.total_shards for op, rate in config.aws.rate_limits.items()}
    )


class ExporterService:
    """The exporter minus its HTTP server and schedule: poll, render, reload."""

    def __init__(
        self,
        config: Config,
        load_config: ConfigLoader | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._load_config = load_config
        self._clock = clock
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.metrics = ExporterMetrics(self.registry)
        self.cache = ExpositionCache()
        self._render_lock = threading.Lock()
        self._collectors = (ImageSetCollector(), EventCollector(), DatastoreCollector())
        self.store = SnapshotStore(config.state.path)
        self._budget = budget_for(config)
        self._note_config(config)
        self.poller = Poller(
            config, self._clients(config), self.store, self.metrics, self._publish, clock
        )
        self.poller.publish_view()

    def _clients(self, config: Config) -> ClientFactory:
        recorder = AttemptRecorder(self._budget, self.metrics)
        return ClientFactory(config.aws, recorder, pool_size=config.poll.concurrency + 2)

    def _note_config(self, config: Config) -> None:
        self.metrics.reload_successful.set(1)
        self.metrics.reload_success_time.set(self._clock())
        self.metrics.shard.set(config.shard)
        self.metrics.total_shards.set(config.total_shards)
        self.metrics.set_budget(self._budget.configured())

    def _publish(self, view: FleetView) -> None:
        with self._render_lock:
            self.metrics.set_budget(self._budget.rates())
            exposition = render(self.registry, view, self._collectors)
            previous = self.cache.current()
            # Build what scrapers asked of the last rendering now, here: a scrape only reads.
            exposition.prepare(previous.wanted() if previous else PROMETHEUS_DEFAULT)
            self.cache.publish(exposition)

    def poll(self) -> CycleResult:
        """Run one poll cycle and publish its rendering."""
        return self.poller.run_cycle()

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
            self._publish(self.poller.view())
            log.error("config reload failed, keeping the running config: %s", exc)
            return str(exc)
        for what, old_value, new_value in (
            ("state.path", self.config.state.path, new.state.path),
            ("web.listen_address", self.config.web.listen_address, new.web.listen_address),
            ("web.config_file", self.config.web.config_file, new.web.config_file),
        ):
            if old_value != new_value:
                log.warning("config reload: %s changes take effect after a restart", what)
        self.config = new
        self._budget = budget_for(new)
        self._note_config(new)
        self.poller.reconfigure(new, self._clients(new))
        log.info("config reloaded: %d data stores", len(new.datastores))
        return None

    def stop(self) -> None:
        """Ask a running cycle to stop at the next image set."""
        self.poller.request_stop()

    def close(self) -> None:
        """Close the snapshot store."""
        self.store.close()
