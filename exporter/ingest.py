"""The one path from a listing to the state: diff -> store -> memory, for cycles and backfills.

Total: whatever happens while one image set is handled ends as an outcome of that image set;
an unexpected exception is `internal_error`, logged in one line (the traceback at debug).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum

from exporter.aws import ApiError
from exporter.diff import diff_deleted, diff_versions
from exporter.execute import Listing
from exporter.model import ImageSetKey, ImageSetSnapshot, Version
from exporter.outcomes import Outcome
from exporter.plan import ListingHint
from exporter.reasons import failure_increments
from exporter.reshard import moved_baseline
from exporter.state import FleetState

# The name the operations guide and operators' log filters know these lines by.
log = logging.getLogger("exporter.poller")


class Ingested(StrEnum):
    """How a listing that was not an error ended (never a label value)."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


Result = Ingested | Outcome


class Ingest:
    """Applies listings and listing errors to the fleet state."""

    def __init__(self, state: FleetState, clock: Callable[[], float]) -> None:
        self._state = state
        self._clock = clock
        # discovery.overlap_seconds, set by the poller from the config in force.
        self.overlap_seconds = 0.0
        # Image set -> when the newest listing applied to it was sent (time.monotonic()), kept
        # for image sets the event path listed lately: its listings run beside the cycle's, and
        # an older listing applied over a newer one would undo a status and count it again.
        self._ordered: dict[ImageSetKey, float] = {}

    def order(self, key: ImageSetKey, started: float) -> None:
        """Apply listings of `key` only in the order they were sent, from now on for a while."""
        with self._state.lock:
            self._ordered[key] = max(started, self._ordered.get(key, started))

    def forget_order(self, before: float) -> None:
        """Stop ordering image sets whose last listing was sent before `before`."""
        with self._state.lock:
            self._ordered = {k: t for k, t in self._ordered.items() if t >= before}

    def _is_stale(self, listing: Listing) -> bool:
        newest = self._ordered.get(listing.key)
        if newest is None or listing.started is None:
            return False
        if listing.started < newest:
            return True
        self._ordered[listing.key] = listing.started
        return False

    def listing(self, listing: Listing, hint: ListingHint | None) -> Result:
        """Apply one listing (versions, an API error or a crash); never raises."""
        key = listing.key
        try:
            if listing.unexpected is not None:
                raise listing.unexpected
            with self._state.lock:
                if listing.error is None and self._is_stale(listing):
                    return Ingested.UNCHANGED
                if listing.error is not None:
                    return self._error(key, listing.error)
                return self._versions(key, listing.versions, hint)
        except Exception as exc:
            log.error("image set %s/%s: internal error: %s", *key, describe(exc))
            log.debug("image set %s/%s: internal error", *key, exc_info=exc)
            return Outcome.INTERNAL_ERROR

    def _versions(
        self, key: ImageSetKey, versions: tuple[Version, ...], hint: ListingHint | None
    ) -> Result:
        with self._state.lock:
            previous = self._state.get(key)
            if previous is None and self._created_while_watched(key, hint):
                # A new image set, not an old one met late: its whole history is news.
                previous = ImageSetSnapshot(key, ())
            if previous is None:
                # An image set moved here by a reshard: what changed while it moved is news.
                watched_until = self._state.record(key.datastore_id).watched_until
                previous = moved_baseline(key, versions, watched_until, self.overlap_seconds)
            change = diff_versions(key, previous, versions)
            if change.failed:
                known = self._state.failure_reasons(key.datastore_id)
                extra = failure_increments(key, change.failed, known)
                change = replace(change, increments={**change.increments, **extra})
            if hint is not None and hint.updated_at is not None:
                change = replace(
                    change, snapshot=replace(change.snapshot, seen_updated_at=hint.updated_at)
                )
            if previous is not None and change.snapshot == previous:
                return Ingested.UNCHANGED
            if not self._state.apply(change):
                return Outcome.STATE_ERROR
        if change.baseline:
            log.debug("image set %s/%s: baseline of %d versions", *key, len(versions))
        for version in change.failed:
            # The reason code only: the rest of the message is free text and stays with AWS.
            log.warning(
                "image set %s/%s: version %d is %s (reason %s)",
                *key,
                version.version_id,
                version.workflow_status,
                version.reason or "other",
            )
        if change.vanished:
            log.warning("image set %s/%s: %d versions left the list", *key, change.vanished)
        return Ingested.CHANGED

    def _error(self, key: ImageSetKey, exc: ApiError) -> Result:
        if exc.outcome == Outcome.NOT_FOUND:
            with self._state.lock:
                previous = self._state.get(key)
                change = diff_deleted(previous, self._clock())
                if change is not None:
                    if not self._state.apply(change, drop_counters=True):
                        return Outcome.STATE_ERROR
                    log.warning("image set %s/%s: deleted", *key)
                    return Ingested.DELETED
                if previous is not None:  # already recorded as deleted
                    return Ingested.DELETED
        if exc.outcome == Outcome.ACCESS_DENIED:
            log.error("data store %s: %s", key.datastore_id, exc)
        elif exc.outcome not in (Outcome.SKIPPED, Outcome.TIMEOUT):
            log.error("image set %s/%s: %s", *key, exc)
        return Outcome(exc.outcome)

    def _created_while_watched(self, key: ImageSetKey, hint: ListingHint | None) -> bool:
        started = self._state.record(key.datastore_id).discovery_started
        return (
            hint is not None
            and hint.created_at is not None
            and started is not None
            and hint.created_at >= started
        )


def describe(exc: BaseException) -> str:
    """One line naming the exception, bounded (the message may quote an answer)."""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
