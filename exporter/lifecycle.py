"""Data store lifecycle: each data store's status and name (GetDatastore), read on a slow schedule.

Read by the poll cycle, on the cycle's thread, when a data store's check is due (every
`discovery.datastore_status_seconds`), rather than by a job of its own: the status decides
what the same cycle lists and whether its `healthimaging_up` is 1, so reading it in the cycle
keeps status, listings and `up` consistent without a lock shared with another job, and the
check gets the cycle's deadline, rate budget and stop for free. What it learnt is published as
an immutable mapping, replaced whole, which the view reads from any thread.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from exporter.aws import ApiError, DatastoreProperties, HealthImagingApi
from exporter.config import Config, DatastoreSettings
from exporter.model import ACTIVE_DATASTORE, UNREADABLE_DATASTORE_STATUSES
from exporter.outcomes import Outcome

log = logging.getLogger(__name__)


class DatastoreLifecycle:
    """Knows the last status and name GetDatastore gave for each configured data store."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._checked_at: dict[str, float] = {}
        self._failing: dict[str, str] = {}  # the last failure's message, logged once
        self.known: Mapping[str, DatastoreProperties] = MappingProxyType({})

    def mark_due(self, datastore_id: str) -> None:
        """Read the data store's status at the next cycle (a data store event said it changed)."""
        self._checked_at.pop(datastore_id, None)

    def refresh(
        self,
        config: Config,
        datastore: DatastoreSettings,
        api: HealthImagingApi,
        errors: Counter[Outcome],
        deadline: float | None = None,
    ) -> None:
        """Read the data store's status if due, and count what makes the cycle report it down.

        A failed read is counted by its outcome (and retried next cycle); a status other than
        ACTIVE, read now or earlier, is counted as datastore_not_active.
        """
        ds_id = datastore.datastore_id
        every = config.discovery.datastore_status_seconds
        if every <= 0:
            self._replace(ds_id, None)
            return
        checked = self._checked_at.get(ds_id)
        if checked is None or self._monotonic() - checked >= every:
            self._read(ds_id, api, errors, deadline)
        known = self.known.get(ds_id)
        if known is not None and known.status != ACTIVE_DATASTORE:
            errors[Outcome.DATASTORE_NOT_ACTIVE] += 1

    def _read(
        self,
        ds_id: str,
        api: HealthImagingApi,
        errors: Counter[Outcome],
        deadline: float | None,
    ) -> None:
        try:
            properties = api.get_datastore(ds_id, deadline=deadline)
        except ApiError as exc:
            # The last known status stays in force; a new kind of failure is logged once.
            errors[Outcome(exc.outcome)] += 1
            message = str(exc)
            if self._failing.get(ds_id) != message:
                log.error("data store %s: status check failed: %s", ds_id, message)
            self._failing[ds_id] = message
            return
        self._failing.pop(ds_id, None)
        self._checked_at[ds_id] = self._monotonic()
        previous = self.known.get(ds_id)
        self._replace(ds_id, properties)
        status = properties.status
        if previous is not None and previous.status == status:
            return
        if status != ACTIVE_DATASTORE:
            level = logging.WARNING
        else:
            level = logging.DEBUG if previous is None else logging.INFO
        was = f" (was {previous.status})" if previous is not None else ""
        log.log(level, "data store %s (%s): status %s%s", ds_id, properties.name, status, was)

    def listable(self, datastore_id: str) -> bool:
        """Tell whether the data store may have image sets to list (unknown status: yes)."""
        known = self.known.get(datastore_id)
        return known is None or known.status not in UNREADABLE_DATASTORE_STATUSES

    def expire(self) -> None:
        """Make every check due (a reload may change a data store's region or role)."""
        self._checked_at.clear()

    def forget(self, datastore_ids: Iterable[str]) -> None:
        """Drop what is known of data stores no longer configured."""
        keep = set(datastore_ids)
        self._checked_at = {k: v for k, v in self._checked_at.items() if k in keep}
        self._failing = {k: v for k, v in self._failing.items() if k in keep}
        self.known = MappingProxyType({k: v for k, v in self.known.items() if k in keep})

    def _replace(self, ds_id: str, properties: DatastoreProperties | None) -> None:
        known = dict(self.known)
        if properties is None:
            if ds_id not in known:
                return
            del known[ds_id]
        else:
            known[ds_id] = properties
        self.known = MappingProxyType(known)
