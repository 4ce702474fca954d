"""The import jobs' tables: one transaction per change, reloaded whole, memory after the commit."""

from __future__ import annotations

from pathlib import Path

from exporter.imports.ledger import ENDED, FAILURES, JobChanges, JobCounter, KnownJob, Ledger
from exporter.imports.store import ImportStore
from exporter.store import SnapshotStore

DS = "d" * 32
OTHER_DS = "e" * 32


def changes() -> JobChanges:
    return JobChanges(
        Ledger(DS, baseline_at=100.0, pruned_before=50.0, reconciled_at=100.0),
        upserts=(
            KnownJob("a", "IN_PROGRESS", 90.0),
            KnownJob("b", "FAILED", 80.0, 120.0, manifest_pending=True, output_s3_uri="s3://bk/o/"),
        ),
        increments={JobCounter(DS, ENDED, "FAILED"): 1.0, JobCounter(DS, FAILURES, "X_Y"): 1.0},
    )


def test_changes_survive_a_restart_and_counters_add(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    store = SnapshotStore(path)
    imports = ImportStore(store)
    assert imports.ledger(DS) is None
    assert imports.apply(changes())
    assert imports.apply(
        JobChanges(
            imports.ledger(DS) or changes().ledger,
            deletes=("a",),
            increments={JobCounter(DS, ENDED, "FAILED"): 1.0},
        )
    )
    store.close()
    reopened = ImportStore(SnapshotStore(path))
    assert reopened.ledger(DS) == changes().ledger
    assert reopened.jobs(DS) == {"b": changes().upserts[1]}
    snapshot = reopened.snapshot(DS)
    assert snapshot.counters == {
        JobCounter(DS, ENDED, "FAILED"): 2.0,
        JobCounter(DS, FAILURES, "X_Y"): 1.0,
    }
    assert reopened.reasons(DS) == {"X_Y"}


def test_a_failed_write_leaves_memory_as_it_was(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "state.db"))
    imports = ImportStore(store)
    store.close()  # every write now fails
    assert not imports.apply(changes())
    assert imports.write_failures == 1
    assert imports.ledger(DS) is None and imports.jobs(DS) == {}
    assert imports.snapshot(DS).counters == {}


def test_unconfigured_data_stores_are_forgotten(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    imports = ImportStore(SnapshotStore(path))
    assert imports.apply(changes())
    imports.forget({OTHER_DS})
    assert imports.ledger(DS) is None and imports.snapshot(DS).counters == {}
    assert ImportStore(SnapshotStore(path)).jobs(DS) == {}
