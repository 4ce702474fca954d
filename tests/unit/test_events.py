"""The event path without a network: parsing hostile bodies, and one batch with fakes."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.aws import (
    DETAIL_TYPES,
    ApiError,
    EventKind,
    ImagingEvent,
    MalformedEvent,
    QueueMessage,
    parse_event,
    peek_detail_type,
)
from exporter.config import Config, EventsSettings, parse_config
from exporter.emulator import events as emulated
from exporter.events import EventConsumer
from exporter.ingest import Ingested
from exporter.metrics.own import EventMetrics
from exporter.model import ImageSetKey, ImageSetSnapshot, Version
from exporter.outcomes import EventOutcome, Outcome
from exporter.plan import ListingHint, already_seen, shard_of
from tests.dashboard_queries import documented_metrics

DS = "12345678901234567890123456789012"
IMAGE_SET = "ea92b0d8838c72a3f25d00d13616f87e"
OTHER = "b" * 32
JOB = "0123456789abcdef0123456789abcdef"
ARN = f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{DS}"


def image_set_event(
    status: str = "COPY_FAILED", image_set: str = IMAGE_SET, datastore: str = DS, at: float = 1e9
) -> dict[str, Any]:
    """An envelope as the emulator builds it (its own module, not the exporter's)."""
    return emulated.envelope(
        emulated.IMAGE_SET_DETAIL_TYPES[status],
        account="123456789012",
        region="us-east-1",
        at=at,
        resources=[f"{ARN}/imageset/{image_set}"],
        detail={
            "imagingVersion": "1.0",
            "isPrimary": True,
            "imageSetVersion": "3",
            "datastoreId": datastore,
            "imagesetId": image_set,
            "imageSetState": "ACTIVE",
            "imageSetWorkflowStatus": status,
        },
    )


def every_detail_type() -> list[dict[str, Any]]:
    out = [image_set_event(s) for s in emulated.IMAGE_SET_DETAIL_TYPES]
    for status, detail_type in emulated.IMPORT_JOB_DETAIL_TYPES.items():
        detail = {
            "imagingVersion": "1.0",
            "datastoreId": DS,
            "jobId": JOB,
            "jobName": "a patient's name could be here",
            "jobStatus": status,
            "inputS3Uri": "s3://in/",
            "outputS3Uri": "s3://out/",
        }
        out.append(_envelope(detail_type, detail))
    for status, detail_type in emulated.DATASTORE_DETAIL_TYPES.items():
        detail = {
            "imagingVersion": "1.0",
            "datastoreId": DS,
            "datastoreName": "x",
            "datastoreStatus": status,
        }
        out.append(_envelope(detail_type, detail))
    return out


def _envelope(detail_type: str, detail: dict[str, Any]) -> dict[str, Any]:
    return emulated.envelope(
        detail_type,
        account="123456789012",
        region="us-east-1",
        at=1e9,
        resources=[ARN],
        detail=detail,
    )


def test_every_detail_type_of_the_emulator_parses() -> None:
    events = every_detail_type()
    assert {e["detail-type"] for e in events} == set(DETAIL_TYPES) == set(emulated.DETAIL_TYPES)
    for envelope in events:
        event = parse_event(json.dumps(envelope))
        assert event.detail_type == envelope["detail-type"]
        assert event.datastore_id == DS
        assert event.time == 1e9
    copy = parse_event(json.dumps(image_set_event()))
    assert copy.kind is EventKind.IMAGE_SET
    assert (copy.image_set_id, copy.version, copy.workflow_status) == (IMAGE_SET, 3, "COPY_FAILED")
    job = parse_event(json.dumps(every_detail_type()[10]))
    assert (job.kind, job.job_id, job.status) == (EventKind.IMPORT_JOB, JOB, "SUBMITTED")
    assert "patient" not in repr(job)  # jobName and S3 URIs are not kept


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def _parse_or_malformed(body: object) -> ImagingEvent | None:
    try:
        event = parse_event(body)
    except MalformedEvent as exc:
        assert "\n" not in str(exc)
        return None
    assert event.detail_type in DETAIL_TYPES
    return event


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_body_is_an_event_or_malformed(data: object) -> None:
    _parse_or_malformed(json.dumps(data))
    assert peek_detail_type(json.dumps(data)) in (*DETAIL_TYPES, "other")


@settings(max_examples=300, deadline=None)
@given(st.text() | st.none() | st.binary())
def test_any_text_body_is_an_event_or_malformed(body: object) -> None:
    _parse_or_malformed(body)
    assert peek_detail_type(body) in (*DETAIL_TYPES, "other")


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(range(19)),
    st.sampled_from(["id", "time", "source", "detail-type", "detail"]),
    st.sampled_from(["datastoreId", "imagesetId", "imageSetVersion", "jobId", "jobStatus"]),
    JSON,
    st.booleans(),
)
def test_a_valid_envelope_with_one_field_replaced_is_an_event_or_malformed(
    which: int, top: str, inner: str, value: object, in_detail: bool
) -> None:
    envelope = every_detail_type()[which]
    if in_detail:
        envelope["detail"][inner] = value
    else:
        envelope[top] = value
    event = _parse_or_malformed(json.dumps(envelope))
    if event is not None and event.image_set_id is not None:
        assert len(event.image_set_id) == 32 and event.image_set_id.isalnum()


