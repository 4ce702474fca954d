"""Import jobs each cycle: list the active ones, read the ones that left, count the ended.

Per data store and cycle (the poller calls `poll` on its own thread; no thread here):

1. before the first sight (no ledger): list every job once (no status filter, as many pages as
   the bound and the deadline allow), a baseline that counts nothing;
2. list SUBMITTED and IN_PROGRESS (two calls while few jobs run: the cost follows active
   jobs, not the years of history a data store keeps);
3. every `import_jobs.reconcile_seconds`, also list every job (no status filter, bounded as
   the baseline): it finds the jobs that started and ended between two cycles, which step 2
   never sees;
4. read each job that left the active listings and was not in a reconciliation listing with
   GetDICOMImportJob, to learn how it ended;
5. commit the changes (exporter.imports.ledger, pure) in one transaction;
6. with `read_manifests`, read the output counts of newly ended jobs from S3 (bounded per
   cycle, a bounded number of tries per job).

`ingest_job` reads one job by id and applies it the same way (for event-driven reads).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from exporter.aws import ApiError, HealthImagingApi, ImportJob, ManifestReader
from exporter.config import Config, DatastoreSettings
from exporter.imports.ledger import (
    ACTIVE_STATUSES,
    JobChanges,
    JobCounter,
    KnownJob,
    Ledger,
    gauge_counts,
    manifest_increments,
    observe_jobs,
    take_baseline,
)
from exporter.imports.store import ImportStore
from exporter.outcomes import Outcome
from exporter.store import SnapshotStore

log = logging.getLogger(__name__)

# A manifest read fails this many times (over as many cycles) before the job is given up.
MANIFEST_TRIES = 5
# Manifests read per data store and cycle: a burst of ended jobs is read over a few cycles.
MANIFESTS_PER_CYCLE = 20
# GetDICOMImportJob calls per data store and cycle, for jobs that left the active listings.
READS_PER_CYCLE = 50
# Pages (50 jobs each) of a baseline's or a reconciliation's listing of every job.
FULL_LISTING_PAGES = 100

ManifestsFor = Callable[[DatastoreSettings], ManifestReader]


@dataclass(frozen=True, slots=True)
class ImportJobsView:
    """One data store's import-job series, computed once per published view."""

    datastore_id: str
    baselined: bool
    read_manifests: bool
    by_status: Mapping[str, int]
    oldest_active: Mapping[str, float]
    counters: Mapping[tuple[str, str], float]
    manifest_errors: Mapping[str, int]


