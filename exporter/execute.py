"""Executing a plan: list image sets on a bounded pool within a deadline; touches no state.

Results are yielded as calls complete, so the caller can apply each at once (a stop or a crash
mid-cycle keeps what was applied). Calls still in flight at the deadline or at a stop are left to
end at botocore's read timeout; their results are discarded, and the pool they run on is joined
when its owner closes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from exporter.aws import ApiError, HealthImagingApi
from exporter.model import ImageSetKey, Version
from exporter.outcomes import Outcome

log = logging.getLogger(__name__)

T = TypeVar("T")
# How often a wait for results looks at the stop flag: a stop is noticed this fast.
STOP_CHECK_SECONDS = 0.25


class ListingPool:
    """A bounded thread pool for AWS calls; its owner closes it, which joins every thread."""

    def __init__(self, name: str, size: int) -> None:
        self._name = name
        self._size = size
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(size, thread_name_prefix=name)
        # Pools replaced by a resize, still finishing their calls: joined on close.
        self._retired: list[ThreadPoolExecutor] = []

    def submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        """Run a call on the pool."""
        with self._lock:
            return self._pool.submit(fn, *args)

    def resize(self, size: int) -> None:
        """Use `size` threads from now on; calls in flight finish on the old threads."""
        with self._lock:
            if size == self._size:
                return
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._retired.append(self._pool)
            self._pool, self._size = ThreadPoolExecutor(size, thread_name_prefix=self._name), size

    def close(self) -> None:
        """Drop queued calls and join every thread (calls in flight end at their read timeout)."""
        with self._lock:
            pools = [*self._retired, self._pool]
            self._retired = []
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class Listing:
    """One image set's listing: its versions, or why there are none."""

    key: ImageSetKey
    versions: tuple[Version, ...] = ()
    error: ApiError | None = None
    unexpected: BaseException | None = None  # a bug, not an answer: counted as internal_error
    # time.monotonic() when its call was sent: a listing older than one already applied (the
    # event path and a cycle listing one image set at once) is not applied over it.
    started: float | None = None


class Execution:
    """Lists image sets concurrently; iterate it for the results, then read what was left."""

    def __init__(
        self,
        jobs: Mapping[ImageSetKey, HealthImagingApi],
        pool: ListingPool,
        deadline: float,
        stop: threading.Event,
    ) -> None:
        self._jobs = jobs
        self._pool = pool
        self._deadline = deadline  # time.monotonic()
        self._stop = stop
        self._denied: set[str] = set()
        self.not_reached: list[ImageSetKey] = []  # after the deadline or a stop
        self.interrupted = False  # by a stop, not the deadline

    def _fetch(self, key: ImageSetKey, api: HealthImagingApi) -> tuple[float, tuple[Version, ...]]:
        if key.datastore_id in self._denied:
            raise ApiError(Outcome.SKIPPED, "access to the data store was denied")
        if self._stop.is_set() or time.monotonic() > self._deadline:
            raise ApiError(Outcome.TIMEOUT, "skipped: the cycle's deadline passed")
        try:
            started = time.monotonic()
            # The deadline bounds the paging too: a listing that never ends stops with the cycle.
            return started, api.list_image_set_versions(*key, deadline=self._deadline)
        except ApiError as exc:
            if exc.outcome == Outcome.ACCESS_DENIED:
                # Here, not in the caller: the next worker must see it at once.
                self._denied.add(key.datastore_id)
            raise

    def __iter__(self) -> Iterator[Listing]:
        pending: dict[Future[tuple[float, tuple[Version, ...]]], ImageSetKey] = {
            self._pool.submit(self._fetch, key, api): key for key, api in self._jobs.items()
        }
        try:
            while pending and not self._stop.is_set():
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    break
                done, _ = wait(
                    pending, timeout=min(remaining, STOP_CHECK_SECONDS), return_when=FIRST_COMPLETED
                )
                for future in done:
                    yield _listing(pending.pop(future), future)
        finally:
            self.interrupted = bool(pending) and self._stop.is_set()
            for future in pending:
                future.cancel()  # queued ones never run; running ones are discarded
            self.not_reached = sorted(pending.values())


def _listing(key: ImageSetKey, future: Future[tuple[float, tuple[Version, ...]]]) -> Listing:
    error = future.exception()
    if error is None:
        started, versions = future.result()
        return Listing(key, versions, started=started)
    if isinstance(error, ApiError):
        return Listing(key, error=error)
    return Listing(key, unexpected=error)
