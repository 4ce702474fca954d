"""The event path: HealthImaging's EventBridge events from SQS trigger immediate listings.

One batch: receive (a bounded long poll) -> parse each body strictly -> list the image sets the
events name through the poller's ingest path (the same as cycles: diff -> store -> memory, within
the rate budget) -> publish once -> delete the messages whose change is persisted. A listing
that fails leaves its message on the queue: SQS redelivers it after the queue's visibility
timeout, and the diff makes a change count once however often it is announced. Duplicate,
reordered and late events list an image set that has nothing new (outcome `duplicate`).

It never starts a thread: the runtime's event job calls `run`, which returns after a slice or at
a stop (within one long poll, `events.wait_seconds`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from exporter.aws import (
    ApiError,
    EventKind,
    ImagingEvent,
    MalformedEvent,
    QueueMessage,
    parse_event,
    peek_detail_type,
)
from exporter.config import Config, EventsSettings
from exporter.ingest import Ingested, describe
from exporter.metrics.own import EventMetrics
from exporter.model import ImageSetKey
from exporter.outcomes import EventOutcome, Outcome
from exporter.plan import ListingHint, watches
from exporter.poller import CHANGES

log = logging.getLogger(__name__)

# How often the queue's depth is read (GetQueueAttributes), at most.
DEPTH_EVERY_SECONDS = 30.0
# After a failed receive, wait this long (doubling to the maximum) before the next one.
RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0
# Repeated malformed messages: one warning line per this many seconds, with the count since.
MALFORMED_LOG_EVERY_SECONDS = 300.0
# How long one call of `run` keeps receiving before it returns to its scheduler.
SLICE_SECONDS = 30.0
# A batch that changed nothing (duplicates, foreign or malformed events: every batch of the
# other shards' events) publishes its counters at most this often: a rendering of a large fleet
# takes a second, and a busy queue must not turn into back-to-back renderings.
COUNTERS_PUBLISH_SECONDS = 5.0

# The hook for import job events: (datastore_id, job_id) -> whether reading the job now counted
# it as ended; raises ApiError when the job cannot be read (the message is then left, to be
# redelivered). Issue 14's `Poller.read_import_job` has this shape: pass it as `on_import_job`
# once it is on main. Without a hook, import job events are `noted`, and the cycles' own
# listing of import jobs covers them.
ImportJobHook = Callable[[str, str], bool]
# The hook for data store events: called with the data store id, to mark its status check
# (GetDatastore, the data store lifecycle of the other branch) due for the next cycle. Without
# one, data store events are counted and logged (`noted`) and the status is read on its schedule.
DatastoreHook = Callable[[str], None]


class MessageQueue(Protocol):
    """What the consumer needs of the queue (exporter.aws.EventQueue)."""

    queue_url: str

    def receive(self, max_messages: int, wait_seconds: int) -> list[QueueMessage]:
        """Long-poll for messages."""

    def delete(self, messages: Sequence[QueueMessage]) -> int:
        """Delete messages; return how many were refused."""

    def depth(self) -> dict[str, int]:
        """Return approximate message counts by state."""


class EventTarget(Protocol):
    """What the consumer needs of the poller: its config and listings through its ingest path."""

    @property
    def config(self) -> Config:
        """The config in force."""

    def list_for_events(
        self, targets: dict[ImageSetKey, ListingHint | None]
    ) -> dict[ImageSetKey, Ingested | Outcome]:
        """List the watched ones of `targets` now; return each one's result."""

    def has_seen(self, key: ImageSetKey, version: int | None, workflow_status: str | None) -> bool:
        """Tell whether the state already holds what an image set event announces."""


@dataclass(frozen=True, slots=True)
class Handled:
    """One received message and what became of it."""

    message: QueueMessage
    detail_type: str  # the label value
    outcome: EventOutcome
    event: ImagingEvent | None = None
    delete: bool = True


