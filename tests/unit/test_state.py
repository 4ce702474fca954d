"""The fleet state: memory follows the store only after a commit; forgetting is durable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.config import Config, StateSettings
from exporter.diff import ImageSetChange
from exporter.model import (
    FAILED_VERSIONS,
    LAST_FAILURE,
    NEW_VERSIONS,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    Version,
)
from exporter.service import ExporterService
from exporter.state import FleetState
from exporter.store import SnapshotStore
from tests.helpers import FullDisk, flat_counters

ROOT = Path(__file__).resolve().parents[2]

KEY = ImageSetKey("d" * 32, "i" * 32)
FAILED = CounterKey(FAILED_VERSIONS, *KEY, "COPY_FAILED")
NEW = CounterKey(NEW_VERSIONS, KEY.datastore_id, "", "COPY_FAILED")


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
    assert state.counter(FAILED) == 1
    store.full = False
    assert state.apply(change(2)) and state.writable
    assert state.counter(FAILED) == 2
    assert flat_counters(store.load())[FAILED] == 2


def test_forget_drops_image_sets_and_a_removed_data_stores_own_counters() -> None:
    store = SnapshotStore(":memory:")
    state = FleetState(store)
    state.apply(change(1))
    state.forget([KEY], datastores=[])
    assert state.get(KEY) is None
    assert state.copies()[1] == {} and state.copies()[2] == {}
    assert flat_counters(store.load()) == {} and store.load().facts == {}
    assert store.load().totals == {} and state.size(KEY.datastore_id) == 0


def test_a_counted_failure_is_stamped_in_memory_and_store_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "state.db")
    state = FleetState(SnapshotStore(path))
    stamp = CounterKey(LAST_FAILURE, *KEY, "COPY_FAILED")
    before = time.time()
    assert state.apply(ImageSetChange(change(1).snapshot, baseline=True))
    assert state.counter(stamp) is None
    assert state.apply(change(2))
    counted_at = state.counter(stamp)
    assert counted_at is not None and before <= counted_at <= time.time()
    restarted = FleetState(SnapshotStore(path))
    assert restarted.counter(stamp) == counted_at
    assert restarted.counter(FAILED) == 1


class ReadOnly(SnapshotStore):
    """A real store on a connection SQLite refuses every write on, as on a read-only file."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._db.execute("PRAGMA query_only = ON")


def test_a_read_only_store_is_noticed_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    SnapshotStore(str(tmp_path / "state.db")).close()
    store = ReadOnly(str(tmp_path / "state.db"))
    try:
        state = FleetState(store)
        assert not state.writable  # before any write was attempted
        assert "cannot write" in caplog.text and "readonly" in caplog.text
        assert not state.apply(change(1))
        assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1
    finally:
        store.close()


def test_the_service_reports_a_read_only_store_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    SnapshotStore(path).close()
    config = Config(datastores=(), state=StateSettings(path))
    service = ExporterService(config, store=ReadOnly(path))
    try:
        assert service.health() == "the snapshot store cannot be written; serving the last metrics"
        assert b"\nhealthimaging_exporter_state_writable 0.0\n" in service.exposition().text
    finally:
        service.close()


# Run in a child process that honours file permissions: as root (CI), without the capabilities
# that let root write a read-only file; setpriv is util-linux's, on every Debian.
CHECK_READ_ONLY = """
import sys
from exporter.config import Config, StateSettings
from exporter.service import ExporterService
service = ExporterService(Config(datastores=(), state=StateSettings(sys.argv[1])))
try:
    assert service.health() is not None, "healthy with a read-only state file"
    assert b"\\nhealthimaging_exporter_state_writable 0.0\\n" in service.exposition().text
finally:
    service.close()
"""


def test_a_read_only_state_file_is_noticed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SnapshotStore(str(path)).close()
    path.chmod(0o444)
    command = [sys.executable, "-c", CHECK_READ_ONLY, str(path)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "setpriv (util-linux) is needed to drop root's file overrides"
        drop = "-dac_override,-dac_read_search"
        command = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *command]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "cannot write" in run.stderr  # said once, at start


