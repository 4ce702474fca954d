"""Change detection for searched data stores: cursors, reconciliation, the backfill's paging.

The backfill is a sequence of pages, each run by whoever calls `Backfill.run_page` (the runtime's
backfill job; tests call it directly): no thread of its own. A page's listings go through the same
ingest path as a cycle's, and its progress (the next token) is saved after every page, so a
restart resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import replace

from exporter.aws import ApiError, HealthImagingApi, ImageSetSummary
from exporter.config import Config, DatastoreSettings
from exporter.execute import STOP_CHECK_SECONDS, Listing, ListingPool
from exporter.ingest import Ingest, Ingested, describe
from exporter.model import ImageSetKey, Version
from exporter.outcomes import Outcome
from exporter.plan import ListingHint, in_shard
from exporter.state import FleetState

log = logging.getLogger(__name__)


def reconcile_size(size: int, interval: float, period: float) -> int:
    """Return how many of `size` image sets a cycle re-lists, so that all are once per period."""
    return min(size, math.ceil(size * interval / period))


def reconcile_batch(
    keys_after: Callable[[str, int], list[ImageSetKey]], after: str, count: int
) -> list[ImageSetKey]:
    """Return the next `count` keys after the id `after`, wrapping round to the first ones.

    The walk is in id order, read from the store a batch at a time: O(batch) per cycle, with
    no key list in memory; an image set that arrives is met at its place in the order.
    """
    if count <= 0:
        return []
    batch = keys_after(after, count)
    if len(batch) < count and after:
        seen = set(batch)
        batch += [k for k in keys_after("", count - len(batch)) if k not in seen]
    return batch


class Discovery:
    """Searches data stores for changes since their cursor and picks reconciliation batches."""

    def __init__(self, state: FleetState, clock: Callable[[], float]) -> None:
        self._state = state
        self._clock = clock
        # Per data store, the last image set id a reconciliation batch reached.
        self._reconcile_after: dict[str, str] = {}

    def search(
        self,
        config: Config,
        datastore: DatastoreSettings,
        api: HealthImagingApi,
        deadline: float | None = None,
    ) -> tuple[list[ImageSetSummary] | None, float]:
        """Return image sets updated since the cursor (None at first sight) and the search's end.

        Raises ApiError when the search fails, or has not finished by `deadline` (monotonic).
        """
        ds_id = datastore.datastore_id
        record = self._state.record(ds_id)
        now = self._clock()
        if record.discovery_started is None:
            # First sight of the data store: from now on changes are searched for; what
            # came before is listed by the backfill (or, for a list, by this first cycle).
            self._state.save_record(replace(record, discovery_started=now, cursor=now))
            return None, now
        since = record.cursor if record.cursor is not None else now
        since -= config.discovery.overlap_seconds
        return list(api.search_updated(ds_id, since, now, deadline=deadline)), now

    def reconcile(self, config: Config, datastore: DatastoreSettings) -> list[ImageSetKey]:
        """Pick this cycle's share of the periodic full re-listing."""
        ds_id = datastore.datastore_id
        if datastore.discovers_all and not self._state.record(ds_id).backfill_complete:
            return []
        count = reconcile_size(
            self._state.size(ds_id),
            config.poll.interval_seconds,
            config.discovery.reconcile_seconds,
        )
        after = self._reconcile_after.get(ds_id, "")
        batch = reconcile_batch(
            lambda start, limit: self._state.keys_after(ds_id, start, limit), after, count
        )
        self._reconcile_after[ds_id] = batch[-1].image_set_id if batch else ""
        return batch

    def advance_cursors(
        self,
        searched: Mapping[str, float],
        unfinished: Iterable[tuple[ImageSetKey, ListingHint | None]],
    ) -> None:
        """Move each cursor to its search's end, or back to the oldest change not yet listed."""
        behind: dict[str, list[float]] = {}
        for key, hint in unfinished:
            if hint is not None and hint.updated_at is not None:
                behind.setdefault(key.datastore_id, []).append(hint.updated_at)
        for ds_id, until in searched.items():
            cursor = min([until, *behind.get(ds_id, [])])
            record = self._state.record(ds_id)
            if record.cursor != cursor:
                self._state.save_record(replace(record, cursor=cursor))

    def forget(self, datastore_ids: Iterable[str]) -> None:
        """Keep reconciliation positions only for the data stores still configured."""
        keep = set(datastore_ids)
        self._reconcile_after = {
            ds: after for ds, after in self._reconcile_after.items() if ds in keep
        }


