"""The fleet state: memory follows the store only after a commit; forgetting is durable."""

from __future__ import annotations

from collections.abc import Mapping

from exporter.diff import ImageSetChange
from exporter.model import (
    FAILED_VERSIONS,
    NEW_VERSIONS,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    Version,
)
from exporter.state import FleetState
from exporter.store import SnapshotStore, StoreError

KEY = ImageSetKey("d" * 32, "i" * 32)
FAILED = CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED")
NEW = CounterKey(NEW_VERSIONS, KEY.datastore_id, "", "COPY_FAILED")


class FullDisk(SnapshotStore):
    """A real store whose writes fail while `full` is set, as SQLITE_FULL would."""

    full = False

    def apply(
        self,
        snapshot: ImageSetSnapshot,
        increments: Mapping[CounterKey, int],
        drop_counters: bool = False,
    ) -> None:
        if self.full:
            raise StoreError("state.path test: cannot write: database or disk is full")
        super().apply(snapshot, increments, drop_counters)


def change(versions: int) -> ImageSetChange:
    snapshot = ImageSetSnapshot(
        KEY, tuple(Version(n, "COPY_FAILED", "ACTIVE") for n in range(versions, 0, -1))
    )
    return ImageSetChange(snapshot, {FAILED: 1, NEW: 1})


def test_a_failed_write_leaves_memory_at_the_last_durable_state() -> None:
    store = FullDisk(":memory:")
    state = FleetState(store)
    assert state.apply(change(1))
    store.full = True
    assert not state.apply(change(2))
    assert not state.writable
    assert state.write_failures == 1  # the service turns this into the gauge and the counter
    snapshot = state.get(KEY)
    assert snapshot is not None and len(snapshot.versions) == 1
    assert state.copies()[1][FAILED] == 1
    store.full = False
    assert state.apply(change(2)) and state.writable
    assert state.copies()[1][FAILED] == 2
    assert store.load().counters[FAILED] == 2


def test_forget_drops_image_sets_and_a_removed_data_stores_own_counters() -> None:
    store = SnapshotStore(":memory:")
    state = FleetState(store)
    state.apply(change(1))
    state.forget([KEY], datastores=[])
    assert state.get(KEY) is None
    assert state.copies()[1] == {}
    assert store.load().counters == {} and store.load().image_sets == {}
