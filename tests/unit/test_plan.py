"""The cycle's plan is pure: plain config, snapshots and search hits in, targets out."""

from __future__ import annotations

from typing import Literal

from exporter.aws import ImageSetSummary
from exporter.config import Config, DatastoreSettings, DiscoverySettings
from exporter.model import ImageSetKey, ImageSetSnapshot, Version
from exporter.plan import (
    ListingHint,
    in_shard,
    needs_listing,
    plan_datastore,
    shard_of,
    uses_search,
    wanted_keys,
)

DS = "d" * 32
IDS = tuple(f"{n:032x}" for n in range(1, 7))


def snapshot(image_set_id: str, version: int = 1, seen: float | None = 10.0) -> ImageSetSnapshot:
    key = ImageSetKey(DS, image_set_id)
    return ImageSetSnapshot(key, (Version(version, "COPIED", "ACTIVE"),), seen_updated_at=seen)


def hit(image_set_id: str, version: int | None = 1, updated: float = 10.0) -> ImageSetSummary:
    return ImageSetSummary(image_set_id, version, updated, 1.0)


NOTHING: dict[ImageSetKey, ImageSetSnapshot] = {}


def config(
    image_sets: tuple[str, ...] | Literal["all"] = IDS,
    threshold: int = 500,
    shard: int = 0,
    total_shards: int = 1,
) -> Config:
    return Config(
        datastores=(DatastoreSettings(DS, image_sets),),
        discovery=DiscoverySettings(list_threshold=threshold),
        shard=shard,
        total_shards=total_shards,
    )


def test_a_short_list_is_listed_whole_without_search() -> None:
    cfg = config()
    assert not uses_search(cfg, cfg.datastores[0])
    plan = plan_datastore(cfg, cfg.datastores[0], NOTHING.get, None, None)
    assert list(plan.targets) == [ImageSetKey(DS, i) for i in IDS]
    assert set(plan.targets.values()) == {None}
    assert plan.searched_until is None


def test_search_hits_are_listed_only_when_the_snapshot_lags() -> None:
    cfg = config("all")
    known = {ImageSetKey(DS, IDS[0]): snapshot(IDS[0]), ImageSetKey(DS, IDS[1]): snapshot(IDS[1])}
    hits = [hit(IDS[0]), hit(IDS[1], version=2, updated=20.0), hit(IDS[2], updated=30.0)]
    plan = plan_datastore(cfg, cfg.datastores[0], known.get, hits, 99.0)
    assert dict(plan.targets) == {
        ImageSetKey(DS, IDS[1]): ListingHint(20.0, 1.0),
        ImageSetKey(DS, IDS[2]): ListingHint(30.0, 1.0),
    }
    assert plan.searched_until == 99.0


def test_a_searched_list_ignores_other_image_sets_and_lists_the_missing_ones() -> None:
    cfg = config(IDS[:3], threshold=2)
    known = {ImageSetKey(DS, IDS[0]): snapshot(IDS[0])}
    hits = [hit(IDS[5]), hit(IDS[0])]  # IDS[5] is not configured; IDS[0] is up to date
    plan = plan_datastore(cfg, cfg.datastores[0], known.get, hits, 50.0)
    assert dict(plan.targets) == {
        ImageSetKey(DS, IDS[1]): ListingHint(),
        ImageSetKey(DS, IDS[2]): ListingHint(),
    }


def test_a_failed_search_lists_only_the_reconciliation_batch() -> None:
    cfg = config(IDS[:3], threshold=2)
    batch = [ImageSetKey(DS, IDS[0])]
    plan = plan_datastore(cfg, cfg.datastores[0], NOTHING.get, None, None, batch)
    assert dict(plan.targets) == {ImageSetKey(DS, IDS[0]): None}
    assert plan.searched_until is None


def test_reconciliation_never_replaces_a_search_hint() -> None:
    cfg = config("all")
    key = ImageSetKey(DS, IDS[0])
    plan = plan_datastore(
        cfg, cfg.datastores[0], NOTHING.get, [hit(IDS[0], updated=7.0)], 9.0, [key]
    )
    assert plan.targets[key] == ListingHint(7.0, 1.0)


def test_shards_split_the_ids_and_plan_only_their_own() -> None:
    owners = {i: shard_of(i, 3) for i in IDS}
    assert set(owners.values()) <= {0, 1, 2}
    assert shard_of(IDS[0], 3) == owners[IDS[0]]  # stable
    for shard in range(3):
        cfg = config(shard=shard, total_shards=3)
        plan = plan_datastore(cfg, cfg.datastores[0], NOTHING.get, None, None)
        assert {k.image_set_id for k in plan.targets} == {i for i in IDS if owners[i] == shard}
        assert all(in_shard(cfg, k.image_set_id) for k in plan.targets)


def test_needs_listing() -> None:
    assert needs_listing(None, hit(IDS[0]))
    assert not needs_listing(snapshot(IDS[0]), hit(IDS[0]))
    assert needs_listing(snapshot(IDS[0]), hit(IDS[0], version=2))
    assert needs_listing(snapshot(IDS[0]), hit(IDS[0], updated=11.0))
    deleted = ImageSetSnapshot(ImageSetKey(DS, IDS[0]), (), deleted_at=5.0)
    assert needs_listing(deleted, hit(IDS[0]))


def test_wanted_keys_keeps_configured_and_discovered_image_sets() -> None:
    listed = config(IDS[:2])
    keys = [ImageSetKey(DS, i) for i in IDS[:4]] + [ImageSetKey("e" * 32, IDS[0])]
    assert wanted_keys(listed, keys) == {ImageSetKey(DS, IDS[0]), ImageSetKey(DS, IDS[1])}
    assert wanted_keys(config("all"), keys) == set(keys[:4])