class EventConsumer:
    """Consumes the event queue in batches for the poller; the runtime's event job drives it."""

    def __init__(
        self,
        settings: EventsSettings,
        queue: MessageQueue,
        poller: EventTarget,
        metrics: EventMetrics,
        publish: Callable[[], None],
        clock: Callable[[], float] = time.time,
        on_import_job: ImportJobHook | None = None,
        on_datastore: DatastoreHook | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.queue_url = queue.queue_url
        self._queue = queue
        self._poller = poller
        self._metrics = metrics
        self._publish = publish
        self._clock = clock
        self._on_import_job = on_import_job
        self._on_datastore = on_datastore
        self._monotonic = monotonic
        self._next_depth = 0.0
        self._retry = 0.0
        self._malformed_since_log = 0
        self._malformed_logged_at: float | None = None
        self._receive_failing = False
        self._unpublished = False  # counters moved since the last rendering
        self._published_at: float | None = None  # monotonic()

    def run(self, stop: threading.Event, slice_seconds: float = SLICE_SECONDS) -> None:
        """Receive and handle batches for about `slice_seconds`, or until `stop`; never raises."""
        end = time.monotonic() + slice_seconds
        while not stop.is_set():
            try:
                self.consume_batch(stop)
            except Exception as exc:  # a bug in one batch: its messages come back, counted
                self._metrics.event_receive_errors.labels(Outcome.INTERNAL_ERROR.value).inc()
                log.error("events: internal error: %s", describe(exc))
                log.debug("events: internal error", exc_info=exc)
                stop.wait(RETRY_SECONDS)
            if time.monotonic() >= end:
                return

    def consume_batch(self, stop: threading.Event) -> int:
        """Receive one batch (a bounded long poll) and handle it; return how many arrived."""
        self._read_depth()
        if stop.is_set():
            return 0
        try:
            messages = self._queue.receive(self.settings.max_messages, self.settings.wait_seconds)
        except ApiError as exc:
            self._metrics.event_receive_errors.labels(Outcome(exc.outcome).value).inc()
            if not self._receive_failing:
                log.error("events: receiving from the queue failed: %s; retrying", exc)
            self._receive_failing = True
            self._retry = min(MAX_RETRY_SECONDS, max(RETRY_SECONDS, 2 * self._retry))
            stop.wait(self._retry)
            return 0
        if self._receive_failing:
            log.info("events: receiving from the queue works again")
        self._receive_failing = False
        self._retry = 0.0
        if messages:
            self.handle(messages)
        elif self._unpublished:
            self._publish_counters(force=False)
        return len(messages)

    def _publish_counters(self, force: bool) -> None:
        now = self._monotonic()
        last = self._published_at
        if force or last is None or now - last >= COUNTERS_PUBLISH_SECONDS:
            self._publish()
            self._published_at = now
            self._unpublished = False
        else:
            self._unpublished = True

    def handle(self, messages: list[QueueMessage]) -> list[Handled]:
        """Act on one batch: list, publish once, delete what is done, count every message."""
        config = self._poller.config
        parsed: list[tuple[QueueMessage, ImagingEvent | None, str]] = []
        targets: dict[ImageSetKey, ListingHint | None] = {}
        seen: set[str] = set()  # event ids whose news the state already holds
        for message in messages:
            try:
                event = parse_event(message.body)
            except MalformedEvent as exc:
                self._log_malformed(str(exc))
                parsed.append((message, None, peek_detail_type(message.body)))
                continue
            parsed.append((message, event, event.detail_type))
            self._target(config, event, targets, seen)
        results = self._poller.list_for_events(targets) if targets else {}
        handled: list[Handled] = []
        applied_keys: set[ImageSetKey] = set()  # one `applied` per image set and batch
        watched = {ds.datastore_id for ds in config.datastores}
        leave_foreign = self.settings.foreign_events == "leave"
        for message, maybe, label in parsed:
            if maybe is None:
                handled.append(Handled(message, label, EventOutcome.MALFORMED))
                continue
            event = maybe
            if event.kind is not EventKind.IMAGE_SET:
                if event.datastore_id not in watched:
                    outcome = EventOutcome.IGNORED_FOREIGN
                    handled.append(Handled(message, label, outcome, event, not leave_foreign))
                    continue
                outcome = self._note(event)
                handled.append(
                    Handled(message, label, outcome, event, outcome != EventOutcome.FAILED)
                )
                continue
            key = ImageSetKey(event.datastore_id, event.image_set_id or "")
            result = results.get(key)
            if event.event_id in seen:
                handled.append(Handled(message, label, EventOutcome.DUPLICATE, event))
            elif key not in targets:
                outcome = EventOutcome.IGNORED_FOREIGN
                handled.append(Handled(message, label, outcome, event, not leave_foreign))
            elif result in CHANGES and key not in applied_keys:
                applied_keys.add(key)
                handled.append(Handled(message, label, EventOutcome.APPLIED, event))
            elif result in CHANGES or result == Ingested.UNCHANGED:
                handled.append(Handled(message, label, EventOutcome.DUPLICATE, event))
            else:
                # Left on the queue: redelivered after its visibility timeout, tried again.
                handled.append(Handled(message, label, EventOutcome.FAILED, event, False))
        for h in handled:
            self._metrics.events_received.labels(h.detail_type, h.outcome.value).inc()
        # Observed as the rendering that publishes the change starts: it is persisted and in
        # memory, and one rendering per batch (not per event) keeps a burst cheap.
        now = self._clock()
        applied = [h for h in handled if h.outcome is EventOutcome.APPLIED]
        for h in applied:
            if h.event is not None:
                self._metrics.event_lag.observe(max(0.0, now - h.event.time))
        self._publish_counters(force=bool(applied))
        self._delete([h.message for h in handled if h.delete])
        return handled

    def _target(
        self,
        config: Config,
        event: ImagingEvent,
        targets: dict[ImageSetKey, ListingHint | None],
        seen: set[str],
    ) -> None:
        """Add the image set an event names to the batch's listings, if this process has it."""
        if event.kind is not EventKind.IMAGE_SET or event.image_set_id is None:
            return
        key = ImageSetKey(event.datastore_id, event.image_set_id)
        if not watches(config, key):
            return
        if self._poller.has_seen(key, event.version, event.workflow_status):
            seen.add(event.event_id)  # a duplicate or a late copy: no call spent on it
            return
        # A created image set's whole history is news, as a cycle's search counts it.
        hint = ListingHint(created_at=event.time) if _creates(event) else None
        if key not in targets or hint is not None:
            targets[key] = hint

    def _note(self, event: ImagingEvent) -> EventOutcome:
        """Act on a data store or import job event of a watched data store."""
        if event.kind is not EventKind.IMPORT_JOB:
            # The data store's health shows in healthimaging_up after the next cycle.
            log.info("events: data store %s: %s", event.datastore_id, event.detail_type)
            if self._on_datastore is not None:
                self._on_datastore(event.datastore_id)
            return EventOutcome.NOTED
        log.debug("events: import job %s of %s: %s", event.job_id, event.datastore_id, event.status)
        if self._on_import_job is None or event.job_id is None:
            return EventOutcome.NOTED
        try:
            counted = self._on_import_job(event.datastore_id, event.job_id)
        except ApiError as exc:
            log.error("events: import job %s: %s", event.job_id, exc)
            return EventOutcome.FAILED
        return EventOutcome.APPLIED if counted else EventOutcome.NOTED

    def _delete(self, messages: list[QueueMessage]) -> None:
        for start in range(0, len(messages), 10):  # DeleteMessageBatch takes 10 at most
            batch = messages[start : start + 10]
            try:
                refused = self._queue.delete(batch)
            except ApiError as exc:
                self._metrics.event_receive_errors.labels(Outcome(exc.outcome).value).inc()
                log.error("events: deleting %d messages failed: %s", len(batch), exc)
                continue
            if refused:
                self._metrics.event_receive_errors.labels("delete_refused").inc(refused)
                log.error("events: the queue refused to delete %d messages", refused)

    def _read_depth(self) -> None:
        now = self._monotonic()
        if now < self._next_depth:
            return
        self._next_depth = now + DEPTH_EVERY_SECONDS
        try:
            depth = self._queue.depth()
        except ApiError as exc:
            self._metrics.event_receive_errors.labels(Outcome(exc.outcome).value).inc()
            log.debug("events: reading the queue's depth failed: %s", exc)
            return
        for state, count in depth.items():
            self._metrics.events_queue_messages.labels(state).set(count)

    def _log_malformed(self, why: str) -> None:
        # One line, never the body (it is not ours to log); a flood is summarised.
        now = self._monotonic()
        self._malformed_since_log += 1
        last = self._malformed_logged_at
        if last is None or now - last >= MALFORMED_LOG_EVERY_SECONDS:
            log.warning(
                "events: %d malformed message(s) deleted (last: %s); see "
                'healthimaging_exporter_events_received_total{outcome="malformed"}',
                self._malformed_since_log,
                why,
            )
            self._malformed_logged_at = now
            self._malformed_since_log = 0


def _creates(event: ImagingEvent) -> bool:
    return event.detail_type == "Image Set Created"
