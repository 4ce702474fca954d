"""The event path over real HTTP: emulator -> moto's SQS -> exporter daemon -> /metrics."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.daemon import Daemon
from exporter.emulator import EmulatorServer
from exporter.emulator.events import EventSettings
from exporter.plan import shard_of
from exporter.service import ExporterService
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET, fetch, sample_value, wait_for
from tests.integration.conftest import ConfigFactory
from tests.integration.test_crash_safety import Exporter  # the console script, killed with -9
from tests.moto import MotoServer

OTHER_DATASTORE = "a" * 32
FAILED = "healthimaging_failed_versions_total"
RECEIVED = "healthimaging_exporter_events_received_total"
MISSED = "healthimaging_events_missed_total"
CYCLES = "healthimaging_exporter_poll_duration_seconds_count"


def metrics(daemon: Daemon) -> bytes:
    status, _, body = fetch(daemon.url + "/metrics")
    assert status == 200
    return body


def value(daemon: Daemon, name: str, **labels: str) -> float:
    return sample_value(metrics(daemon), name, **labels)


def make_queue(moto: MotoServer, name: str = "events", visibility: int = 30) -> str:
    sqs = moto.client("sqs")
    url: str = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility)})[
        "QueueUrl"
    ]
    return url


def queue_total(moto: MotoServer, url: str) -> int:
    attributes = moto.client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def events_section(moto: MotoServer, url: str, **extra: Any) -> dict[str, Any]:
    return {"queue_url": url, "endpoint_url": moto.url, "wait_seconds": 1, **extra}


def copy_failed_event(emulator: EmulatorServer) -> dict[str, Any]:
    """A real event envelope as the emulator publishes it (recorded, not sent)."""
    backend = emulator.backend
    backend.configure_events(EventSettings())
    backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")
    return dict(backend.recorded_events()[-1].event)


def ready(daemon: Daemon) -> Callable[[], bool]:
    return lambda: fetch(daemon.url + "/-/ready")[0] == 200


def started_with_events(
    emulator: EmulatorServer,
    moto_server: MotoServer,
    make_config: ConfigFactory,
    daemon_for: Callable[..., Daemon],
) -> tuple[Daemon, str]:
    """A ready daemon polling hourly, and the queue (its URL) the emulator sends events to."""
    url = make_queue(moto_server)
    emulator.backend.configure_events(EventSettings(queue_url=url, endpoint_url=moto_server.url))
    config = make_config(poll={"interval_seconds": 3600}, events=events_section(moto_server, url))
    daemon = daemon_for(config)
    wait_for(ready(daemon))  # the first cycle: everything seen is a baseline
    return daemon, url


def test_copy_failed_shows_long_before_the_poll_interval(
    emulator: EmulatorServer,
    moto_server: MotoServer,
    make_config: ConfigFactory,
    daemon_for: Callable[..., Daemon],
) -> None:
    daemon, url = started_with_events(emulator, moto_server, make_config, daemon_for)
    assert value(daemon, FAILED, image_set_id=DEMO_IMAGE_SET) == 0
    emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")
    wait_for(lambda: value(daemon, FAILED, image_set_id=DEMO_IMAGE_SET) == 1, timeout=20)
    body = metrics(daemon)
    assert sample_value(body, CYCLES) == 1  # the first cycle only: the event brought it
    assert sample_value(body, RECEIVED, detail_type="Image Set Copy Failed", outcome="applied") == 1
    assert sample_value(body, "healthimaging_exporter_event_lag_seconds_count") == 1
    assert sample_value(body, MISSED) == 0
    wait_for(lambda: queue_total(moto_server, url) == 0)  # deleted once applied


def test_a_dropped_event_is_caught_by_polling_and_counted_missed(
    emulator: EmulatorServer,
    moto_server: MotoServer,
    make_config: ConfigFactory,
    daemon_for: Callable[..., Daemon],
) -> None:
    url = make_queue(moto_server)
    emulator.backend.configure_events(
        EventSettings(queue_url=url, endpoint_url=moto_server.url, drop_ratio=1.0)
    )
    config = make_config(poll={"interval_seconds": 1}, events=events_section(moto_server, url))
    daemon = daemon_for(config)
    wait_for(ready(daemon))
    emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")
    wait_for(lambda: value(daemon, MISSED, datastore_id=DEMO_DATASTORE) == 1, timeout=20)
    body = metrics(daemon)
    assert sample_value(body, FAILED, image_set_id=DEMO_IMAGE_SET) == 1
    assert sample_value(body, RECEIVED) == 0
    assert emulator.backend.event_counts()["dropped"] == 1


def test_malformed_messages_are_deleted_and_counted(
    emulator: EmulatorServer,
    moto_server: MotoServer,
    make_config: ConfigFactory,
    daemon_for: Callable[..., Daemon],
) -> None:
    url = make_queue(moto_server)
    event = copy_failed_event(emulator)
    wrong_source = {**event, "source": "aws.s3"}
    no_image_set = {**event, "detail": {**event["detail"], "imagesetId": "../etc"}}
    sqs = moto_server.client("sqs")
    for text in ("not json", json.dumps(wrong_source), json.dumps(no_image_set), "[1, 2]"):
        sqs.send_message(QueueUrl=url, MessageBody=text)
    config = make_config(poll={"interval_seconds": 3600}, events=events_section(moto_server, url))
    daemon = daemon_for(config)
    wait_for(lambda: value(daemon, RECEIVED, outcome="malformed") == 4, timeout=20)
    body = metrics(daemon)
    # Labelled with the detail-type a body claims, when it is one of the 19.
    assert sample_value(body, RECEIVED, detail_type="other", outcome="malformed") == 2
    assert (
        sample_value(body, RECEIVED, detail_type="Image Set Copy Failed", outcome="malformed") == 2
    )
    wait_for(lambda: queue_total(moto_server, url) == 0)
    wait_for(ready(daemon))  # the exporter carries on: its first poll completes


@pytest.mark.parametrize("foreign_events", ["delete", "leave"])
def test_foreign_events_are_left_or_deleted_as_configured(
    foreign_events: str,
    emulator: EmulatorServer,
    moto_server: MotoServer,
    make_config: ConfigFactory,
    daemon_for: Callable[..., Daemon],
) -> None:
    url = make_queue(moto_server, visibility=3600)  # a left message stays in flight meanwhile
    event = copy_failed_event(emulator)
    other_store = {**event, "detail": {**event["detail"], "datastoreId": OTHER_DATASTORE}}
    sqs = moto_server.client("sqs")
    # The demo image set's event, for a process of two shards that is not its shard.
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(other_store))
    other_shard = 1 - shard_of(DEMO_IMAGE_SET, 2)
    config = make_config(
        poll={"interval_seconds": 3600},
        events=events_section(moto_server, url, foreign_events=foreign_events),
        shard=other_shard,
        total_shards=2,
    )
    daemon = daemon_for(config)
    wait_for(lambda: value(daemon, RECEIVED, outcome="ignored_foreign") == 2, timeout=20)
    assert value(daemon, FAILED) == 0
    if foreign_events == "delete":
        wait_for(lambda: queue_total(moto_server, url) == 0)
    else:
        assert queue_total(moto_server, url) == 2


def test_redelivery_after_kill_9_counts_once(tmp_path: Path, moto_server: MotoServer) -> None:
    """Kill -9 while events are handled, then every event delivered again: each counts once.

    SQS delivers at least once: a message whose change was persisted but that was not deleted
    yet (the kill) comes back after its visibility timeout (2 s here), to the next process on
    the same state file. Every event is also sent a second time, as such a redelivery would be.
    """
    url = make_queue(moto_server, visibility=2)
    with EmulatorServer(port=0, dataset="demo") as emulator:
        backend = emulator.backend
        image_sets = [DEMO_IMAGE_SET, *(backend.create_image_set(DEMO_DATASTORE) for _ in range(5))]
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "aws": {"endpoint_url": emulator.url, "max_attempts": 2},
                    "poll": {"interval_seconds": 3600},
                    "datastores": [{"datastore_id": DEMO_DATASTORE, "image_sets": image_sets}],
                    "state": {"path": str(tmp_path / "state.db")},
                    "web": {"listen_address": "127.0.0.1:0"},
                    "events": events_section(moto_server, url),
                }
            )
        )
        first = Exporter(config, tmp_path / "run-0.log")
        try:
            base = first.url()
            wait_for(lambda: fetch(base + "/-/ready")[0] == 200, timeout=20)
            backend.configure_events(EventSettings(queue_url=url, endpoint_url=moto_server.url))
            for image_set in image_sets:
                backend.add_version(DEMO_DATASTORE, image_set, "COPY_FAILED")
            wait_for(lambda: sample_value(fetch(base + "/metrics")[2], FAILED) >= 1, timeout=20)
        finally:
            first.kill()
        sent = [r.event for r in backend.recorded_events() if not r.dropped]
        assert len(sent) == len(image_sets)
        sqs = moto_server.client("sqs")
        for event in sent:
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))

        second = Exporter(config, tmp_path / "run-1.log")
        try:
            base = second.url()

            def handled(body: bytes) -> float:
                applied = sample_value(body, RECEIVED, outcome="applied")
                return applied + sample_value(body, RECEIVED, outcome="duplicate")

            def settled() -> bool:
                body = fetch(base + "/metrics")[2]
                counted = sample_value(body, FAILED) == len(image_sets)
                # At least the resent copies reached this process (their counters are
                # published within seconds, with the next batch or an empty receive).
                arrived = handled(body) >= len(image_sets)
                return counted and arrived and queue_total(moto_server, url) == 0

            wait_for(settled, timeout=60)
            body = fetch(base + "/metrics")[2]
            for image_set in image_sets:
                assert sample_value(body, FAILED, image_set_id=image_set) == 1, image_set
            second.terminate()
        finally:
            if second.process.poll() is None:
                second.kill()


def test_a_stop_ends_the_long_poll_in_flight(
    emulator: EmulatorServer,
    moto_server: MotoServer,
    make_config: ConfigFactory,
    daemon_for: Callable[..., Daemon],
) -> None:
    """A 20 s long poll on an empty queue: the stop waits for it at most, never hangs.

    And it leaves no job or event listing thread behind.
    """
    url = make_queue(moto_server)
    events = events_section(moto_server, url, wait_seconds=20)
    config = make_config(poll={"interval_seconds": 3600}, events=events)
    daemon = daemon_for(config)
    wait_for(ready(daemon))
    emulator.backend.configure_events(EventSettings(queue_url=url, endpoint_url=moto_server.url))
    emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")
    wait_for(lambda: value(daemon, FAILED) == 1, timeout=20)  # an event listing ran
    assert any(t.name.startswith("event_") for t in threading.enumerate())
    stopper = threading.Thread(target=daemon.stop)
    stopper.start()
    stopper.join(timeout=20 + config.aws.read_timeout_seconds)  # generous: a hang fails
    assert not stopper.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith(("event_", "job_"))]


def test_a_reload_turns_events_on_and_off(
    emulator: EmulatorServer, moto_server: MotoServer, make_config: ConfigFactory
) -> None:
    url = make_queue(moto_server)
    plain = make_config(poll={"interval_seconds": 3600})
    with_events = make_config(
        poll={"interval_seconds": 3600}, events=events_section(moto_server, url)
    )
    configs = [with_events, plain]
    service = ExporterService(plain, load_config=lambda: configs.pop(0))
    try:
        service.poll()
        assert service.events is None
        assert b"events_received" not in service.exposition().text
        assert service.reload() is None
        emulator.backend.configure_events(
            EventSettings(queue_url=url, endpoint_url=moto_server.url)
        )
        emulator.backend.add_version(DEMO_DATASTORE, DEMO_IMAGE_SET, "COPY_FAILED")

        def applied() -> bool:
            service.consume_events(slice_seconds=0.0)  # one batch, as the runtime's job runs it
            return sample_value(service.exposition().text, RECEIVED, outcome="applied") == 1

        wait_for(applied, timeout=20)
        text = service.exposition().text
        assert sample_value(text, FAILED, image_set_id=DEMO_IMAGE_SET) == 1
        assert service.reload() is None
        assert service.events is None
        service.consume_events(slice_seconds=0.0)  # a no-op
    finally:
        service.close()


def test_an_import_job_event_reads_the_job_at_once(
    emulator: EmulatorServer,
    moto_server: MotoServer,
    make_config: ConfigFactory,
    daemon_for: Callable[..., Daemon],
) -> None:
    # The first cycle: the data store's import jobs are a baseline.
    daemon, _ = started_with_events(emulator, moto_server, make_config, daemon_for)
    emulator.backend.start_import_job(
        DEMO_DATASTORE,
        status="FAILED",
        message="INVALID_REQUEST: the input has no DICOM files",
        submitted_seconds=0.2,
        in_progress_seconds=0.5,
    )
    ended = "healthimaging_import_jobs_ended_total"
    wait_for(lambda: value(daemon, ended, job_status="FAILED") == 1, timeout=30)
    body = metrics(daemon)
    assert sample_value(body, CYCLES) == 1  # no poll cycle found it: the event did
    detail = "Import Job Failed"
    assert sample_value(body, RECEIVED, detail_type=detail, outcome="applied") == 1
    failures = "healthimaging_import_job_failures_total"
    assert sample_value(body, failures, reason="INVALID_REQUEST") == 1
    assert b"the input has no DICOM files" not in body
