"""The fleet state: memory follows the store only after a commit; forgetting is durable."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter.diff import ImageSetChange
from exporter.metrics.own import ExporterMetrics
from exporter.model import (
    FAILED_VERSIONS,
    LAST_FAILURE,
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
        increments: Mapping[CounterKey, float],
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
    metrics = ExporterMetrics(CollectorRegistry())
    state = FleetState(store, metrics)
    assert state.apply(change(1))
    store.full = True
    assert not state.apply(change(2))
    assert not state.writable
    assert metrics.state_writable._value.get() == 0
    snapshot = state.get(KEY)
    assert snapshot is not None and len(snapshot.versions) == 1
    assert state.copies()[1][FAILED] == 1
    store.full = False
    assert state.apply(change(2)) and state.writable
    assert state.copies()[1][FAILED] == 2
    assert store.load().counters[FAILED] == 2


def test_forget_drops_image_sets_and_a_removed_data_stores_own_counters() -> None:
    store = SnapshotStore(":memory:")
    state = FleetState(store, ExporterMetrics(CollectorRegistry()))
    state.apply(change(1))
    state.forget([KEY], datastores=[])
    assert state.get(KEY) is None
    assert state.copies()[1] == {}
    assert store.load().counters == {} and store.load().image_sets == {}


def test_a_counted_failure_is_stamped_in_memory_and_store_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "state.db")
    state = FleetState(SnapshotStore(path), ExporterMetrics(CollectorRegistry()))
    stamp = CounterKey(LAST_FAILURE, *KEY, "COPY_FAILED")
    before = time.time()
    assert state.apply(ImageSetChange(change(1).snapshot, baseline=True))
    assert stamp not in state.copies()[1]
    assert state.apply(change(2))
    counted_at = state.copies()[1][stamp]
    assert before <= counted_at <= time.time()
    restarted = FleetState(SnapshotStore(path), ExporterMetrics(CollectorRegistry()))
    assert restarted.copies()[1][stamp] == counted_at
    assert restarted.copies()[1][FAILED] == 1
