"""A cycle is total: every failure is counted for its data store (`up` 0); the cycle completes.

Hand-written fakes stand in for the AWS boundary: they answer, fail or crash per image set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.aws import (
    ApiError,
    ClientFactory,
    DatastoreProperties,
    HealthImagingApi,
    ImageSetSummary,
)
from exporter.config import AwsSettings, Config, DatastoreSettings, DiscoverySettings, PollSettings
from exporter.metrics.own import EventMetrics, ExporterMetrics
from exporter.metrics.view import FleetView
from exporter.model import ImageSetKey, Version
from exporter.outcomes import Outcome
from exporter.plan import shown_in_full
from exporter.poller import Poller
from exporter.state import FleetState
from exporter.store import DatastoreRecord, SnapshotStore
from tests.helpers import FullDisk

GOOD_DS, BAD_DS = "a" * 32, "b" * 32
GOOD, BAD = "1" * 32, "2" * 32
VERSIONS = (Version(1, "COPIED", "ACTIVE"),)


class FakeApi(HealthImagingApi):
    """Answers per image set: versions, an ApiError, any other exception, or a hang."""

    def __init__(self, answers: dict[str, object], release: threading.Event) -> None:
        super().__init__(client=None)
        self.answers = answers
        self.release = release
        self.search_error: BaseException | None = None
        # What GetDatastore answers: a status, or an exception to raise; and the calls made.
        self.datastore_status: str | BaseException = "ACTIVE"
        self.status_calls = 0
        self.listings = 0

    def get_datastore(
        self, datastore_id: str, *, deadline: float | None = None
    ) -> DatastoreProperties:
        self.status_calls += 1
        if isinstance(self.datastore_status, BaseException):
            raise self.datastore_status
        return DatastoreProperties(datastore_id, "store-" + datastore_id[:4], self.datastore_status)

    def list_image_set_versions(
        self, datastore_id: str, image_set_id: str, *, deadline: float | None = None
    ) -> tuple[Version, ...]:
        self.listings += 1
        answer = self.answers.get(image_set_id, VERSIONS)
        if answer == "hang":
            self.release.wait(10)
            return VERSIONS
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, tuple)
        return answer

    def search_updated(
        self, datastore_id: str, since: float, until: float, *, deadline: float | None = None
    ) -> Iterator[ImageSetSummary]:
        if self.search_error is not None:
            raise self.search_error
        return iter(())


class FakeClients(ClientFactory):
    """One fake API per data store."""

    def __init__(self, apis: dict[str, FakeApi]) -> None:
        super().__init__(AwsSettings(), None, pool_size=1)
        self.apis = apis

    def for_datastore(self, datastore: DatastoreSettings) -> HealthImagingApi:
        return self.apis[datastore.datastore_id]


class Harness:
    """A poller over a real store, fake APIs and a recording publisher."""

    def __init__(self, store: SnapshotStore, config: Config, apis: dict[str, FakeApi]) -> None:
        self.metrics = ExporterMetrics(CollectorRegistry())
        self.views: list[FleetView] = []
        self.poller = Poller(
            config,
            FakeClients(apis),
            FleetState(store, full=shown_in_full(config)),
            self.metrics,
            self.publish,
        )

    def publish(self, view_of: Callable[[], FleetView]) -> None:
        self.views.append(view_of())

    def up(self, datastore_id: str) -> bool | None:
        return self.views[-1].datastores[datastore_id].up

    def errors(self, datastore_id: str, reason: Outcome) -> float:
        value = self.metrics.poll_errors.labels(datastore_id, reason)._value.get()
        return float(value)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def two_datastores(
    bad_answer: object, release: threading.Event, timeout_seconds: float | None = None
) -> tuple[Config, dict[str, FakeApi]]:
    config = Config(
        datastores=(
            DatastoreSettings(GOOD_DS, (GOOD,)),
            DatastoreSettings(BAD_DS, (GOOD, BAD)),
        ),
        poll=PollSettings(interval_seconds=60, concurrency=2, timeout_seconds=timeout_seconds),
    )
    apis = {
        GOOD_DS: FakeApi({}, release),
        BAD_DS: FakeApi({BAD: bad_answer}, release),
    }
    return config, apis


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (ApiError(Outcome.MALFORMED_RESPONSE, "versionId is not a number"), "malformed_response"),
        (ValueError("invalid literal for int() with base 10: '²'"), "internal_error"),
        (RecursionError("maximum recursion depth exceeded"), "internal_error"),
        (ApiError(Outcome.THROTTLED, "Rate exceeded"), "throttled"),
    ],
)
def test_one_failing_image_set_is_counted_and_the_cycle_completes(
    tmp_path: Path,
    release: threading.Event,
    caplog: pytest.LogCaptureFixture,
    answer: BaseException,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    store = SnapshotStore(str(tmp_path / "state.db"))
    try:
        config, apis = two_datastores(answer, release)
        h = Harness(store, config, apis)
        result = h.poller.run_cycle()
        assert (result.polled, result.failed, result.timed_out) == (3, 1, 0)
        assert not result.ok
        assert h.errors(BAD_DS, Outcome(reason)) == 1
        assert h.up(BAD_DS) is False and h.up(GOOD_DS) is True
        view = h.views[-1]
        assert set(view.image_sets) == {
            ImageSetKey(GOOD_DS, GOOD),
            ImageSetKey(BAD_DS, GOOD),
        }  # the rest of the fleet was polled
        finished = [r.getMessage() for r in caplog.records if "poll finished" in r.getMessage()]
        # "errors": image sets whose listing failed, not versions found failed.
        assert len(finished) == 1
        assert "3 image sets, 2 changed, 1 errors, 0 timed out" in finished[0]
        lines = [r for r in caplog.records if BAD in r.getMessage()]
        assert len(lines) == 1 and lines[0].exc_info is None, [r.getMessage() for r in lines]
        assert h.poller.completed_cycles == 1
    finally:
        h.poller.close()
        store.close()


def test_a_timeout_and_a_state_error_report_up_0(tmp_path: Path, release: threading.Event) -> None:
    store = FullDisk(str(tmp_path / "state.db"))
    try:
        config, apis = two_datastores("hang", release, timeout_seconds=1)
        h = Harness(store, config, apis)
        result = h.poller.run_cycle()
        assert result.timed_out == 1 and h.errors(BAD_DS, Outcome.TIMEOUT) == 1
        assert h.up(BAD_DS) is False and h.up(GOOD_DS) is True
        release.set()
        store.full = True
        apis[GOOD_DS].answers[GOOD] = (Version(2, "COPY_FAILED", "ACTIVE"), *VERSIONS)
        h.poller.run_cycle()
        assert h.errors(GOOD_DS, Outcome.STATE_ERROR) == 1
        assert h.up(GOOD_DS) is False
        assert not h.poller.state_ok
    finally:
        h.poller.close()
        store.close()


def test_a_crash_outside_any_image_set_is_counted_for_its_data_store(
    tmp_path: Path, release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    store = SnapshotStore(str(tmp_path / "state.db"))
    try:
        config = Config(
            datastores=(
                DatastoreSettings(GOOD_DS, (GOOD,)),
                DatastoreSettings(BAD_DS, "all"),
            ),
            poll=PollSettings(interval_seconds=60, concurrency=2),
        )
        apis = {GOOD_DS: FakeApi({}, release), BAD_DS: FakeApi({}, release)}
        apis[BAD_DS].search_error = TypeError("'NoneType' object is not iterable")
        h = Harness(store, config, apis)
        h.poller.run_cycle()  # the first sight of a searched data store does not search
        published = len(h.views)
        h.poller.run_cycle()
        assert len(h.views) > published  # the cycle published
        assert h.errors(BAD_DS, Outcome.INTERNAL_ERROR) == 1
        assert h.up(BAD_DS) is False and h.up(GOOD_DS) is True
        assert any(
            r.getMessage() == f"data store {BAD_DS}: internal error: TypeError: "
            "'NoneType' object is not iterable"
            for r in caplog.records
        )
        assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
    finally:
        h.poller.close()
        store.close()


class BrokenRecords(FleetState):
    """A state layer with a bug in its bookkeeping writes."""

    def save_record(self, record: DatastoreRecord) -> bool:
        raise RuntimeError("bug in save_record")


def test_a_bug_after_the_listings_still_ends_the_cycle_and_publishes(
    tmp_path: Path, release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    store = SnapshotStore(str(tmp_path / "state.db"))
    config, apis = two_datastores((), release)
    metrics = ExporterMetrics(CollectorRegistry())
    views: list[FleetView] = []
    poller = Poller(
        config,
        FakeClients(apis),
        BrokenRecords(store),
        metrics,
        lambda view_of: views.append(view_of()),
    )
    try:
        internal = metrics.poll_errors.labels(GOOD_DS, Outcome.INTERNAL_ERROR)
        # Recording the shard assignment at start failed too: counted, and the start went on.
        assert internal._value.get() == 1
        published = len(views)
        result = poller.run_cycle()
        assert not result.ok and poller.completed_cycles == 1
        assert len(views) == published + 1
        assert views[-1].datastores[GOOD_DS].up is False
        assert internal._value.get() == 2  # the cycle's own
        assert "poll cycle: internal error: RuntimeError: bug in save_record" in caplog.text
        assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
    finally:
        poller.close()
        store.close()


def status_every(config: Config, seconds: float) -> Config:
    return replace(config, discovery=DiscoverySettings(datastore_status_seconds=seconds))


def test_a_data_store_not_active_is_down_with_its_reason_and_not_listed(
    tmp_path: Path, release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter")
    store = SnapshotStore(str(tmp_path / "state.db"))
    try:
        config, apis = two_datastores(VERSIONS, release)
        h = Harness(store, status_every(config, 1e-9), apis)  # read every cycle
        h.poller.run_cycle()
        assert h.up(BAD_DS) is True
        ds_view = h.views[-1].datastores[BAD_DS]
        assert (ds_view.name, ds_view.status) == ("store-bbbb", "ACTIVE")
        listed = apis[BAD_DS].listings
        apis[BAD_DS].datastore_status = "DELETING"
        for _ in range(2):
            h.poller.run_cycle()
        assert h.up(BAD_DS) is False and h.up(GOOD_DS) is True
        assert h.errors(BAD_DS, Outcome.DATASTORE_NOT_ACTIVE) == 2  # once per cycle
        assert apis[BAD_DS].listings == listed  # a data store being deleted is not listed
        view = h.views[-1]
        assert view.datastores[BAD_DS].status == "DELETING"
        # its last known image sets stay as they were (not counted as deleted)
        assert ImageSetKey(BAD_DS, BAD) in view.image_sets
        assert not view.image_sets[ImageSetKey(BAD_DS, BAD)].deleted
        apis[BAD_DS].datastore_status = "ACTIVE"
        h.poller.run_cycle()
        assert h.up(BAD_DS) is True
        assert apis[BAD_DS].listings == listed + 2
        assert h.errors(BAD_DS, Outcome.DATASTORE_NOT_ACTIVE) == 2
        changes = [r for r in caplog.records if "status" in r.getMessage()]
        # one line per change, none for the cycles in between; the first ACTIVE is not news
        assert [(r.levelno, r.getMessage()) for r in changes] == [
            (logging.DEBUG, f"data store {GOOD_DS} (store-aaaa): status ACTIVE"),
            (logging.DEBUG, f"data store {BAD_DS} (store-bbbb): status ACTIVE"),
            (logging.WARNING, f"data store {BAD_DS} (store-bbbb): status DELETING (was ACTIVE)"),
            (logging.INFO, f"data store {BAD_DS} (store-bbbb): status ACTIVE (was DELETING)"),
        ]
    finally:
        h.poller.close()
        store.close()


def test_an_unknown_status_is_down_but_still_listed(
    tmp_path: Path, release: threading.Event
) -> None:
    store = SnapshotStore(str(tmp_path / "state.db"))
    try:
        config, apis = two_datastores(VERSIONS, release)
        apis[BAD_DS].datastore_status = "ARCHIVING"  # a newer API's status, passed through
        h = Harness(store, config, apis)
        h.poller.run_cycle()
        assert h.up(BAD_DS) is False
        assert h.errors(BAD_DS, Outcome.DATASTORE_NOT_ACTIVE) == 1
        assert apis[BAD_DS].listings == 2
        assert h.views[-1].datastores[BAD_DS].status == "ARCHIVING"
    finally:
        h.poller.close()
        store.close()


def test_the_status_is_read_once_per_period_and_a_failed_read_is_retried(
    tmp_path: Path, release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    store = SnapshotStore(str(tmp_path / "state.db"))
    try:
        config, apis = two_datastores(VERSIONS, release)
        apis[BAD_DS].datastore_status = ApiError(Outcome.ACCESS_DENIED, "GetDatastore: denied")
        h = Harness(store, config, apis)  # the default period: 300 s
        for _ in range(3):
            h.poller.run_cycle()
        assert apis[GOOD_DS].status_calls == 1  # read once, then not due for 300 s
        assert apis[BAD_DS].status_calls == 3  # a failed read is retried by the next cycle
        assert h.errors(BAD_DS, Outcome.ACCESS_DENIED) == 3
        assert h.up(BAD_DS) is False and h.up(GOOD_DS) is True
        assert apis[BAD_DS].listings == 6  # an unknown status does not stop the listings
        assert h.views[-1].datastores[BAD_DS].status is None
        failed = [r for r in caplog.records if "status check failed" in r.getMessage()]
        assert len(failed) == 1  # the same failure is logged once
        apis[BAD_DS].datastore_status = "ACTIVE"
        h.poller.run_cycle()
        assert h.up(BAD_DS) is True and apis[BAD_DS].status_calls == 4
    finally:
        h.poller.close()
        store.close()


def test_a_data_store_event_makes_the_status_read_due_at_the_next_cycle(
    tmp_path: Path, release: threading.Event
) -> None:
    store = SnapshotStore(str(tmp_path / "state.db"))
    try:
        config, apis = two_datastores(VERSIONS, release)
        h = Harness(store, config, apis)  # the default period: 300 s
        h.poller.run_cycle()
        h.poller.run_cycle()
        assert apis[GOOD_DS].status_calls == 1
        h.poller.datastore_changed(GOOD_DS)  # e.g. a "Data Store Deleting" event
        h.poller.run_cycle()
        assert apis[GOOD_DS].status_calls == 2
        assert apis[BAD_DS].status_calls == 1  # only the data store the event named
    finally:
        h.poller.close()
        store.close()


def test_status_reads_can_be_turned_off_and_a_reload_makes_them_due(
    tmp_path: Path, release: threading.Event
) -> None:
    store = SnapshotStore(str(tmp_path / "state.db"))
    try:
        config, apis = two_datastores(VERSIONS, release)
        apis[BAD_DS].datastore_status = "DELETED"
        h = Harness(store, status_every(config, 0), apis)
        h.poller.run_cycle()
        assert apis[BAD_DS].status_calls == 0 and h.up(BAD_DS) is True
        assert h.views[-1].datastores[BAD_DS].status is None
        h.poller.reconfigure(config, FakeClients(apis))  # back to the default period
        h.poller.run_cycle()
        assert apis[BAD_DS].status_calls == 1 and h.up(BAD_DS) is False
        h.poller.reconfigure(config, FakeClients(apis))
        h.poller.run_cycle()
        assert apis[BAD_DS].status_calls == 2  # a reload may change region or role: due again
        h.poller.reconfigure(status_every(config, 0), FakeClients(apis))
        h.poller.run_cycle()
        assert h.up(BAD_DS) is True and h.views[-1].datastores[BAD_DS].status is None
    finally:
        h.poller.close()
        store.close()


def test_the_backfill_pauses_while_the_data_store_is_not_active(
    tmp_path: Path, release: threading.Event
) -> None:
    store = SnapshotStore(str(tmp_path / "state.db"))
    try:
        config = status_every(Config(datastores=(DatastoreSettings(GOOD_DS, "all"),)), 1e-9)
        apis = {GOOD_DS: FakeApi({}, release)}
        h = Harness(store, config, apis)
        h.poller.run_cycle()
        first = h.poller._backfills[GOOD_DS]
        assert h.poller.backfilling and not first.cancelled.is_set()
        apis[GOOD_DS].datastore_status = "DELETING"
        h.poller.run_cycle()
        assert first.cancelled.is_set() and not h.poller.backfilling
        apis[GOOD_DS].datastore_status = "ACTIVE"
        h.poller.run_cycle()
        resumed = h.poller._backfills[GOOD_DS]
        assert resumed is not first and h.poller.backfilling
    finally:
        h.poller.close()


def test_a_change_a_cycle_finds_counts_as_missed_unless_an_event_announced_it(
    tmp_path: Path, release: threading.Event
) -> None:
    config = Config(datastores=(DatastoreSettings(GOOD_DS, (GOOD, BAD)),))
    api = FakeApi({}, release)
    store = SnapshotStore(str(tmp_path / "state.db"))
    harness = Harness(store, config, {GOOD_DS: api})
    events = EventMetrics(CollectorRegistry())
    harness.poller.event_metrics = events
    try:
        harness.poller.run_cycle()  # baselines: not changes

        def missed() -> float:
            return float(events.events_missed.labels(GOOD_DS)._value.get())

        assert missed() == 0
        # GOOD changes with no event; BAD changes and an event names it, but its listing by
        # the event path runs before the change is visible (it finds nothing new).
        failed_good = (Version(2, "COPY_FAILED", "ACTIVE"), *VERSIONS)
        api.answers[GOOD] = failed_good
        results = harness.poller.list_for_events({ImageSetKey(GOOD_DS, BAD): None})
        assert results == {ImageSetKey(GOOD_DS, BAD): "unchanged"}
        api.answers[BAD] = (Version(2, "COPY_FAILED", "ACTIVE"), *VERSIONS)
        harness.poller.run_cycle()
        assert missed() == 1  # GOOD's; BAD's was announced
        # An event whose listing applies the change: the cycle finds nothing, misses nothing.
        api.answers[GOOD] = (Version(3, "UPDATED", "ACTIVE"), *failed_good)
        results = harness.poller.list_for_events({ImageSetKey(GOOD_DS, GOOD): None})
        assert results == {ImageSetKey(GOOD_DS, GOOD): "changed"}
        harness.poller.run_cycle()
        assert missed() == 1
        # Not watched: not listed.
        assert harness.poller.list_for_events({ImageSetKey(BAD_DS, GOOD): None}) == {}
    finally:
        harness.poller.close()
        store.close()