def test_hostile_bodies_are_malformed() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    huge = json.dumps({**image_set_event(), "pad": "x" * 300_000})
    big_number = json.dumps({**image_set_event(), "time": 0}).replace(
        '"time": 0', '"time": ' + "9" * 5000
    )
    for body in (deep, huge, "1" * 5000, big_number, "\ud800", "{}", "null"):
        assert _parse_or_malformed(body) is None
    far = image_set_event()
    far["time"] = "0000-01-01T00:00:00Z"
    assert _parse_or_malformed(json.dumps(far)) is None
    traversal = image_set_event(image_set="../../../../etc/passwd")
    assert _parse_or_malformed(json.dumps(traversal)) is None


class FakeQueue:
    """Hands out prepared batches; records deletions."""

    def __init__(self, batches: list[list[QueueMessage]]) -> None:
        self.queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
        self.batches = batches
        self.deleted: list[str] = []
        self.fail_receive = False

    def receive(self, max_messages: int, wait_seconds: int) -> list[QueueMessage]:
        if self.fail_receive:
            raise ApiError(Outcome.ACCESS_DENIED, "ReceiveMessage: AccessDenied: no")
        return self.batches.pop(0) if self.batches else []

    def delete(self, messages: Sequence[QueueMessage]) -> int:
        self.deleted.extend(m.message_id for m in messages)
        return 0

    def depth(self) -> dict[str, int]:
        return {"visible": 7, "in_flight": 1, "delayed": 0}


class FakePoller:
    """Answers listings from a table, recording what was asked."""

    def __init__(self, config: Config, results: dict[ImageSetKey, Ingested | Outcome]) -> None:
        self._config = config
        self.results = results
        self.asked: list[dict[ImageSetKey, ListingHint | None]] = []
        self.seen: set[tuple[ImageSetKey, int | None, str | None]] = set()

    @property
    def config(self) -> Config:
        return self._config

    def list_for_events(
        self, targets: dict[ImageSetKey, ListingHint | None]
    ) -> dict[ImageSetKey, Ingested | Outcome]:
        self.asked.append(dict(targets))
        return {k: self.results[k] for k in targets}

    def has_seen(self, key: ImageSetKey, version: int | None, workflow_status: str | None) -> bool:
        return (key, version, workflow_status) in self.seen


def config(foreign: str = "delete", **top: Any) -> Config:
    return parse_config(
        {
            "datastores": [{"datastore_id": DS, "image_sets": "all"}],
            "events": {
                "queue_url": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
                "foreign_events": foreign,
            },
            **top,
        }
    )


def message(n: int, body: object) -> QueueMessage:
    text = body if isinstance(body, str) else json.dumps(body)
    return QueueMessage(f"m{n}", f"r{n}", text)


def consumer(
    cfg: Config, queue: FakeQueue, poller: FakePoller, clock: float = 1e9 + 2.5
) -> tuple[EventConsumer, EventMetrics, list[int]]:
    metrics = EventMetrics(CollectorRegistry())
    published: list[int] = []
    assert cfg.events is not None
    made = EventConsumer(
        cfg.events, queue, poller, metrics, lambda: published.append(1), clock=lambda: clock
    )
    return made, metrics, published


def count(metrics: EventMetrics, detail_type: str, outcome: EventOutcome) -> float:
    return float(metrics.events_received.labels(detail_type, outcome.value)._value.get())


