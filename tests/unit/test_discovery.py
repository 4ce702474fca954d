"""The backfill's paging with a fake API: pages, progress saved per page, retries, restarts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.aws import ApiError, HealthImagingApi, ImageSetSummary
from exporter.config import Config, DatastoreSettings
from exporter.discovery import Backfill, reconcile_batch, reconcile_size
from exporter.execute import ListingPool
from exporter.ingest import Ingest
from exporter.model import ImageSetKey, Version
from exporter.outcomes import Outcome
from exporter.state import FleetState
from exporter.store import SnapshotStore

DS = "d" * 32
IDS = [f"{n:032x}" for n in range(1, 6)]
CONFIG = Config(datastores=(DatastoreSettings(DS, "all"),))


class PagedApi(HealthImagingApi):
    """Two pages of search results; failures can be queued per call."""

    def __init__(self) -> None:
        super().__init__(client=None)
        self.pages = {None: (IDS[:3], "page-2"), "page-2": (IDS[3:], None)}
        self.search_failures: list[Exception] = []
        self.listed: list[str] = []
        self.hang = threading.Event()  # set: list calls wait for `release`
        self.release = threading.Event()

    def search_page(
        self,
        datastore_id: str,
        since: float,
        until: float,
        token: str | None = None,
        *,
        deadline: float | None = None,
    ) -> tuple[list[ImageSetSummary], str | None]:
        if self.search_failures:
            raise self.search_failures.pop(0)
        ids, next_token = self.pages[token]
        return [ImageSetSummary(i, 1, 5.0, 1.0) for i in ids], next_token

    def list_image_set_versions(
        self, datastore_id: str, image_set_id: str, *, deadline: float | None = None
    ) -> tuple[Version, ...]:
        if self.hang.is_set():
            self.release.wait(10)
        self.listed.append(image_set_id)
        return (Version(1, "COPIED", "ACTIVE"),)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[FleetState, Ingest, ListingPool]]:
    store = SnapshotStore(str(tmp_path / "state.db"))
    pool = ListingPool("backfill", 2)
    state = FleetState(store)
    yield state, Ingest(state, clock=lambda: 100.0), pool
    pool.close()
    store.close()


def test_pages_are_listed_and_progress_is_saved_after_each(
    parts: tuple[FleetState, Ingest, ListingPool],
) -> None:
    state, ingest, pool = parts
    api = PagedApi()
    backfill = Backfill(DS, api, CONFIG, until=50.0, token=None, listed=0)
    stop = threading.Event()
    backfill.run_page(pool, ingest, state, stop)
    record = state.record(DS)
    assert (record.backfill_token, record.backfill_listed, record.backfill_complete) == (
        "page-2",
        3,
        False,
    )
    # A restart resumes from the saved token: the first page is not searched again.
    resumed = Backfill(DS, api, CONFIG, 50.0, record.backfill_token, record.backfill_listed)
    resumed.run_page(pool, ingest, state, stop)
    assert resumed.complete and state.record(DS).backfill_complete
    assert state.record(DS).backfill_listed == 5
    assert sorted(api.listed) == IDS
    assert {k.image_set_id for k in state.image_set_keys(DS)} == set(IDS)


def test_a_failed_page_waits_before_its_retry(
    parts: tuple[FleetState, Ingest, ListingPool],
) -> None:
    state, ingest, pool = parts
    api = PagedApi()
    api.search_failures.append(ApiError(Outcome.THROTTLED, "Rate exceeded"))
    backfill = Backfill(DS, api, CONFIG, until=50.0, token=None, listed=0)
    # The failure is returned for the poller to count in poll_errors_total.
    assert backfill.run_page(pool, ingest, state, threading.Event()) == Outcome.THROTTLED
    assert not backfill.due()  # RETRY_SECONDS[0] from now
    assert state.record(DS).backfill_token is None and api.listed == []


def test_an_expired_token_starts_over(parts: tuple[FleetState, Ingest, ListingPool]) -> None:
    state, ingest, pool = parts
    api = PagedApi()
    api.search_failures.append(ApiError(Outcome.VALIDATION_ERROR, "bad token"))
    backfill = Backfill(DS, api, CONFIG, until=50.0, token="expired", listed=3)
    backfill.run_page(pool, ingest, state, threading.Event())
    assert backfill.due()  # no wait: the next page starts from the beginning
    backfill.run_page(pool, ingest, state, threading.Event())
    assert state.record(DS).backfill_token == "page-2"


def test_a_stop_mid_page_saves_no_progress(
    parts: tuple[FleetState, Ingest, ListingPool],
) -> None:
    state, ingest, pool = parts
    api = PagedApi()
    api.hang.set()
    stop = threading.Event()
    backfill = Backfill(DS, api, CONFIG, until=50.0, token=None, listed=0)
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    backfill.run_page(pool, ingest, state, stop)  # returns at the stop, calls still in flight
    timer.join()
    api.release.set()
    assert not backfill.complete
    assert state.record(DS).backfill_token is None  # the page is listed again after a restart


def test_reconcile_batches_cover_everything_once_per_period() -> None:
    keys = sorted(ImageSetKey(DS, i) for i in IDS)

    def keys_after(after: str, limit: int) -> list[ImageSetKey]:
        return [k for k in keys if k.image_set_id > after][:limit]

    seen: list[ImageSetKey] = []
    after = ""
    count = reconcile_size(len(keys), interval=60, period=300)
    for _ in range(5):  # period / interval = 5 cycles
        batch = reconcile_batch(keys_after, after, count)
        assert len(batch) == count
        after = batch[-1].image_set_id
        seen.extend(batch)
    assert set(seen) == set(keys)
    assert reconcile_batch(lambda after, limit: [], "", 3) == []
    assert reconcile_size(0, 60, 300) == 0


def test_a_bug_in_a_page_is_an_internal_error_and_waits(
    parts: tuple[FleetState, Ingest, ListingPool],
) -> None:
    state, ingest, pool = parts
    api = PagedApi()
    api.search_failures.append(RuntimeError("a bug"))
    backfill = Backfill(DS, api, CONFIG, until=50.0, token=None, listed=0)
    assert backfill.run_page(pool, ingest, state, threading.Event()) == Outcome.INTERNAL_ERROR
    assert not backfill.due()
    assert state.record(DS).backfill_token is None and api.listed == []
