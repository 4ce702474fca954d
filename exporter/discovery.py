"""Change detection for whole data stores: which image sets to list, and the inventory backfill."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from exporter.aws import ApiError, HealthImagingApi, ImageSetSummary
from exporter.model import ImageSetKey, ImageSetSnapshot, Version

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListingHint:
    """What a search said of an image set that is about to be listed."""

    updated_at: float | None = None
    created_at: float | None = None


def needs_listing(snapshot: ImageSetSnapshot | None, summary: ImageSetSummary) -> bool:
    """Tell whether a search hit shows a change the snapshot has not seen."""
    if snapshot is None or snapshot.is_deleted:
        return True
    latest = snapshot.latest
    if latest is None:
        return True
    if summary.version is not None and summary.version != latest.version_id:
        return True
    return summary.updated_at != snapshot.seen_updated_at


def reconcile_batch(
    keys: Sequence[ImageSetKey], position: int, interval: float, period: float
) -> tuple[list[ImageSetKey], int]:
    """Pick the next keys to re-list, all once per period; return them and the next position."""
    if not keys:
        return [], 0
    count = min(len(keys), math.ceil(len(keys) * interval / period))
    start = position % len(keys)
    batch = [keys[(start + i) % len(keys)] for i in range(count)]
    return batch, (start + count) % len(keys)


class BackfillSink(Protocol):
    """Where the backfill hands its results: the poller, which owns the state."""

    def is_known(self, key: ImageSetKey) -> bool:
        """Tell whether the image set already has a snapshot."""

    def apply_listing(
        self, key: ImageSetKey, versions: tuple[Version, ...], hint: ListingHint
    ) -> None:
        """Diff and persist a listing (a baseline, for an image set seen the first time)."""

    def save_backfill(self, datastore_id: str, token: str | None, listed: int, done: bool) -> None:
        """Persist the backfill's progress."""


class Backfill:
    """Lists a data store's whole inventory in the background, resuming from a saved token."""

    RETRY_SECONDS = (5.0, 15.0, 60.0)

    def __init__(
        self,
        datastore_id: str,
        api: HealthImagingApi,
        sink: BackfillSink,
        until: float,
        token: str | None,
        listed: int,
        concurrency: int,
        in_shard: Callable[[str], bool],
    ) -> None:
        self.datastore_id = datastore_id
        self._api = api
        self._sink = sink
        self._until = until
        self._token = token
        self._listed = listed
        self._concurrency = concurrency
        self._in_shard = in_shard
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"backfill-{datastore_id[:8]}", daemon=True
        )

    def start(self) -> Backfill:
        """Start listing in a background thread."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Tell whether the backfill is still going."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the page in progress; its progress is saved."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        log.info("backfill of data store %s started", self.datastore_id)
        failures = 0
        with ThreadPoolExecutor(self._concurrency, thread_name_prefix="backfill") as pool:
            while not self._stop.is_set():
                try:
                    done = self._page(pool)
                    failures = 0
                except ApiError as exc:
                    if exc.outcome == "validation_error" and self._token is not None:
                        # An expired or foreign token: start over; known image sets cost nothing.
                        log.warning("backfill of %s: %s; starting over", self.datastore_id, exc)
                        self._token = None
                        continue
                    wait = self.RETRY_SECONDS[min(failures, len(self.RETRY_SECONDS) - 1)]
                    failures += 1
                    log.error("backfill of %s: %s; retrying in %.0fs", self.datastore_id, exc, wait)
                    self._stop.wait(wait)
                    continue
                if done:
                    log.info(
                        "backfill of data store %s complete: %d image sets",
                        self.datastore_id,
                        self._listed,
                    )
                    return

    def _page(self, pool: ThreadPoolExecutor) -> bool:
        page, next_token = self._api.search_page(self.datastore_id, 0.0, self._until, self._token)
        mine = [s for s in page if self._in_shard(s.image_set_id)]
        todo = [s for s in mine if not self._sink.is_known(self._key(s))]

        def list_one(summary: ImageSetSummary) -> None:
            if self._stop.is_set():
                raise ApiError("timeout", "backfill stopped")
            versions = self._api.list_image_set_versions(self.datastore_id, summary.image_set_id)
            hint = ListingHint(summary.updated_at, summary.created_at)
            self._sink.apply_listing(self._key(summary), versions, hint)

        errors = []
        for future in [pool.submit(list_one, s) for s in todo]:
            error = future.exception()
            if isinstance(error, ApiError):
                errors.append(error)
            elif error is not None:
                raise error
        not_found = [e for e in errors if e.outcome == "not_found"]
        if len(errors) > len(not_found):
            raise errors[0]  # the page is retried; listed image sets are skipped next time
        self._listed += len(mine)
        self._token = next_token
        done = next_token is None
        self._sink.save_backfill(self.datastore_id, next_token, self._listed, done)
        if self._listed and self._listed % 5000 < len(mine):
            log.info("backfill of %s: %d image sets listed", self.datastore_id, self._listed)
        return done

    def _key(self, summary: ImageSetSummary) -> ImageSetKey:
        return ImageSetKey(self.datastore_id, summary.image_set_id)
