"""Records the backend stores: datastores, image sets and their immutable versions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .index import SortedIndex

WORKFLOW_STATUSES: tuple[str, ...] = (
    "CREATED",
    "COPIED",
    "COPYING",
    "COPYING_WITH_READ_ONLY_ACCESS",
    "COPY_FAILED",
    "UPDATING",
    "UPDATING_FOR_STUDY_CONSISTENCY",
    "UPDATED",
    "UPDATE_FAILED",
    "DELETING",
    "DELETED",
    "IMPORTING",
    "IMPORTED",
    "IMPORT_FAILED",
)
IMAGE_SET_STATES: tuple[str, ...] = ("ACTIVE", "LOCKED", "DELETED")
DATASTORE_STATUSES: tuple[str, ...] = ("CREATING", "CREATE_FAILED", "ACTIVE", "DELETING", "DELETED")
ID_PATTERN = r"[0-9a-z]{32}"


@dataclass(frozen=True, slots=True)
class Version:
    """One image set version exactly as ImageSetProperties describes it; None means absent."""

    version_id: str
    state: str
    workflow_status: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    deleted_at: float | None = None
    message: str | None = None
    forced: bool | None = None
    is_primary: bool | None = None

    @property
    def changed_at(self) -> float:
        """The last moment this version changed, for the image set's sort key."""
        return self.updated_at if self.updated_at is not None else (self.created_at or 0.0)


@dataclass(slots=True)
class ImageSet:
    """An image set: its versions oldest first and its DICOM tags; guarded by the backend lock."""

    image_set_id: str
    versions: list[Version]
    dicom_tags: dict[str, Any]
    # Search sort keys; kept in step with the datastore's sorted indexes.
    created_at: float
    updated_at: float

    @property
    def latest(self) -> Version:
        """The newest version."""
        return self.versions[-1]


@dataclass(slots=True)
class Datastore:
    """A datastore, its image sets and their search indexes; guarded by the backend lock."""

    datastore_id: str
    name: str
    status: str
    created_at: float
    updated_at: float
    image_sets: dict[str, ImageSet] = field(default_factory=dict)
    by_created: SortedIndex = field(default_factory=SortedIndex)
    by_updated: SortedIndex = field(default_factory=SortedIndex)
    import_jobs: dict[str, ImportJob] = field(default_factory=dict)
    # Status changes still to come on the emulator's clock, as (at, status), earliest first.
    pending_statuses: list[tuple[float, str]] = field(default_factory=list)

    def index(self, field_name: str) -> SortedIndex:
        """The sorted index for "createdAt" or "updatedAt"."""
        return self.by_created if field_name == "createdAt" else self.by_updated

    def put(self, image_sets: list[ImageSet]) -> None:
        """Add image sets (ids must be new) and index them in one bulk sort."""
        for image_set in image_sets:
            self.image_sets[image_set.image_set_id] = image_set
        self.by_created.extend((s.created_at, s.image_set_id) for s in image_sets)
        self.by_updated.extend((s.updated_at, s.image_set_id) for s in image_sets)

    def reindex_updated(self, image_set: ImageSet, updated_at: float) -> None:
        """Move an image set to a new updatedAt in the index."""
        self.by_updated.remove((image_set.updated_at, image_set.image_set_id))
        image_set.updated_at = updated_at
        self.by_updated.add((updated_at, image_set.image_set_id))

    def drop(self, image_set_id: str) -> None:
        """Remove an image set and its index entries."""
        image_set = self.image_sets.pop(image_set_id)
        self.by_created.remove((image_set.created_at, image_set_id))
        self.by_updated.remove((image_set.updated_at, image_set_id))


JOB_STATUSES: tuple[str, ...] = ("SUBMITTED", "IN_PROGRESS", "COMPLETED", "FAILED")
JOB_ENDED: frozenset[str] = frozenset({"COMPLETED", "FAILED"})


@dataclass(slots=True)
class ImportJob:
    """A DICOM import job and its plan (when it starts and ends, and how); guarded by the lock.

    `status`, `ended_at` and `message` are what the API shows; the `plan_*` fields say what
    the job will do when the emulator's clock reaches `starts_at` and `ends_at`.
    """

    job_id: str
    job_name: str
    datastore_id: str
    data_access_role_arn: str
    input_s3_uri: str
    output_s3_uri: str
    submitted_at: float
    starts_at: float
    ends_at: float
    status: str = "SUBMITTED"
    ended_at: float | None = None
    message: str | None = None
    client_token: str | None = None
    import_configuration: dict[str, Any] | None = None
    plan_status: str = "COMPLETED"
    plan_message: str | None = None
    imported_files: int = 1
    failed_files: int = 0
    server_error_files: int = 0

    @property
    def ended(self) -> bool:
        """Whether the job reached COMPLETED or FAILED."""
        return self.status in JOB_ENDED