def test_reconciliation_walks_keys_in_id_order_from_the_store(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SnapshotStore(path)
    state = FleetState(store)
    keys = [ImageSetKey("d" * 32, f"{n:032x}") for n in (5, 1, 3)]
    other = ImageSetKey("e" * 32, "f" * 32)
    for key in [*keys, other]:
        assert state.apply(
            ImageSetChange(ImageSetSnapshot(key, (Version(1, "IMPORTED", "A"),)), {})
        )
    assert state.keys_after("d" * 32, "", 10) == sorted(keys)
    assert state.keys_after("d" * 32, keys[1].image_set_id, 1) == [keys[2]]
    assert list(state.image_set_keys("e" * 32)) == [other]
    assert state.size("d" * 32) == 3
    assert state.forget([keys[1]], ["d" * 32, "e" * 32])
    assert state.keys_after("d" * 32, "", 10) == sorted([keys[0], keys[2]])
    store.close()
    reloaded = FleetState(SnapshotStore(path))
    assert reloaded.size("d" * 32) == 2 and reloaded.size("e" * 32) == 1
    assert reloaded.loaded_image_sets


def test_memory_keeps_only_the_facts_some_mode_shows(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SnapshotStore(path)
    state = FleetState(store)
    quiet = ImageSetKey("d" * 32, "1" * 32)
    failed = ImageSetKey("d" * 32, "2" * 32)
    assert state.apply(ImageSetChange(ImageSetSnapshot(quiet, (Version(1, "IMPORTED", "A"),)), {}))
    assert state.apply(
        ImageSetChange(ImageSetSnapshot(failed, (Version(1, "IMPORT_FAILED", "A"),)), {})
    )
    assert set(state.copies()[0]) == {failed}
    assert state.take_changes() == {failed} and state.take_changes() == set()
    assert state.totals()["d" * 32].by_status == {"IMPORTED": 1, "IMPORT_FAILED": 1}
    state.show_all(["d" * 32])  # a reload switched the data store to `all`
    assert set(state.copies()[0]) == {quiet, failed}
    assert state.take_changes() == {quiet}
    store.close()
    assert set(FleetState(SnapshotStore(path), full=["d" * 32]).copies()[0]) == {quiet, failed}
    assert set(FleetState(SnapshotStore(path)).copies()[0]) == {failed}


def test_the_failure_stamp_comes_from_the_state_clock(tmp_path: Path) -> None:
    state = FleetState(SnapshotStore(str(tmp_path / "state.db")), clock=lambda: 1_234.5)
    assert state.apply(ImageSetChange(change(1).snapshot, baseline=True))
    assert state.apply(change(2))
    assert state.counter(CounterKey(LAST_FAILURE, *KEY, "COPY_FAILED")) == 1_234.5


def test_a_view_keeps_what_it_was_lent_while_the_state_changes() -> None:
    state = FleetState(SnapshotStore(":memory:"))
    first = ImageSetKey("d" * 32, "1" * 32)
    second = ImageSetKey("d" * 32, "2" * 32)
    failed = (Version(1, "IMPORT_FAILED", "A"),)
    assert state.apply(ImageSetChange(ImageSetSnapshot(first, failed), {}))
    facts, _, own = state.copies()
    lent = dict(facts)
    # Changes after the view was taken: a new image set, new counters, one forgotten.
    assert state.apply(ImageSetChange(ImageSetSnapshot(second, failed), {}))
    counted = CounterKey(FAILED_VERSIONS, *second, "IMPORT_FAILED")
    assert state.apply(ImageSetChange(ImageSetSnapshot(second, failed), {counted: 1}))
    assert state.forget([first], ["d" * 32])
    assert dict(facts) == lent and dict(own) == {}  # the view's copies did not move
    now, _, now_own = state.copies()
    assert set(now) == {second} and set(now_own) == {second}
