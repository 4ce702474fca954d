"""Plain, immutable data shared along the pipeline: versions, image set snapshots, counter keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

FAILURE_STATUSES = frozenset({"COPY_FAILED", "UPDATE_FAILED", "IMPORT_FAILED"})


@dataclass(frozen=True, slots=True)
class Version:
    """One entry of an image set's version list, as the exporter keeps it (no DICOM data)."""

    version_id: int
    workflow_status: str
    image_set_state: str
    forced: bool = False
    is_primary: bool | None = None
    # Timestamps are not kept: no metric needs them, and at half a million versions they would
    # be most of the memory and of the restart time.
    # Logged once when a failure is first seen; never stored, never a label.
    message: str | None = field(default=None, compare=False)


def distinct_versions(versions: Iterable[Version]) -> tuple[Version, ...]:
    """Return one entry per version id, newest first, whatever order or duplicates came in.

    An answer that lists one version id twice (with two statuses, say) is reduced to one entry
    chosen by a fixed rank, never by position: an entry in a failure status wins (a failure must
    not hide behind a healthy duplicate), then the greater status, state, forced flag and
    message. The same answer, in any order, therefore always gives the same tuple, so polling an
    unchanged answer again changes nothing and counts nothing.
    """
    best: dict[int, Version] = {}
    for version in versions:
        kept = best.get(version.version_id)
        if kept is None or _rank(version) > _rank(kept):
            best[version.version_id] = version
    return tuple(best[v_id] for v_id in sorted(best, reverse=True))


def _rank(version: Version) -> tuple[bool, str, str, bool, int, str]:
    primary = {None: 0, False: 1, True: 2}[version.is_primary]
    return (
        version.workflow_status in FAILURE_STATUSES,
        version.workflow_status,
        version.image_set_state,
        version.forced,
        primary,
        version.message or "",
    )


class ImageSetKey(NamedTuple):
    """Identifies an image set across data stores."""

    datastore_id: str
    image_set_id: str


@dataclass(frozen=True, slots=True)
class ImageSetSnapshot:
    """The last version list seen for an image set, plus versions that have since vanished."""

    key: ImageSetKey
    versions: tuple[Version, ...]  # newest first, as the API lists them
    # Versions once listed and no longer: remembered so a list that shrinks and grows back
    # does not count the same version twice.
    removed: tuple[Version, ...] = ()
    deleted_at: float | None = None  # set once the image set itself is gone
    # The image set's updatedAt as SearchImageSets last reported it (change detection).
    seen_updated_at: float | None = None

    @property
    def latest(self) -> Version | None:
        """Return the version with the highest id, if any."""
        return max(self.versions, key=lambda v: v.version_id, default=None)

    @property
    def is_deleted(self) -> bool:
        """Tell whether the image set was seen to disappear."""
        return self.deleted_at is not None


class CounterKey(NamedTuple):
    """A persisted counter series; labels a family does not have are empty strings."""

    family: str
    datastore_id: str
    image_set_id: str = ""
    workflow_status: str = ""


NEW_VERSIONS = "new_versions"
FAILED_VERSIONS = "failed_versions"
FORCED_VERSIONS = "forced_versions"
IMAGE_SETS_DELETED = "image_sets_deleted"
COUNTER_FAMILIES = (NEW_VERSIONS, FAILED_VERSIONS, FORCED_VERSIONS, IMAGE_SETS_DELETED)

# Persisted per-series values kept beside the counters but replaced, not added: the Unix time at
# which this exporter last counted a failed (LAST_FAILURE, per status) or forced (LAST_FORCED)
# version of an image set. Alert rules key on them (docs/alerting.md), so a scrape gap, a new
# target label or a Prometheus restart cannot make one failure look new twice.
LAST_FAILURE = "last_failure"
LAST_FORCED = "last_forced"
TIMESTAMP_FAMILIES = frozenset({LAST_FAILURE, LAST_FORCED})


def stamp_events(increments: Mapping[CounterKey, float], at: float) -> dict[CounterKey, float]:
    """Return the increments plus the event timestamps they set; a baseline (none) sets none."""
    stamped = dict(increments)
    for key, amount in increments.items():
        if amount <= 0:
            continue
        if key.family == FAILED_VERSIONS:
            stamped[key._replace(family=LAST_FAILURE)] = at
        elif key.family == FORCED_VERSIONS:
            stamped[key._replace(family=LAST_FORCED)] = at
    return stamped
