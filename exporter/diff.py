"""Pure functions: diff a version list against the last snapshot; derive counter increments."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from exporter.model import (
    FAILED_VERSIONS,
    FAILURE_STATUSES,
    FORCED_VERSIONS,
    IMAGE_SETS_DELETED,
    NEW_VERSIONS,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    Version,
    distinct_versions,
)


@dataclass(frozen=True, slots=True)
class ImageSetChange:
    """What one poll of an image set changed: its next snapshot and the counters to add."""

    snapshot: ImageSetSnapshot
    increments: dict[CounterKey, int] = field(default_factory=dict)
    baseline: bool = False  # first sight: recorded, nothing counted
    failed: tuple[Version, ...] = ()  # versions that entered a failure status (for the log)
    vanished: int = 0  # versions that left the list since the last poll


def diff_versions(
    key: ImageSetKey,
    previous: ImageSetSnapshot | None,
    current: tuple[Version, ...],
) -> ImageSetChange:
    """Diff a version list against the last snapshot; None as previous means first sight.

    A list with duplicate version ids is first reduced to one entry per id (see
    distinct_versions), so an unchanged answer with duplicates never counts anything.
    """
    current = distinct_versions(current)
    if previous is None:
        return ImageSetChange(snapshot=ImageSetSnapshot(key, _settled(current)), baseline=True)
    known = {v.version_id: v for v in previous.removed}
    known.update((v.version_id, v) for v in previous.versions)
    current_ids = {v.version_id for v in current}

    new_by_status: Counter[str] = Counter()
    failed: list[Version] = []
    forced = 0
    for version in current:
        before = known.get(version.version_id)
        if before is None:
            new_by_status[version.workflow_status] += 1
        if _entered_failure(before, version):
            failed.append(version)
        if version.forced and (before is None or not before.forced):
            forced += 1

    increments: dict[CounterKey, int] = {}
    for status, count in new_by_status.items():
        increments[CounterKey(NEW_VERSIONS, key.datastore_id, "", status)] = count
    for status, count in Counter(v.workflow_status for v in failed).items():
        increments[CounterKey(FAILED_VERSIONS, *key, status)] = count
    if forced:
        increments[CounterKey(FORCED_VERSIONS, *key)] = forced

    listed_before = {v.version_id for v in previous.versions}
    removed = tuple(v for v_id, v in sorted(known.items(), reverse=True) if v_id not in current_ids)
    return ImageSetChange(
        snapshot=ImageSetSnapshot(
            key, _settled(current), removed, seen_updated_at=previous.seen_updated_at
        ),
        increments=increments,
        failed=tuple(failed),
        vanished=len(listed_before - current_ids),
    )


def _settled(versions: tuple[Version, ...]) -> tuple[Version, ...]:
    # issue 12: listing timestamps serve this diff only; snapshots keep in-progress ones only.
    return tuple(v.settled() for v in versions)


def _entered_failure(before: Version | None, now: Version) -> bool:
    if now.workflow_status not in FAILURE_STATUSES:
        return False
    return before is None or before.workflow_status != now.workflow_status


def diff_deleted(previous: ImageSetSnapshot | None, deleted_at: float) -> ImageSetChange | None:
    """Record that a tracked image set is gone; None when it was never seen or already gone."""
    if previous is None or previous.is_deleted:
        return None
    tombstone = ImageSetSnapshot(
        previous.key,
        (),
        previous.removed + previous.versions,
        deleted_at=deleted_at,
        seen_updated_at=previous.seen_updated_at,
    )
    return ImageSetChange(
        snapshot=tombstone,
        increments={CounterKey(IMAGE_SETS_DELETED, previous.key.datastore_id): 1},
    )