def test_one_batch_lists_once_publishes_once_and_deletes_what_is_done() -> None:
    cfg = config()
    key = ImageSetKey(DS, IMAGE_SET)
    failing = ImageSetKey(DS, "c" * 32)
    poller = FakePoller(cfg, {key: Ingested.CHANGED, failing: Outcome.THROTTLED})
    batch = [
        message(0, image_set_event()),
        message(1, image_set_event()),  # the same change again: a duplicate
        message(2, image_set_event(image_set=failing.image_set_id)),
        message(3, "garbage"),
        message(4, image_set_event(datastore=OTHER)),
        message(5, every_detail_type()[-1]),  # Data Store Deleted
    ]
    queue = FakeQueue([batch])
    made, metrics, published = consumer(cfg, queue, poller)
    assert made.consume_batch(threading.Event()) == 6
    assert poller.asked == [{key: None, failing: None}]  # one listing per image set
    assert published == [1]
    assert queue.deleted == ["m0", "m1", "m3", "m4", "m5"]  # m2 comes back to be tried again
    copy_failed = "Image Set Copy Failed"
    assert count(metrics, copy_failed, EventOutcome.APPLIED) == 1
    assert count(metrics, copy_failed, EventOutcome.DUPLICATE) == 1
    assert count(metrics, copy_failed, EventOutcome.FAILED) == 1
    assert count(metrics, copy_failed, EventOutcome.IGNORED_FOREIGN) == 1
    assert count(metrics, "other", EventOutcome.MALFORMED) == 1
    assert count(metrics, "Data Store Deleted", EventOutcome.NOTED) == 1
    assert metrics.event_lag._sum.get() == 2.5  # one applied event, 2.5 s after its time
    assert metrics.events_queue_messages.labels("visible")._value.get() == 7


def test_an_event_the_state_already_holds_costs_no_listing() -> None:
    cfg = config()
    key = ImageSetKey(DS, IMAGE_SET)
    poller = FakePoller(cfg, {})
    poller.seen.add((key, 3, "COPY_FAILED"))
    queue = FakeQueue([[message(0, image_set_event()), message(1, image_set_event())]])
    made, metrics, _ = consumer(cfg, queue, poller)
    made.consume_batch(threading.Event())
    assert poller.asked == []
    assert queue.deleted == ["m0", "m1"]
    assert count(metrics, "Image Set Copy Failed", EventOutcome.DUPLICATE) == 2


def test_already_seen_compares_version_and_status() -> None:
    snapshot = ImageSetSnapshot(
        ImageSetKey(DS, IMAGE_SET),
        (Version(3, "COPY_FAILED", "ACTIVE"), Version(2, "UPDATED", "ACTIVE")),
    )
    assert already_seen(snapshot, 3, "COPY_FAILED")
    assert not already_seen(snapshot, 3, "COPYING")  # a late event: listed, finds nothing new
    assert not already_seen(snapshot, 4, "COPY_FAILED")
    assert not already_seen(None, 3, "COPY_FAILED")
    assert not already_seen(snapshot, 3, None)
    gone = ImageSetSnapshot(snapshot.key, (), snapshot.versions, deleted_at=5.0)
    assert already_seen(gone, 4, "DELETED")
    assert not already_seen(gone, 3, "COPY_FAILED")


def test_foreign_events_are_left_when_configured_and_other_shards_are_foreign() -> None:
    mine = 1 - shard_of(IMAGE_SET, 2)
    cfg = config("leave", shard=mine, total_shards=2)
    queue = FakeQueue([[message(0, image_set_event()), message(1, every_detail_type()[-1])]])
    made, metrics, _ = consumer(cfg, queue, FakePoller(cfg, {}))
    made.consume_batch(threading.Event())
    assert queue.deleted == ["m1"]  # the data store is ours; the image set is another shard's
    assert count(metrics, "Image Set Copy Failed", EventOutcome.IGNORED_FOREIGN) == 1


def test_a_created_image_set_is_listed_with_its_creation_time() -> None:
    cfg = config()
    key = ImageSetKey(DS, IMAGE_SET)
    poller = FakePoller(cfg, {key: Ingested.CHANGED})
    queue = FakeQueue([[message(0, image_set_event("CREATED", at=1e9 + 7))]])
    made, _, _ = consumer(cfg, queue, poller)
    made.consume_batch(threading.Event())
    assert poller.asked == [{key: ListingHint(created_at=1e9 + 7)}]


