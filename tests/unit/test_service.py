"""The service's stop gate: once stopping, no AWS attempt is sent and no budget wait is sat out."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.aws import ApiError, AttemptRecorder
from exporter.config import AwsSettings, Config, DatastoreSettings, StateSettings
from exporter.diff import ImageSetChange
from exporter.metrics.exposition import PROMETHEUS_DEFAULT, Exposition
from exporter.metrics.own import ExporterMetrics
from exporter.model import NEW_VERSIONS, CounterKey, ImageSetKey, ImageSetSnapshot, Version
from exporter.outcomes import Outcome
from exporter.service import ExporterService, StopGate, budget_for


class ObservedStop(threading.Event):
    """The stop event, telling when someone starts waiting on it (the budget's sleep)."""

    def __init__(self) -> None:
        super().__init__()
        self.waited_on = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waited_on.set()
        return super().wait(timeout)


def gate_for(rate: float) -> tuple[StopGate, ObservedStop, ExporterMetrics]:
    stopping = ObservedStop()
    config = Config(datastores=(), aws=AwsSettings(rate_limits={"ListImageSetVersions": rate}))
    metrics = ExporterMetrics(CollectorRegistry())
    recorder = AttemptRecorder(budget_for(config, stopping), metrics)
    return StopGate(recorder, stopping.is_set), stopping, metrics


def test_no_attempt_is_sent_once_stopping() -> None:
    gate, stopping, metrics = gate_for(100.0)
    gate.before_attempt("ListImageSetVersions")
    gate.after_attempt("ListImageSetVersions", Outcome.SUCCESS)
    stopping.set()
    with pytest.raises(ApiError) as refused:
        gate.before_attempt("ListImageSetVersions")
    assert refused.value.outcome == Outcome.TIMEOUT
    # botocore reports the refused attempt as failed: it was never made, so it is not counted.
    gate.after_attempt("ListImageSetVersions", Outcome.NETWORK_ERROR)
    counted = metrics.api_requests.labels("ListImageSetVersions", "network_error")._value.get()
    assert counted == 0
    assert metrics.api_requests.labels("ListImageSetVersions", "success")._value.get() == 1


def test_a_stop_ends_a_wait_for_the_budget() -> None:
    gate, stopping, _ = gate_for(0.01)  # one request per 100 s
    gate.before_attempt("ListImageSetVersions")  # takes the slot; the next waits ~100 s
    outcome: list[object] = []

    def second() -> None:
        try:
            gate.before_attempt("ListImageSetVersions")
            outcome.append("sent")
        except ApiError as exc:
            outcome.append(exc.outcome)

    waiter = threading.Thread(target=second)
    waiter.start()
    assert stopping.waited_on.wait(30)  # the attempt is waiting for the budget now
    stopping.set()
    waiter.join(timeout=30)  # a hang detector: without the stop it would wait 100 s
    assert not waiter.is_alive()
    assert outcome == [Outcome.TIMEOUT]


def test_start_up_publishes_unbuilt_and_the_first_poll_builds_what_scrapers_want() -> None:
    config = Config(datastores=(), state=StateSettings(path=":memory:"))
    service = ExporterService(config)
    try:
        first = service.exposition()
        assert first.built() == frozenset()  # ready without formatting the fleet
        assert first.wanted() == PROMETHEUS_DEFAULT
        service.poll()
        polled = service.exposition()
        assert polled is not first and polled.built() == PROMETHEUS_DEFAULT
        assert first.built() == frozenset()  # the fleet was formatted once, by the poll
    finally:
        service.close()


DS = "d" * 32
IMAGE_SET = "a" * 32


def fleet_lines(exposition: Exposition) -> list[str]:
    """The image set lines of the OpenMetrics body (own metrics differ between processes)."""
    body = exposition.openmetrics.decode()
    return [line for line in body.splitlines() if "image_set_id=" in line]


def change(service: ExporterService, *versions: Version) -> None:
    key = ImageSetKey(DS, IMAGE_SET)
    assert service.state.apply(
        ImageSetChange(ImageSetSnapshot(key, versions), {CounterKey(NEW_VERSIONS, DS): 1})
    )


def saved_once(tmp_path: Path) -> tuple[Config, list[str]]:
    """Run a service that publishes a failure and stops; return its config and fleet lines."""
    config = Config(
        datastores=(DatastoreSettings(DS, (IMAGE_SET,)),),
        state=StateSettings(path=str(tmp_path / "state.db")),
    )
    service = ExporterService(config)
    change(service, Version(2, "COPY_FAILED", "ACTIVE"), Version(1, "IMPORTED", "ACTIVE"))
    service.poller.publish_view()  # as a poll does: built for the formats scrapers use
    before = fleet_lines(service.exposition())
    assert any("COPY_FAILED" in line for line in before)
    service.close()  # saves what it built
    return config, before


def test_a_stop_saves_the_exposition_and_the_next_start_serves_it_only_if_unchanged(
    tmp_path: Path,
) -> None:
    config, before = saved_once(tmp_path)

    restarted = ExporterService(config)
    served = restarted.exposition()
    assert served.built() == frozenset()  # nothing formatted at start-up...
    assert fleet_lines(served) == before  # ...and the fleet's lines served at once
    assert served.built() == frozenset()  # read from the state file, not formatted
    # A change after the last publish: a stop saves nothing, since the saved lines are stale.
    change(restarted, Version(3, "COPIED", "ACTIVE"), Version(2, "COPY_FAILED", "ACTIVE"))
    restarted.close()

    again = ExporterService(config)
    try:
        lines = fleet_lines(again.exposition())
        assert lines != before  # formatted from the state, not served stale
        assert any(
            "healthimaging_image_set_latest_version{" in line and line.endswith(" 3.0")
            for line in lines
        )
    finally:
        again.close()


def test_a_saved_exposition_altered_in_the_file_is_said_once_and_formatted_instead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, before = saved_once(tmp_path)
    db = sqlite3.connect(config.state.path)
    (body,) = db.execute("SELECT body FROM exposition WHERE openmetrics = 1").fetchone()
    altered = bytes(body[:-1]) + bytes([body[-1] ^ 0x01])  # same length, one bit flipped
    db.execute("UPDATE exposition SET body = ? WHERE openmetrics = 1", (altered,))
    db.commit()
    db.close()

    restarted = ExporterService(config)
    try:
        assert fleet_lines(restarted.exposition()) == before  # formatted, not the altered bytes
        assert restarted.exposition().built() != frozenset()
    finally:
        restarted.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"not serving the saved exposition: state.path {config.state.path}: "
        "the saved exposition was altered"
    ]
