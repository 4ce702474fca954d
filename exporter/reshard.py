"""Pure functions: tell the first sight of an image set moved here by a reshard from a baseline.

With `--shard N --total-shards M`, changing M moves image sets between processes, each with its
own state file. The new owner has no snapshot of a moved image set, and a plain first sight is a
baseline (nothing counted), so a failure that happened while the image set moved would be lost.
Each process therefore records, per data store, when its own assignment changed and the time of
its last complete poll before that (`watched_until`). An image set it first sees afterwards, in
a data store it watched before, counts the versions whose updatedAt (else createdAt) is later
than `watched_until` minus the overlap: nobody can have counted those, or only the previous
owner inside the overlap. Older versions are the baseline, as on the first sight of the fleet.
"""

from __future__ import annotations

from dataclasses import replace

from exporter.model import ImageSetKey, ImageSetSnapshot, Version
from exporter.store import DatastoreRecord


def assignment_of(shard: int, total_shards: int) -> str:
    """Return the persisted form of a shard assignment."""
    return f"{shard}/{total_shards}"


def note_assignment(
    record: DatastoreRecord, assignment: str, now: float, join_lookback: float = 0.0
) -> DatastoreRecord:
    """Return the record with this process's assignment; a change keeps when and what was seen.

    `join_lookback` > 0 on a data store this state file has never seen: the process is joining
    a fleet that watched it until now (a new shard), so first sights count what changed in the
    last `join_lookback` seconds.
    """
    if record.shard_assignment == assignment:
        return record
    if record.shard_assignment is None:
        never_seen = record.last_success is None and record.discovery_started is None
        if never_seen and join_lookback > 0:
            return replace(
                record,
                shard_assignment=assignment,
                resharded_at=now,
                watched_until=now - join_lookback,
            )
        # A data store met for the first time, or state written before assignments were kept:
        # no change is known, so first sights stay baselines.
        return replace(record, shard_assignment=assignment)
    return replace(
        record,
        shard_assignment=assignment,
        resharded_at=now,
        # A second change before the next complete poll keeps the older, wider window.
        watched_until=record.last_success,
    )


def moved_baseline(
    key: ImageSetKey,
    versions: tuple[Version, ...],
    watched_until: float | None,
    overlap_seconds: float,
) -> ImageSetSnapshot | None:
    """Return what to diff a first listing against, or None when it is a plain baseline.

    The returned snapshot holds the versions that changed before the cutoff, so the diff counts
    exactly the later ones as new (and failed, when they are in a failure status). A version
    without any timestamp is taken as old: a baseline failure must never page.
    """
    if watched_until is None:
        return None
    cutoff = watched_until - overlap_seconds
    old = tuple(v.settled() for v in versions if v.changed_at is None or v.changed_at <= cutoff)
    if len(old) == len(versions):
        return None
    return ImageSetSnapshot(key, old)