def test_a_failing_receive_is_counted_and_waited_out() -> None:
    cfg = config()
    queue = FakeQueue([])
    queue.fail_receive = True
    made, metrics, _ = consumer(cfg, queue, FakePoller(cfg, {}))
    stop = threading.Event()
    stop.set()  # the retry wait returns at once
    made.consume_batch(stop)
    assert metrics.event_receive_errors.labels("access_denied")._value.get() == 0  # stopped first
    go = threading.Event()
    timer = threading.Timer(0.05, go.set)
    timer.start()
    made.consume_batch(go)
    timer.join()
    assert metrics.event_receive_errors.labels("access_denied")._value.get() == 1


def test_the_queue_url_may_name_the_shard() -> None:
    cfg = parse_config(
        {
            "datastores": [{"datastore_id": DS, "image_sets": "all"}],
            "events": {"queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/ev-{shard}"},
        }
    ).with_shard(2, 3)
    assert cfg.events is not None
    assert cfg.events.queue_url_for(cfg.shard).endswith("/123456789012/ev-2")


def test_events_config_defaults() -> None:
    settings = config().events
    assert settings == EventsSettings(
        queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/q",
        wait_seconds=5,
        max_messages=10,
        foreign_events="delete",
    )
    assert parse_config({"datastores": [{"datastore_id": DS, "image_sets": "all"}]}).events is None


def test_every_event_outcome_and_family_is_documented() -> None:
    text = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    for outcome in EventOutcome:
        assert f"| `{outcome.value}` |" in text, outcome
    documented = documented_metrics()
    registry = CollectorRegistry()
    EventMetrics(registry)
    for family in registry.collect():
        assert family.name in documented or f"{family.name}_total" in documented, family.name


def test_import_job_events_go_to_the_hook_when_there_is_one() -> None:
    cfg = config()
    completed, failed_job = every_detail_type()[12], every_detail_type()[13]
    read: list[tuple[str, str]] = []

    def hook(datastore_id: str, job_id: str) -> bool:
        read.append((datastore_id, job_id))
        if len(read) == 2:
            raise ApiError(Outcome.THROTTLED, "GetDICOMImportJob: ThrottlingException: slow")
        return True

    queue = FakeQueue([[message(0, completed), message(1, failed_job)]])
    assert cfg.events is not None
    metrics = EventMetrics(CollectorRegistry())
    made = EventConsumer(
        cfg.events, queue, FakePoller(cfg, {}), metrics, lambda: None, on_import_job=hook
    )
    made.consume_batch(threading.Event())
    assert read == [(DS, JOB), (DS, JOB)]
    assert queue.deleted == ["m0"]  # the unreadable job's event comes back
    assert count(metrics, "Import Job Completed", EventOutcome.APPLIED) == 1
    assert count(metrics, "Import Job Failed", EventOutcome.FAILED) == 1
    # Data store events mark the data store's status check due, when there is a hook for it.
    due: list[str] = []
    queue = FakeQueue([[message(0, every_detail_type()[-1])]])
    made = EventConsumer(
        cfg.events, queue, FakePoller(cfg, {}), metrics, lambda: None, on_datastore=due.append
    )
    made.consume_batch(threading.Event())
    assert due == [DS]
    assert queue.deleted == ["m0"]
    # Without a hook: noted and deleted.
    queue = FakeQueue([[message(0, completed)]])
    made, metrics, _ = consumer(cfg, queue, FakePoller(cfg, {}))
    made.consume_batch(threading.Event())
    assert queue.deleted == ["m0"]
    assert count(metrics, "Import Job Completed", EventOutcome.NOTED) == 1


def test_batches_that_change_nothing_publish_their_counters_at_most_every_few_seconds() -> None:
    cfg = config()
    foreign = image_set_event(datastore=OTHER)
    queue = FakeQueue([[message(0, foreign)], [message(1, foreign)], []])
    metrics = EventMetrics(CollectorRegistry())
    published: list[int] = []
    now = [100.0]
    assert cfg.events is not None
    made = EventConsumer(
        cfg.events,
        queue,
        FakePoller(cfg, {}),
        metrics,
        lambda: published.append(1),
        monotonic=lambda: now[0],
    )
    made.consume_batch(threading.Event())
    made.consume_batch(threading.Event())
    assert published == [1]  # the second batch's counters wait
    now[0] += 10
    made.consume_batch(threading.Event())  # an empty receive publishes what waited
    assert published == [1, 1]
    assert count(metrics, "Image Set Copy Failed", EventOutcome.IGNORED_FOREIGN) == 2