class ImportJobs:
    """The import jobs of every configured data store: polled by cycles, read into views."""

    def __init__(self, store: SnapshotStore, clock: Callable[[], float] = time.time) -> None:
        self._state = ImportStore(store)
        self._clock = clock
        # Cycles and event-driven reads (ingest_job) take turns.
        self._lock = threading.Lock()
        # In memory, like the exporter's other own counters: (data store, reason) -> count.
        self._manifest_errors: Counter[tuple[str, str]] = Counter()
        self._manifest_logged: set[tuple[str, str]] = set()

    @property
    def write_failures(self) -> int:
        """Return how many writes of import-job state failed (it only grows)."""
        return self._state.write_failures

    # -- a cycle --------------------------------------------------------------------------------

    def poll(
        self,
        config: Config,
        apis: Mapping[str, HealthImagingApi],
        manifests_for: ManifestsFor,
        errors: Mapping[str, Counter[Outcome]],
        deadline: float,
        stop: threading.Event | None = None,
    ) -> None:
        """Poll the import jobs of every data store that watches them; never raises."""
        with self._lock:
            self._state.forget({ds.datastore_id for ds in config.datastores})
            for ds in config.datastores:
                api = apis.get(ds.datastore_id)
                if api is None or not config.import_jobs.enabled_for(ds):
                    continue
                if stop is not None and stop.is_set():
                    return
                reasons = errors[ds.datastore_id]
                try:
                    self._poll_datastore(config, ds, api, reasons, deadline)
                    if config.import_jobs.read_manifests:
                        self._read_manifests(ds, api, manifests_for(ds), deadline)
                except ApiError as exc:
                    reasons[exc.outcome] += 1
                    log.error("data store %s: import jobs: %s", ds.datastore_id, exc)
                except Exception as exc:  # a bug in one data store's jobs must not stop the cycle
                    reasons[Outcome.INTERNAL_ERROR] += 1
                    ds_id = ds.datastore_id
                    log.error("data store %s: import jobs: internal error: %s", ds_id, exc)
                    log.debug("data store %s: import jobs", ds_id, exc_info=exc)

    def _poll_datastore(
        self,
        config: Config,
        ds: DatastoreSettings,
        api: HealthImagingApi,
        errors: Counter[Outcome],
        deadline: float,
    ) -> None:
        ds_id = ds.datastore_id
        settings = config.import_jobs
        retention = _retention(config)
        ledger = self._state.ledger(ds_id)
        if ledger is None:
            # A listing cut short is still a baseline: a job it missed that ended before now
            # is history by the horizon rule, an active one is found by the next cycle.
            listed, complete = api.list_recent_dicom_import_jobs(
                ds_id, FULL_LISTING_PAGES, deadline=deadline
            )
            changes = take_baseline(ds_id, listed, self._clock(), retention)
            if self._apply(changes, errors):
                log.info(
                    "data store %s: import jobs baseline: %d active, %d ended (nothing counted)%s",
                    ds_id,
                    sum(1 for j in changes.upserts if j.active),
                    sum(1 for j in changes.upserts if not j.active),
                    "" if complete else f"; listing stopped after {len(listed)} jobs",
                )
            return
        now = self._clock()
        reconcile = ledger.reconciled_at is None or now - ledger.reconciled_at >= (
            settings.reconcile_seconds
        )
        seen: list[ImportJob] = []
        for status in ACTIVE_STATUSES:
            seen.extend(api.list_dicom_import_jobs(ds_id, status, deadline=deadline))
        if reconcile:
            # Newest first as far as the page bound and the deadline allow: the recent jobs,
            # those a reconciliation looks for, come first.
            seen.extend(
                api.list_recent_dicom_import_jobs(ds_id, FULL_LISTING_PAGES, deadline=deadline)[0]
            )
        known = self._state.jobs(ds_id)
        listed_ids = {job.job_id for job in seen}
        left = [j for j in known.values() if j.active and j.job_id not in listed_ids]
        gone: list[str] = []
        for job in left[:READS_PER_CYCLE]:
            try:
                seen.append(api.get_dicom_import_job(ds_id, job.job_id, deadline=deadline))
            except ApiError as exc:
                if exc.outcome is Outcome.NOT_FOUND:
                    gone.append(job.job_id)
                    log.info("data store %s: import job %s no longer exists", ds_id, job.job_id)
                    continue
                # Counted, and read again next cycle; the other jobs' news is applied now.
                errors[exc.outcome] += 1
                log.error("data store %s: import jobs: %s", ds_id, exc)
                if exc.outcome is Outcome.TIMEOUT:
                    break
        changes = observe_jobs(
            ledger,
            known,
            seen,
            self._clock(),
            gone=gone,
            known_reasons=self._state.reasons(ds_id),
            read_manifests=settings.read_manifests,
            retention_seconds=retention,
            reconciled=reconcile,
        )
        if self._apply(changes, errors):
            _log_ended(ds_id, changes)

    def _apply(self, changes: JobChanges, errors: Counter[Outcome]) -> bool:
        if self._state.apply(changes):
            return True
        errors[Outcome.STATE_ERROR] += 1
        return False

    def _read_manifests(
        self, ds: DatastoreSettings, api: HealthImagingApi, reader: ManifestReader, deadline: float
    ) -> None:
        ds_id = ds.datastore_id
        pending = [j for j in self._state.jobs(ds_id).values() if j.manifest_pending]
        for job in sorted(pending, key=lambda j: (j.ended_at or 0.0, j.job_id))[
            :MANIFESTS_PER_CYCLE
        ]:
            if time.monotonic() >= deadline:
                return
            ledger = self._state.ledger(ds_id)
            if ledger is None:
                return
            output = job.output_s3_uri
            try:
                if output is None:  # seen ended in a listing, which has no outputS3Uri
                    read = api.get_dicom_import_job(ds_id, job.job_id, deadline=deadline)
                    output = read.output_s3_uri
                if output is None:
                    raise ApiError(Outcome.MALFORMED_RESPONSE, "GetDICOMImportJob: no outputS3Uri")
                counts = reader.read_counts(output)
            except ApiError as exc:
                self._manifest_failed(ledger, job, output, exc)
                continue
            done = replace(job, manifest_pending=False, output_s3_uri=None)
            increments = manifest_increments(ds_id, job.status, counts.imported, counts.failed)
            if self._state.apply(JobChanges(ledger, (done,), (), increments)) and counts.failed:
                log.warning(
                    "data store %s: import job %s ended %s with %d of %d files failed",
                    ds_id,
                    job.job_id,
                    job.status,
                    counts.failed,
                    counts.failed + counts.imported,
                )

    def _manifest_failed(
        self, ledger: Ledger, job: KnownJob, output: str | None, exc: ApiError
    ) -> None:
        ds_id = ledger.datastore_id
        tries = job.manifest_tries + 1
        last = tries >= MANIFEST_TRIES
        # HealthImaging writes the output moments after the job ends: a missing manifest is
        # only an error once the last try still finds it missing.
        if last or exc.outcome is not Outcome.NOT_FOUND:
            self._manifest_errors[(ds_id, exc.outcome.value)] += 1
            first = (ds_id, job.job_id) not in self._manifest_logged
            if first or last:
                self._manifest_logged.add((ds_id, job.job_id))
                log.warning(
                    "data store %s: import job %s: manifest not read: %s; %s",
                    ds_id,
                    job.job_id,
                    exc,
                    "given up" if last else f"{MANIFEST_TRIES - tries} more tries, one per cycle",
                )
            if last:
                self._manifest_logged.discard((ds_id, job.job_id))
        row = replace(
            job,
            manifest_tries=tries,
            manifest_pending=not last,
            output_s3_uri=None if last else output,
        )
        self._state.apply(JobChanges(ledger, (row,)))

    # -- one job by id ------------------------------------------------------------------------

    def ingest_job(
        self,
        config: Config,
        ds: DatastoreSettings,
        api: HealthImagingApi,
        job_id: str,
        deadline: float | None = None,
    ) -> bool:
        """Read one import job now (GetDICOMImportJob) and apply it as a cycle would.

        Return whether anything was counted. Raises ApiError if the job cannot be read; before
        the data store's baseline (the next cycle takes it) nothing is read.
        """
        with self._lock:
            ledger = self._state.ledger(ds.datastore_id)
            if ledger is None or not config.import_jobs.enabled_for(ds):
                return False
            job = api.get_dicom_import_job(ds.datastore_id, job_id, deadline=deadline)
            changes = observe_jobs(
                ledger,
                self._state.jobs(ds.datastore_id),
                [job],
                self._clock(),
                known_reasons=self._state.reasons(ds.datastore_id),
                read_manifests=config.import_jobs.read_manifests,
                retention_seconds=_retention(config),
            )
            if not self._state.apply(changes):
                return False
            _log_ended(ds.datastore_id, changes)
            return bool(changes.ended)

    # -- views ----------------------------------------------------------------------------------

    def views(self, config: Config) -> Mapping[str, ImportJobsView]:
        """Return every watched data store's series as of now."""
        now = self._clock()
        result: dict[str, ImportJobsView] = {}
        for ds in config.datastores:
            if not config.import_jobs.enabled_for(ds):
                continue
            snap = self._state.snapshot(ds.datastore_id)
            by_status, oldest = gauge_counts(snap.jobs, now, config.import_jobs.window_seconds)
            counters = {(k.name, k.label): v for k, v in snap.counters.items()}
            errors = {
                reason: n
                for (d, reason), n in self._manifest_errors.items()
                if d == ds.datastore_id
            }
            result[ds.datastore_id] = ImportJobsView(
                datastore_id=ds.datastore_id,
                baselined=snap.ledger is not None,
                read_manifests=config.import_jobs.read_manifests,
                by_status=MappingProxyType(by_status),
                oldest_active=MappingProxyType(oldest),
                counters=MappingProxyType(counters),
                manifest_errors=MappingProxyType(errors),
            )
        return MappingProxyType(result)


def _retention(config: Config) -> float:
    # Ended jobs are kept for the gauge's window, and at least two reconciliations, so a job
    # a reconciliation finds is still known when the next one lists it again.
    return max(config.import_jobs.window_seconds, 2 * config.import_jobs.reconcile_seconds)


def _log_ended(ds_id: str, changes: JobChanges) -> None:
    for job in changes.ended:
        log.log(
            logging.WARNING if job.status == "FAILED" else logging.INFO,
            "data store %s: import job %s ended %s",
            ds_id,
            job.job_id,
            job.status,
        )


__all__ = ["ImportJobs", "ImportJobsView", "JobCounter"]
