"""The emulator's in-memory state and its Python control API; one lock guards everything."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from . import dataset, synthetic
from .errors import (
    AccessDeniedError,
    ConflictError,
    DatasetError,
    NotFoundError,
    ValidationError,
)
from .faults import Faults, FaultState
from .model import (
    DATASTORE_STATUSES,
    ID_PATTERN,
    IMAGE_SET_STATES,
    WORKFLOW_STATUSES,
    Datastore,
    ImageSet,
    Version,
)
from .tokens import TokenCodec

_ID_RE = re.compile(ID_PATTERN)


def check_id(value: str, name: str) -> str:
    """ValidationException unless `value` is 32 characters of [0-9a-z], worded like AWS."""
    if not _ID_RE.fullmatch(value):
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {ID_PATTERN}"
        )
    return value


def check_enum(value: str, allowed: tuple[str, ...], name: str) -> str:
    """ValidationException unless `value` is one of the model's enum values."""
    if value not in allowed:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join(allowed)}]"
        )
    return value


class Backend:
    """Datastores, image sets, faults and request counters behind one re-entrant lock."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        token_secret: bytes | None = None,
    ) -> None:
        """Start empty; `clock` stamps createdAt/updatedAt, `monotonic` drives quotas."""
        self.lock = threading.RLock()
        self.clock = clock
        self.region = region
        self.account_id = account_id
        self.tokens = TokenCodec(token_secret)
        self._monotonic = monotonic
        self._stores: dict[str, Datastore] = {}
        self._fault_state = FaultState(Faults(), monotonic)
        self._counts: Counter[str] = Counter()

    def _now(self) -> float:
        # AWS reports milliseconds; rounding keeps wire values comparable with its examples.
        return round(self.clock(), 3)

    # -- datastores and image sets -------------------------------------------------------

    def create_datastore(
        self, datastore_id: str | None = None, name: str = "datastore", status: str = "ACTIVE"
    ) -> str:
        """Add an empty datastore and return its id (random unless given)."""
        ds_id = check_id(datastore_id or secrets.token_hex(16), "datastoreId")
        check_enum(status, DATASTORE_STATUSES, "datastoreStatus")
        with self.lock:
            if ds_id in self._stores:
                raise ConflictError(f"Datastore {ds_id} already exists")
            now = self._now()
            self._stores[ds_id] = Datastore(ds_id, name, status, now, now)
        return ds_id

    def create_image_set(
        self,
        datastore_id: str,
        image_set_id: str | None = None,
        workflow_status: str = "IMPORTED",
        dicom_tags: dict[str, Any] | None = None,
    ) -> str:
        """Add an image set with version 1 and return its id (random unless given)."""
        set_id = check_id(image_set_id or secrets.token_hex(16), "imageSetId")
        check_enum(workflow_status, WORKFLOW_STATUSES, "workflowStatus")
        try:
            tags = dataset.dicom_tags(dicom_tags or {}, "DICOMTags")
        except DatasetError as exc:
            raise ValidationError(str(exc)) from None
        with self.lock:
            store = self.store(datastore_id)
            if set_id in store.image_sets:
                raise ConflictError(f"Image set {set_id} already exists")
            now = self._now()
            first = Version("1", "ACTIVE", workflow_status, now, is_primary=True)
            store.put([ImageSet(set_id, [first], tags, now, now)])
        return set_id

    def add_version(
        self,
        datastore_id: str,
        image_set_id: str,
        workflow_status: str = "UPDATED",
        *,
        forced: bool = False,
        message: str | None = None,
        state: str = "ACTIVE",
        updated_at: float | None = None,
    ) -> str:
        """Append a new latest version (updatedAt now, or as given) and return its version id."""
        check_enum(workflow_status, WORKFLOW_STATUSES, "workflowStatus")
        check_enum(state, IMAGE_SET_STATES, "state")
        with self.lock:
            store = self.store(datastore_id)
            image_set = self.image_set(store, image_set_id)
            now = self._now()
            latest = image_set.latest
            version = Version(
                version_id=str(int(latest.version_id) + 1),
                state=state,
                workflow_status=workflow_status,
                created_at=image_set.created_at,
                updated_at=now if updated_at is None else round(updated_at, 3),
                deleted_at=now if state == "DELETED" else None,
                message=message,
                forced=True if forced else None,
                is_primary=latest.is_primary,
            )
            image_set.versions.append(version)
            store.reindex_updated(image_set, now)
        return version.version_id

    def set_workflow_status(
        self,
        datastore_id: str,
        image_set_id: str,
        version_id: str,
        workflow_status: str,
        message: str | None = None,
        updated_at: float | None = None,
    ) -> None:
        """Change one version's workflow status and message; bumps its and the set's updatedAt.

        `updated_at` back-dates the version's updatedAt (a workflow that started earlier); the
        image set's updatedAt, which search sorts on, is now all the same.
        """
        check_enum(workflow_status, WORKFLOW_STATUSES, "workflowStatus")
        with self.lock:
            store = self.store(datastore_id)
            image_set = self.image_set(store, image_set_id)
            index = next(
                (i for i, v in enumerate(image_set.versions) if v.version_id == version_id), None
            )
            if index is None:
                raise NotFoundError(f"Image set version {version_id} not found")
            version = image_set.versions[index]
            now = self._now()
            image_set.versions[index] = dataclasses.replace(
                version,
                workflow_status=workflow_status,
                message=message,
                updated_at=now if updated_at is None else round(updated_at, 3),
            )
            store.reindex_updated(image_set, now)

    def delete_image_set(self, datastore_id: str, image_set_id: str) -> None:
        """Remove an image set entirely: later calls for it get ResourceNotFoundException."""
        with self.lock:
            store = self.store(datastore_id)
            self.image_set(store, image_set_id)
            store.drop(image_set_id)

    def generate(self, datastore_id: str, count: int, *, seed: int = 0) -> list[str]:
        """Add `count` synthetic image sets (deterministic per seed) and return their ids."""
        if count < 0:
            raise ValidationError(f"count must be >= 0, got {count}")
        with self.lock:
            store = self.store(datastore_id)
            image_sets = synthetic.generate(
                count,
                seed=seed,
                now=self._now(),
                taken=store.image_sets,
                start=len(store.image_sets),
            )
            store.put(image_sets)
        return [s.image_set_id for s in image_sets]

    def load_dataset(self, source: str | os.PathLike[str] | Mapping[str, Any]) -> None:
        """Replace all data with a YAML/JSON dataset file or parsed dict (DatasetError if bad)."""
        stores = dataset.build(dataset.read_source(source), self._now())
        with self.lock:
            self._stores = {s.datastore_id: s for s in stores}

    # -- faults and counters --------------------------------------------------------------

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings; restarts the random stream, quotas and malformed count."""
        with self.lock:
            self._fault_state = FaultState(faults, self._monotonic)

    @property
    def faults(self) -> Faults:
        """The current fault settings (malformed_responses counts down as they are sent)."""
        with self.lock:
            return self._fault_state.faults

    def request_counts(self) -> dict[str, int]:
        """Data-plane requests received per operation, refused and throttled ones included."""
        with self.lock:
            return dict(self._counts)

    def reset_request_counts(self) -> None:
        """Zero the request counters."""
        with self.lock:
            self._counts.clear()

    # -- used by the request handlers ------------------------------------------------------

    def record_request(self, operation: str) -> None:
        """Count one data-plane request."""
        with self.lock:
            self._counts[operation] += 1

    def latency(self) -> float:
        """Injected latency to sleep (outside the lock) before answering."""
        with self.lock:
            return self._fault_state.latency_seconds

    def admit(self, operation: str, datastore_id: str | None) -> None:
        """Raise the injected throttle/error/access-denied failure for this request, if any."""
        with self.lock:
            self._fault_state.admit(operation)
            if datastore_id is not None and self._fault_state.denies(datastore_id):
                raise AccessDeniedError(
                    f"User is not authorized to perform this action on datastore {datastore_id}"
                )

    def take_malformed(self) -> bool:
        """Whether the next successful data-plane response is to be sent truncated."""
        with self.lock:
            return self._fault_state.take_malformed()

    def store(self, datastore_id: str) -> Datastore:
        """The datastore (caller holds the lock); ResourceNotFoundException if absent."""
        store = self._stores.get(datastore_id)
        if store is None:
            raise NotFoundError(f"Datastore {datastore_id} not found")
        return store

    def image_set(self, store: Datastore, image_set_id: str) -> ImageSet:
        """The image set (caller holds the lock); ResourceNotFoundException if absent."""
        image_set = store.image_sets.get(image_set_id)
        if image_set is None:
            raise NotFoundError(f"Image set {image_set_id} not found")
        return image_set

    def datastores(self) -> list[Datastore]:
        """All datastores sorted by id (caller holds the lock)."""
        return [self._stores[k] for k in sorted(self._stores)]

    def datastore_arn(self, datastore_id: str) -> str:
        """The datastore's ARN in this emulator's region and account."""
        return f"arn:aws:medical-imaging:{self.region}:{self.account_id}:datastore/{datastore_id}"
