"""The service's stop gate: once stopping, no AWS attempt is sent and no budget wait is sat out."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

from exporter.aws import ApiError, AttemptRecorder
from exporter.config import AwsSettings, Config, StateSettings
from exporter.metrics.exposition import PROMETHEUS_DEFAULT
from exporter.metrics.own import ExporterMetrics
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
