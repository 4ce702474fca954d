"""The import jobs' tables in the snapshot store, and their mirror in memory.

Memory changes only after the store commits (as exporter.state does for image sets): a write
that fails leaves memory at the last durable ledger, so the next cycle sees the same jobs end
and counts them then, once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from exporter.imports.ledger import FAILURES, JobChanges, JobCounter, KnownJob, Ledger
from exporter.store import SnapshotStore, StoreError

log = logging.getLogger(__name__)

_UPSERT_JOB = (
    "INSERT OR REPLACE INTO import_jobs (datastore_id, job_id, job_status, submitted_at, "
    "ended_at, manifest_pending, output_s3_uri, manifest_tries) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_JOB = "DELETE FROM import_jobs WHERE datastore_id = ? AND job_id = ?"
_ADD_COUNTER = (
    "INSERT INTO import_counters (datastore_id, name, label, value) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (datastore_id, name, label) DO UPDATE SET value = value + excluded.value"
)
_SAVE_LEDGER = (
    "INSERT OR REPLACE INTO import_ledgers (datastore_id, baseline_at, pruned_before, "
    "reconciled_at) VALUES (?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class ImportSnapshot:
    """A read-only copy of one data store's import state, for a view."""

    ledger: Ledger | None
    jobs: tuple[KnownJob, ...]
    counters: Mapping[JobCounter, float]


class ImportStore:
    """Ledgers, job rows and counters of every data store; one transaction per change."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store
        self.lock = threading.RLock()
        self._ledgers: dict[str, Ledger] = {}
        self._jobs: dict[str, dict[str, KnownJob]] = {}
        self._counters: dict[JobCounter, float] = {}
        for ds, baseline, pruned, reconciled in store.read_rows(
            "SELECT datastore_id, baseline_at, pruned_before, reconciled_at FROM import_ledgers"
        ):
            self._ledgers[ds] = Ledger(ds, float(baseline), pruned, reconciled)
        for row in store.read_rows(
            "SELECT datastore_id, job_id, job_status, submitted_at, ended_at, manifest_pending, "
            "output_s3_uri, manifest_tries FROM import_jobs"
        ):
            ds, job_id, status, submitted, ended, pending, output, tries = row
            self._jobs.setdefault(ds, {})[job_id] = KnownJob(
                job_id, status, submitted, ended, bool(pending), output, int(tries)
            )
        for ds, name, label, value in store.read_rows(
            "SELECT datastore_id, name, label, value FROM import_counters"
        ):
            self._counters[JobCounter(ds, name, label)] = float(value)
        self.write_failures = 0

    def ledger(self, datastore_id: str) -> Ledger | None:
        """Return a data store's ledger; None before its baseline."""
        with self.lock:
            return self._ledgers.get(datastore_id)

    def jobs(self, datastore_id: str) -> dict[str, KnownJob]:
        """Return a copy of a data store's known jobs by id."""
        with self.lock:
            return dict(self._jobs.get(datastore_id, {}))

    def reasons(self, datastore_id: str) -> frozenset[str]:
        """Return the reasons the data store's failures were counted under (for the cap)."""
        with self.lock:
            return frozenset(
                k.label
                for k in self._counters
                if k.datastore_id == datastore_id and k.name == FAILURES
            )

    def apply(self, changes: JobChanges) -> bool:
        """Commit a data store's changes, then mirror them; False (memory unchanged) if failed."""
        ds = changes.ledger.datastore_id
        ledger = changes.ledger
        with self.lock:
            try:
                self._store.write_rows(
                    [
                        (_DELETE_JOB, [(ds, job_id) for job_id in changes.deletes]),
                        (_UPSERT_JOB, [_job_row(ds, job) for job in changes.upserts]),
                        (_ADD_COUNTER, [(*k, v) for k, v in changes.increments.items() if v]),
                        (
                            _SAVE_LEDGER,
                            [(ds, ledger.baseline_at, ledger.pruned_before, ledger.reconciled_at)],
                        ),
                    ]
                )
            except StoreError as exc:
                self.write_failures += 1
                log.error("data store %s: import jobs not saved: %s", ds, exc)
                return False
            self._ledgers[ds] = ledger
            jobs = self._jobs.setdefault(ds, {})
            for job_id in changes.deletes:
                jobs.pop(job_id, None)
            for job in changes.upserts:
                jobs[job.job_id] = job
            for key, amount in changes.increments.items():
                self._counters[key] = self._counters.get(key, 0.0) + amount
            return True

    def forget(self, keep: set[str]) -> None:
        """Drop, in memory and on disk, data stores no longer configured."""
        with self.lock:
            gone = (set(self._ledgers) | set(self._jobs)) - keep
            gone |= {k.datastore_id for k in self._counters} - keep
            if not gone:
                return
            rows = [(ds,) for ds in sorted(gone)]
            try:
                self._store.write_rows(
                    [
                        ("DELETE FROM import_ledgers WHERE datastore_id = ?", rows),
                        ("DELETE FROM import_jobs WHERE datastore_id = ?", rows),
                        ("DELETE FROM import_counters WHERE datastore_id = ?", rows),
                    ]
                )
            except StoreError as exc:
                self.write_failures += 1
                log.error("import jobs of unconfigured data stores not forgotten: %s", exc)
                return
            for ds in gone:
                self._ledgers.pop(ds, None)
                self._jobs.pop(ds, None)
            self._counters = {k: v for k, v in self._counters.items() if k.datastore_id not in gone}

    def snapshot(self, datastore_id: str) -> ImportSnapshot:
        """Return a read-only copy of a data store's import state."""
        with self.lock:
            return ImportSnapshot(
                self._ledgers.get(datastore_id),
                tuple(self._jobs.get(datastore_id, {}).values()),
                MappingProxyType(
                    {k: v for k, v in self._counters.items() if k.datastore_id == datastore_id}
                ),
            )


def _job_row(datastore_id: str, job: KnownJob) -> tuple[object, ...]:
    return (
        datastore_id,
        job.job_id,
        job.status,
        job.submitted_at,
        job.ended_at,
        int(job.manifest_pending),
        job.output_s3_uri if job.manifest_pending else None,
        job.manifest_tries,
    )
