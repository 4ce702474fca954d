"""The exporter's own metrics, in a registry that is passed in (never the global one)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from exporter import __version__

# Re-exported until exporter/service.py imports it from exporter.aws, where it now lives.
from exporter.aws import DETAIL_TYPES, OTHER_DETAIL_TYPE
from exporter.outcomes import API_OUTCOMES, EVENT_RECEIVE_ERROR_REASONS, EventOutcome

# From an event's time (whole seconds) to its change on /metrics: seconds, not a poll interval.
EVENT_LAG_BUCKETS = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 900, 3600)
POLL_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
API_OPERATIONS = (
    "ListImageSetVersions",
    "SearchImageSets",
    "GetImageSet",
    "GetDatastore",
    "ListDatastores",
)


class ExporterMetrics:
    """Counters and gauges about the exporter's own work."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.build_info = Gauge(
            "healthimaging_exporter_build_info",
            "Build information (always 1).",
            ["version"],
            registry=registry,
        )
        self.build_info.labels(__version__).set(1)
        self.api_requests = Counter(
            "healthimaging_exporter_api_requests",
            "HTTP attempts to AWS HealthImaging, retries included, by outcome.",
            ["operation", "outcome"],
            registry=registry,
        )
        for operation in API_OPERATIONS[:4]:  # the operations the exporter calls
            for outcome in API_OUTCOMES:
                self.api_requests.labels(operation, outcome.value)
        self.poll_duration = Histogram(
            "healthimaging_exporter_poll_duration_seconds",
            "Duration of a whole poll cycle.",
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        self.poll_errors = Counter(
            "healthimaging_exporter_poll_errors",
            "Image set polls and discovery calls that failed, by reason.",
            ["datastore_id", "reason"],
            registry=registry,
        )
        self.job_crashes = Counter(
            "healthimaging_exporter_job_crashes",
            "Runs of a runtime job (poll cycle, backfill, event consumer, reload) that ended in "
            "an unexpected exception; the job runs again on schedule.",
            ["job"],
            registry=registry,
        )
        self.budget_rate = Gauge(
            "healthimaging_exporter_rate_budget_requests_per_second",
            "The client-side request budget of this process, lowered after throttles.",
            ["operation"],
            registry=registry,
        )
        self.budget_wait = Counter(
            "healthimaging_exporter_rate_budget_wait_seconds",
            "Time spent waiting for the request budget.",
            ["operation"],
            registry=registry,
        )
        self.state_write_errors = Counter(
            "healthimaging_exporter_state_write_errors",
            "Failed writes to the snapshot store.",
            registry=registry,
        )
        self.state_writable = Gauge(
            "healthimaging_exporter_state_writable",
            "0 while the snapshot store cannot be written.",
            registry=registry,
        )
        self.reload_successful = Gauge(
            "healthimaging_exporter_config_last_reload_successful",
            "0 after an attempt to load an invalid config; the previous config stays in use.",
            registry=registry,
        )
        self.reload_success_time = Gauge(
            "healthimaging_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load.",
            registry=registry,
        )
        self.shard = Gauge(
            "healthimaging_exporter_shard_ordinal",
            "The shard this process polls.",
            registry=registry,
        )
        self.total_shards = Gauge(
            "healthimaging_exporter_total_shards",
            "The number of shards configured.",
            registry=registry,
        )

    def set_budget(self, rates: Mapping[str, float]) -> None:
        """Publish the current request budget."""
        for operation, rate in rates.items():
            self.budget_rate.labels(operation).set(rate)


def process_registry() -> CollectorRegistry:
    """Return a new registry of the process's metrics users expect of an exporter.

    `process_*` (CPU, resident memory, open files, start time), `python_gc_*` and
    `python_info`: prometheus_client's own collectors, on a registry of their own (never the
    global one), which the exposition collects again for every scrape.
    """
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class EventMetrics:
    """The event path's families: registered once `events` is configured (at start or reload)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_received = Counter(
            "healthimaging_exporter_events_received",
            "Event messages received from the SQS queue, by detail-type and outcome.",
            ["detail_type", "outcome"],
            registry=registry,
        )
        for detail_type in (*DETAIL_TYPES, OTHER_DETAIL_TYPE):
            for outcome in EventOutcome:
                self.events_received.labels(detail_type, outcome.value)
        self.event_lag = Histogram(
            "healthimaging_exporter_event_lag_seconds",
            "From an applied event's time to its change being published on /metrics.",
            buckets=EVENT_LAG_BUCKETS,
            registry=registry,
        )
        self.event_receive_errors = Counter(
            "healthimaging_exporter_event_receive_errors",
            "Failed calls to the event queue (receive, delete, attributes), by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in EVENT_RECEIVE_ERROR_REASONS:
            self.event_receive_errors.labels(reason)
        self.events_queue_messages = Gauge(
            "healthimaging_exporter_events_queue_messages",
            "The event queue's approximate messages by state (SQS GetQueueAttributes).",
            ["state"],
            registry=registry,
        )
        self.events_missed = Counter(
            "healthimaging_events_missed",
            "Changes a poll cycle found in an image set with no event since its last listing.",
            ["datastore_id"],
            registry=registry,
        )
