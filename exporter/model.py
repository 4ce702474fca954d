"""Plain, immutable data shared along the pipeline: versions, image set snapshots, counter keys."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

FAILURE_STATUSES = frozenset({"COPY_FAILED", "UPDATE_FAILED", "IMPORT_FAILED"})
# The model's ImageSetWorkflowStatus values of a workflow still running: one that stays too long
# is stuck, a failure in waiting.
IN_PROGRESS_STATUSES = frozenset(
    {
        "COPYING",
        "COPYING_WITH_READ_ONLY_ACCESS",
        "UPDATING",
        "UPDATING_FOR_STUDY_CONSISTENCY",
        "IMPORTING",
        "DELETING",
    }
)

# The model's DatastoreStatus enum. Only ACTIVE data stores serve image sets; the status gauge
# has a series for each of these (kube-state-metrics style), plus an unknown current one.
DATASTORE_STATUSES = ("CREATING", "CREATE_FAILED", "ACTIVE", "DELETING", "DELETED")
ACTIVE_DATASTORE = "ACTIVE"
# Statuses in which a data store has no image sets to read (not yet, or no longer): listing
# them would only fail, or count every tracked image set as deleted. An unknown status (a newer
# API) is not among them: it is reported, and the data store still listed.
UNREADABLE_DATASTORE_STATUSES = frozenset({"CREATING", "CREATE_FAILED", "DELETING", "DELETED"})


@dataclass(frozen=True, slots=True)
class Version:
    """One entry of an image set's version list, as the exporter keeps it (no DICOM data)."""

    version_id: int
    workflow_status: str
    image_set_state: str
    forced: bool = False
    is_primary: bool | None = None
    # When the version last changed: the listing's updatedAt, else its createdAt. Read for every
    # listed version (the first sight of an image set moved here by a reshard), but kept past the
    # first diff (settled()) and stored only while the version is in an in-progress status, where
    # it is the time it entered that status. Few versions are in progress at any time, so memory
    # stays flat, and every other version keeps None and stays shared with its equals (see
    # store.py's version cache). One slot for both: half a million versions pay for each slot.
    changed_at: float | None = None
    # The bounded code of a failed version's message (exporter.reasons); None for the others.
    # The message itself stops at the AWS boundary: free text may name patients or files.
    reason: str | None = None

    @property
    def started_at(self) -> float | None:
        """Return when an in-progress version entered its status; None for the others."""
        return self.changed_at if self.workflow_status in IN_PROGRESS_STATUSES else None

    def settled(self) -> Version:
        """Return this version as it is kept: a timestamp only while in progress."""
        kept = self.started_at
        return self if self.changed_at == kept else replace(self, changed_at=kept)


def distinct_versions(versions: Iterable[Version]) -> tuple[Version, ...]:
    """Return one entry per version id, newest first, whatever order or duplicates came in.

    An answer that lists one version id twice (with two statuses, say) is reduced to one entry
    chosen by a fixed rank, never by position: an entry in a failure status wins (a failure must
    not hide behind a healthy duplicate), then the greater status, state, forced flag, reason
    and change time. The same answer, in any order, therefore always gives the same tuple, so
    polling an unchanged answer again changes nothing and counts nothing.
    """
    best: dict[int, Version] = {}
    for version in versions:
        kept = best.get(version.version_id)
        if kept is None or _rank(version) > _rank(kept):
            best[version.version_id] = version
    return tuple(best[v_id] for v_id in sorted(best, reverse=True))


def _rank(version: Version) -> tuple[bool, str, str, bool, int, str, float]:
    primary = {None: 0, False: 1, True: 2}[version.is_primary]
    return (
        version.workflow_status in FAILURE_STATUSES,
        version.workflow_status,
        version.image_set_state,
        version.forced,
        primary,
        version.reason or "",
        -1.0 if version.changed_at is None else version.changed_at,
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
    reason: str = ""


@lru_cache(maxsize=4096)
def _shared(names: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    # Returns the first equal tuple it was given: a few dozen distinct name lists, one object
    # each, shared by the hundreds of thousands of image sets that have them.
    return names


def _compact(value: float) -> float:
    # Counts are small integers: Python keeps one int object per value up to 256, where every
    # float is an object of its own (24 bytes, times hundreds of thousands of series).
    if value.is_integer() and 0 <= value <= 256:
        return int(value)
    return value


class OwnCounters(NamedTuple):
    """An image set's own counter series (failed and forced versions, their timestamps).

    Names are (family, workflow_status) pairs in sorted order, shared between image sets; the
    key is the image set's. Kept per image set rather than one CounterKey per series: it is
    half the memory at a million image sets.
    """

    names: tuple[tuple[str, str], ...] = ()
    values: tuple[float, ...] = ()

    def items(self) -> Iterator[tuple[str, str, float]]:
        """Yield (family, workflow_status, value) in name order."""
        for (family, status), value in zip(self.names, self.values, strict=True):
            yield family, status, value

    def get(self, family: str, workflow_status: str) -> float | None:
        """Return one series' value, or None."""
        for name, value in zip(self.names, self.values, strict=True):
            if name == (family, workflow_status):
                return value
        return None

    def with_value(self, family: str, workflow_status: str, value: float) -> OwnCounters:
        """Return these counters with one series set to `value`."""
        name = (family, workflow_status)
        kept = _compact(float(value))
        names, values = self.names, self.values
        for index, known in enumerate(names):
            if known == name:
                return OwnCounters(names, (*values[:index], kept, *values[index + 1 :]))
            if known > name:
                grown = _shared((*names[:index], name, *names[index:]))
                return OwnCounters(grown, (*values[:index], kept, *values[index:]))
        return OwnCounters(_shared((*names, name)), (*values, kept))


NO_OWN_COUNTERS = OwnCounters()


def own_counters(series: Iterable[tuple[tuple[str, str], float]]) -> OwnCounters:
    """Return an image set's own counters from ((family, workflow_status), value) pairs."""
    values = dict(series)
    names = tuple(sorted(values))
    return OwnCounters(_shared(names), tuple(_compact(float(values[name])) for name in names))


NEW_VERSIONS = "new_versions"
FAILED_VERSIONS = "failed_versions"
FORCED_VERSIONS = "forced_versions"
IMAGE_SETS_DELETED = "image_sets_deleted"
FAILURES = "failures"  # by data store, workflow status and reason
COUNTER_FAMILIES = (NEW_VERSIONS, FAILED_VERSIONS, FORCED_VERSIONS, IMAGE_SETS_DELETED, FAILURES)

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
