"""A cycle's plan, pure: config + state + search hits -> which image sets to list this cycle.

No I/O, no clock, no locks: everything it needs is passed in, so it is tested with plain data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from exporter.aws import ImageSetSummary
from exporter.config import Config, DatastoreSettings
from exporter.model import ImageSetKey, ImageSetSnapshot


@dataclass(frozen=True, slots=True)
class ListingHint:
    """What a search said of an image set that is about to be listed."""

    updated_at: float | None = None
    created_at: float | None = None


@dataclass(frozen=True, slots=True)
class DatastorePlan:
    """What one data store lists this cycle, and what its search (if any) came to."""

    datastore_id: str
    # Image set -> the search's hint, or None when listed because it is configured or due.
    targets: Mapping[ImageSetKey, ListingHint | None] = field(default_factory=dict)
    searched_until: float | None = None  # the search's end, where the cursor moves to


def shard_of(image_set_id: str, total_shards: int) -> int:
    """Return the shard owning an image set: a stable hash, the same in every process."""
    digest = hashlib.sha256(image_set_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % total_shards


def in_shard(config: Config, image_set_id: str) -> bool:
    """Tell whether this process's shard polls the image set."""
    total = config.total_shards
    return total == 1 or shard_of(image_set_id, total) == config.shard


def watches(config: Config, key: ImageSetKey) -> bool:
    """Tell whether this process tracks an image set: a configured one, of its shard."""
    for ds in config.datastores:
        if ds.datastore_id == key.datastore_id:
            if not ds.discovers_all and key.image_set_id not in ds.image_sets:
                return False
            return in_shard(config, key.image_set_id)
    return False


def shown_in_full(config: Config) -> frozenset[str]:
    """Return the data stores whose every image set has series (`per_image_set: all`)."""
    return frozenset(
        ds.datastore_id for ds in config.datastores if config.metrics.mode_for(ds) == "all"
    )


def listed_targets(config: Config, datastore: DatastoreSettings) -> list[ImageSetKey]:
    """Return the configured image sets of a data store that this shard polls."""
    if datastore.discovers_all:
        return []
    return [
        ImageSetKey(datastore.datastore_id, image_set_id)
        for image_set_id in datastore.image_sets
        if in_shard(config, image_set_id)
    ]


def uses_search(config: Config, datastore: DatastoreSettings) -> bool:
    """Whole data stores, and lists long enough that searching for changes pays."""
    if datastore.discovers_all:
        return True
    return len(datastore.image_sets) > config.discovery.list_threshold


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


def already_seen(
    snapshot: ImageSetSnapshot | None, version: int | None, workflow_status: str | None
) -> bool:
    """Tell whether an image set event says nothing the snapshot has not seen.

    True when the snapshot holds that version in that status (a duplicate, or a late copy of an
    event already listed), or the image set is recorded as deleted and the event says DELETED:
    listing it would find nothing new, so the event path spends no call on it.
    """
    if snapshot is None or workflow_status is None:
        return False
    if snapshot.is_deleted:
        return workflow_status == "DELETED"
    return any(
        v.version_id == version and v.workflow_status == workflow_status for v in snapshot.versions
    )


def wanted_keys(config: Config, known: Iterable[ImageSetKey]) -> set[ImageSetKey]:
    """Return which known image sets the config still covers (the rest are forgotten)."""
    wanted: set[ImageSetKey] = set()
    discovering = set()
    for ds in config.datastores:
        if ds.discovers_all:
            discovering.add(ds.datastore_id)
        else:
            wanted.update(listed_targets(config, ds))
    return {
        k
        for k in known
        if k in wanted or (k.datastore_id in discovering and in_shard(config, k.image_set_id))
    }


def plan_datastore(
    config: Config,
    datastore: DatastoreSettings,
    snapshot_of: Callable[[ImageSetKey], ImageSetSnapshot | None],
    hits: Sequence[ImageSetSummary] | None,
    searched_until: float | None,
    reconcile: Sequence[ImageSetKey] = (),
) -> DatastorePlan:
    """Decide what a data store lists this cycle.

    `hits` is what the search found (None when the data store is not searched, or the search
    was only started or failed); `reconcile` is this cycle's share of the periodic re-listing.
    """
    ds_id = datastore.datastore_id
    if not uses_search(config, datastore):
        return DatastorePlan(ds_id, dict.fromkeys(listed_targets(config, datastore)))
    targets: dict[ImageSetKey, ListingHint | None] = {}
    allowed = None if datastore.discovers_all else set(datastore.image_sets)
    for summary in hits or ():
        if allowed is not None and summary.image_set_id not in allowed:
            continue
        if not in_shard(config, summary.image_set_id):
            continue
        key = ImageSetKey(ds_id, summary.image_set_id)
        if needs_listing(snapshot_of(key), summary):
            targets[key] = ListingHint(summary.updated_at, summary.created_at)
    if not datastore.discovers_all and searched_until is not None:
        for key in listed_targets(config, datastore):
            if key not in targets and snapshot_of(key) is None:
                targets[key] = ListingHint()
    for key in reconcile:
        targets.setdefault(key, None)
    return DatastorePlan(ds_id, targets, searched_until)