class Backfill:
    """Lists a data store's whole inventory page by page, resuming from a saved token."""

    RETRY_SECONDS = (5.0, 15.0, 60.0)

    def __init__(
        self,
        datastore_id: str,
        api: HealthImagingApi,
        config: Config,
        until: float,
        token: str | None,
        listed: int,
    ) -> None:
        self.datastore_id = datastore_id
        self._api = api
        self._config = config
        self._until = until
        self._token = token
        self._listed = listed
        self._failures = 0
        self._started = False
        self._retry_at = 0.0  # time.monotonic() before which no page is tried
        self.complete = False
        self.cancelled = threading.Event()  # set when a reload replaces this backfill

    def due(self) -> bool:
        """Tell whether a page may run now (not complete, cancelled or waiting to retry)."""
        return (
            not self.complete and not self.cancelled.is_set() and time.monotonic() >= self._retry_at
        )

    def run_page(
        self, pool: ListingPool, ingest: Ingest, state: FleetState, stop: threading.Event
    ) -> Outcome | None:
        """List one page of the inventory; on failure, wait before the next try. Never raises.

        Return the failure's outcome, for the caller to count, or None.
        """
        if not self._started:
            self._started = True
            log.info("backfill of data store %s started", self.datastore_id)
        try:
            finished = self._page(pool, ingest, state, stop)
        except ApiError as exc:
            if exc.outcome == Outcome.VALIDATION_ERROR and self._token is not None:
                # An expired or foreign token: start over; known image sets cost nothing.
                log.warning("backfill of %s: %s; starting over", self.datastore_id, exc)
                self._token = None
                return None
            self._retry_later(str(exc))
            return Outcome(exc.outcome)
        except Exception as exc:
            self._retry_later(f"internal error: {describe(exc)}")
            log.debug("backfill of %s: internal error", self.datastore_id, exc_info=exc)
            return Outcome.INTERNAL_ERROR
        if finished is None:
            return None  # stopped: progress is saved page by page, the next start resumes
        self._failures = 0
        if finished:
            self.complete = True
            log.info(
                "backfill of data store %s complete: %d image sets", self.datastore_id, self._listed
            )
        return None

    def _retry_later(self, why: str) -> None:
        wait_seconds = self.RETRY_SECONDS[min(self._failures, len(self.RETRY_SECONDS) - 1)]
        self._failures += 1
        self._retry_at = time.monotonic() + wait_seconds
        log.error("backfill of %s: %s; retrying in %.0fs", self.datastore_id, why, wait_seconds)

    def _page(
        self, pool: ListingPool, ingest: Ingest, state: FleetState, stop: threading.Event
    ) -> bool | None:
        """Return whether the inventory is complete, or None if a stop cut the page short."""
        page, next_token = self._api.search_page(self.datastore_id, 0.0, self._until, self._token)
        mine = [s for s in page if in_shard(self._config, s.image_set_id)]
        todo = {self._key(s): s for s in mine if state.get(self._key(s)) is None}
        pending: dict[Future[tuple[Version, ...]], ImageSetKey] = {
            pool.submit(self._list, key, stop): key for key in todo
        }
        errors: list[ApiError] = []
        while pending:
            if stop.is_set() or self.cancelled.is_set():
                for future in pending:
                    future.cancel()
                return None
            finished, _ = wait(pending, timeout=STOP_CHECK_SECONDS, return_when=FIRST_COMPLETED)
            for future in finished:
                key = pending.pop(future)
                error = future.exception()
                if isinstance(error, ApiError):
                    errors.append(error)
                    continue
                if error is not None:
                    raise error
                summary = todo[key]
                hint = ListingHint(summary.updated_at, summary.created_at)
                result = ingest.listing(Listing(key, future.result()), hint)
                if result not in (Ingested.CHANGED, Ingested.UNCHANGED):
                    raise ApiError(result, f"image set {key.image_set_id}: {result}")
        not_found = [e for e in errors if e.outcome == Outcome.NOT_FOUND]
        if len(errors) > len(not_found):
            raise errors[0]  # the page is retried; listed image sets are skipped next time
        self._listed += len(mine)
        self._token = next_token
        done = next_token is None
        with state.lock:
            record = state.record(self.datastore_id)
            state.save_record(
                replace(
                    record,
                    backfill_token=next_token,
                    backfill_listed=self._listed,
                    backfill_complete=done,
                )
            )
        if self._listed and self._listed % 5000 < len(mine):
            log.info("backfill of %s: %d image sets listed", self.datastore_id, self._listed)
        return done

    def _list(self, key: ImageSetKey, stop: threading.Event) -> tuple[Version, ...]:
        if stop.is_set() or self.cancelled.is_set():
            raise ApiError(Outcome.TIMEOUT, "backfill stopped")
        return self._api.list_image_set_versions(*key)

    def _key(self, summary: ImageSetSummary) -> ImageSetKey:
        return ImageSetKey(self.datastore_id, summary.image_set_id)
