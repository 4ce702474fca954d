"""Pure: what a listing of import jobs changes in a data store's ledger, and what it counts.

A data store's import jobs are counted like its image sets' versions: the first sight is a
baseline (nothing counted), afterwards a job is counted once, when it is first seen ended.
"Once" holds across restarts because the job's row, stored ended, and the counters it moved
are written in one transaction (exporter.imports.store): a process killed before that commit
sees the job end again next time, one killed after it finds the job already ended.

A job not in the ledger that is seen ended is news only if it ended after the ledger's
horizon: after the baseline, and after the newest cut of the pruning that drops ended jobs
older than the retention (a pruned job, found again by a reconciliation, is not counted again).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from exporter.aws.parsing import ImportJob
from exporter.reasons import capped_reason

SUBMITTED = "SUBMITTED"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
ACTIVE_STATUSES = (SUBMITTED, IN_PROGRESS)
ENDED_STATUSES = (COMPLETED, FAILED)
JOB_STATUSES = (*ACTIVE_STATUSES, *ENDED_STATUSES)
# Import jobs take minutes to hours: from one minute to one day.
DURATION_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14_400.0, 43_200.0, 86_400.0)

# Counter names (the store's `name` column) and what their `label` holds.
ENDED = "ended"  # job_status
FAILURES = "failures"  # reason
DURATION_BUCKET = "duration_bucket"  # job_status|le (cumulative, as exposed)
DURATION_SUM = "duration_sum"  # job_status
DURATION_COUNT = "duration_count"  # job_status
FILES = "files"  # imported | failed
JOBS_WITH_FAILED_FILES = "jobs_with_failed_files"  # ""


class JobCounter(NamedTuple):
    """One persisted import-job counter of one data store."""

    datastore_id: str
    name: str
    label: str


@dataclass(frozen=True, slots=True)
class KnownJob:
    """A job as the ledger keeps it: no name, no input, no message.

    `manifest_pending` while its output's counts are still to be read (read_manifests);
    `output_s3_uri` (the job's output folder, from GetDICOMImportJob) only while it is.
    """

    job_id: str
    status: str
    submitted_at: float | None = None
    ended_at: float | None = None
    manifest_pending: bool = False
    output_s3_uri: str | None = None
    manifest_tries: int = 0

    @property
    def active(self) -> bool:
        """Tell whether the job has not ended (any status but COMPLETED and FAILED)."""
        return self.status not in ENDED_STATUSES


@dataclass(frozen=True, slots=True)
class Ledger:
    """A data store's import-job bookkeeping that must survive restarts."""

    datastore_id: str
    baseline_at: float
    pruned_before: float | None = None
    reconciled_at: float | None = None

    @property
    def horizon(self) -> float:
        """Return the time before which a job never seen before is history, not news."""
        return max(self.baseline_at, self.pruned_before or self.baseline_at)


@dataclass(frozen=True, slots=True)
class JobChanges:
    """What to write in one transaction: job rows, counter increments and the ledger."""

    ledger: Ledger
    upserts: tuple[KnownJob, ...] = ()
    deletes: tuple[str, ...] = ()
    increments: Mapping[JobCounter, float] = field(default_factory=dict)
    ended: tuple[KnownJob, ...] = ()  # the jobs counted, for the log


def duration_increments(
    datastore_id: str, status: str, submitted_at: float | None, ended_at: float | None
) -> dict[JobCounter, float]:
    """Return the histogram increments of one ended job (none without both times)."""
    if submitted_at is None or ended_at is None:
        return {}
    seconds = max(0.0, ended_at - submitted_at)
    increments = {
        JobCounter(datastore_id, DURATION_BUCKET, f"{status}|{le:g}"): 1.0
        for le in DURATION_BUCKETS
        if seconds <= le
    }
    increments[JobCounter(datastore_id, DURATION_COUNT, status)] = 1.0
    increments[JobCounter(datastore_id, DURATION_SUM, status)] = seconds
    return increments


def ended_increments(
    datastore_id: str, job: ImportJob, ended_at: float, reasons: set[str]
) -> dict[JobCounter, float]:
    """Return what one newly ended job counts; `reasons` (the store's so far) grows."""
    increments: dict[JobCounter, float] = {JobCounter(datastore_id, ENDED, job.status): 1.0}
    if job.status == FAILED:
        reason = capped_reason(job.reason, reasons)
        reasons.add(reason)
        increments[JobCounter(datastore_id, FAILURES, reason)] = 1.0
    increments.update(duration_increments(datastore_id, job.status, job.submitted_at, ended_at))
    return increments


def manifest_increments(
    datastore_id: str, status: str, imported: int, failed: int
) -> dict[JobCounter, float]:
    """Return what one job's output counts: its files, and a COMPLETED job with failed files."""
    increments = {
        JobCounter(datastore_id, FILES, "imported"): float(imported),
        JobCounter(datastore_id, FILES, "failed"): float(failed),
    }
    if status == COMPLETED and failed > 0:
        increments[JobCounter(datastore_id, JOBS_WITH_FAILED_FILES, "")] = 1.0
    return increments


def _known(job: ImportJob, ended_at: float | None) -> KnownJob:
    return KnownJob(job.job_id, job.status, job.submitted_at, ended_at)


def take_baseline(
    datastore_id: str, listed: Iterable[ImportJob], now: float, retention_seconds: float
) -> JobChanges:
    """The first sight of a data store's jobs: keep the active and recent ones, count nothing."""
    cutoff = now - retention_seconds
    upserts: dict[str, KnownJob] = {}
    for job in listed:
        ended_at = job.ended_at if job.ended_at is not None else now
        if job.status in ENDED_STATUSES and ended_at < cutoff:
            continue
        upserts[job.job_id] = _known(job, ended_at if job.status in ENDED_STATUSES else None)
    ledger = Ledger(datastore_id, baseline_at=now, pruned_before=cutoff, reconciled_at=now)
    return JobChanges(ledger, tuple(upserts.values()))


def observe_jobs(
    ledger: Ledger,
    known: Mapping[str, KnownJob],
    seen: Iterable[ImportJob],
    now: float,
    *,
    gone: Collection[str] = (),
    known_reasons: Collection[str] = (),
    read_manifests: bool = False,
    retention_seconds: float,
    reconciled: bool = False,
) -> JobChanges:
    """Apply what listings and reads showed of a data store's jobs; count the newly ended.

    `seen` may hold a job twice (a listing and a read); an ended sight wins. `gone` are jobs
    the service no longer knows (ResourceNotFoundException): dropped, not counted.
    """
    ds = ledger.datastore_id
    best: dict[str, ImportJob] = {}
    for job in seen:
        kept = best.get(job.job_id)
        if kept is None or (job.status in ENDED_STATUSES and kept.status not in ENDED_STATUSES):
            best[job.job_id] = job
    reasons = set(known_reasons)
    upserts: list[KnownJob] = []
    counted: list[KnownJob] = []
    increments: dict[JobCounter, float] = {}
    for job in best.values():
        before = known.get(job.job_id)
        if before is not None and not before.active:
            continue  # an ended job never changes again
        if job.status not in ENDED_STATUSES:
            after = _known(job, None)
            if before is None or (before.status, before.submitted_at) != (
                after.status,
                after.submitted_at,
            ):
                upserts.append(after)
            continue
        ended_at = job.ended_at if job.ended_at is not None else now
        news = before is not None or ended_at >= ledger.horizon
        if not news:
            if ended_at >= now - retention_seconds:
                upserts.append(_known(job, ended_at))
            continue
        if job.submitted_at is None and before is not None:
            job = replace(job, submitted_at=before.submitted_at)
        row = replace(
            _known(job, ended_at),
            manifest_pending=read_manifests,
            output_s3_uri=job.output_s3_uri if read_manifests else None,
        )
        upserts.append(row)
        counted.append(row)
        for key, amount in ended_increments(ds, job, ended_at, reasons).items():
            increments[key] = increments.get(key, 0.0) + amount
    deletes = [job_id for job_id in gone if job_id in known and job_id not in best]
    # Ended jobs older than the retention leave the ledger; the cut moves the horizon.
    cutoff = now - retention_seconds
    written = {row.job_id for row in upserts}
    deletes.extend(
        job.job_id
        for job in known.values()
        if not job.active
        and job.ended_at is not None
        and job.ended_at < cutoff
        and job.job_id not in written
    )
    new_ledger = replace(
        ledger,
        pruned_before=max(cutoff, ledger.pruned_before or cutoff),
        reconciled_at=now if reconciled else ledger.reconciled_at,
    )
    return JobChanges(
        new_ledger, tuple(upserts), tuple(dict.fromkeys(deletes)), increments, tuple(counted)
    )


def gauge_counts(
    jobs: Iterable[KnownJob], now: float, window_seconds: float
) -> tuple[dict[str, int], dict[str, float]]:
    """Return jobs by status (active, and ended within the window) and the oldest submission.

    The second mapping holds, per active status, the oldest active job's submittedAt.
    """
    counts = dict.fromkeys(JOB_STATUSES, 0)
    oldest: dict[str, float] = {}
    start = now - window_seconds
    for job in jobs:
        if job.active:
            counts[job.status] = counts.get(job.status, 0) + 1
            if job.submitted_at is not None and job.status in ACTIVE_STATUSES:
                known = oldest.get(job.status)
                oldest[job.status] = (
                    job.submitted_at if known is None else min(known, job.submitted_at)
                )
        elif job.ended_at is not None and job.ended_at >= start:
            counts[job.status] = counts.get(job.status, 0) + 1
    return counts, oldest
