"""Import-job families (issue 14), from the published view's `import_jobs`; no I/O."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from exporter.imports.ledger import (
    ACTIVE_STATUSES,
    DURATION_BUCKET,
    DURATION_BUCKETS,
    DURATION_COUNT,
    DURATION_SUM,
    ENDED,
    ENDED_STATUSES,
    FAILURES,
    FILES,
    JOB_STATUSES,
    JOBS_WITH_FAILED_FILES,
)
from exporter.metrics.families import Family, format_value, label_pairs
from exporter.metrics.view import FleetView

FILE_RESULTS = ("imported", "failed")


class ImportJobCollector:
    """Jobs by status, ended jobs and failures, durations, stuck jobs and per-file results."""

    def collect(self, view: FleetView) -> Iterator[Family]:
        """Yield the import-job families."""
        jobs = Family(
            "healthimaging_import_jobs",
            "gauge",
            "DICOM import jobs by status: the active ones, and the ended ones whose endedAt is "
            "within import_jobs.window_days.",
        )
        ended = Family(
            "healthimaging_import_jobs_ended",
            "counter",
            "DICOM import jobs seen ending, by final status (jobs ended before the first sight "
            "are not counted).",
        )
        failures = Family(
            "healthimaging_import_job_failures",
            "counter",
            "DICOM import jobs that ended FAILED, by the leading code of their message "
            "(other when it has none; the message itself is never exported).",
        )
        duration = Family(
            "healthimaging_import_job_duration_seconds",
            "histogram",
            "Time from submittedAt to endedAt of DICOM import jobs seen ending.",
        )
        oldest = Family(
            "healthimaging_import_oldest_active_job_submitted_timestamp_seconds",
            "gauge",
            "Unix time the oldest job still in the status was submitted; absent when none is.",
        )
        files = Family(
            "healthimaging_import_files",
            "counter",
            "Files of ended DICOM import jobs, imported or failed, from the jobs' output "
            "manifests in S3 (import_jobs.read_manifests).",
        )
        with_failed = Family(
            "healthimaging_import_jobs_with_failed_files",
            "counter",
            "DICOM import jobs that ended COMPLETED with at least one failed file "
            "(import_jobs.read_manifests).",
        )
        manifest_errors = Family(
            "healthimaging_exporter_manifest_read_errors",
            "counter",
            "Import job output manifests that could not be read, by reason.",
        )
        duration_lines: list[str] = []
        for ds_id, ds in sorted(view.import_jobs.items()):
            ds_label = label_pairs(datastore_id=ds_id)
            counters = ds.counters
            if ds.baselined:
                for status in JOB_STATUSES:
                    jobs.add(f'{ds_label},job_status="{status}"', ds.by_status.get(status, 0))
                for status in sorted(set(ds.by_status) - set(JOB_STATUSES)):
                    # A status newer than this exporter: bounded by the API's enum pattern.
                    count = ds.by_status[status]
                    jobs.add(label_pairs(datastore_id=ds_id, job_status=status), count)
                for status in ENDED_STATUSES:
                    status_label = f'{ds_label},job_status="{status}"'
                    ended.add(status_label, counters.get((ENDED, status), 0.0))
                    duration_lines.extend(_histogram(duration.name, status_label, counters, status))
                for status in ACTIVE_STATUSES:
                    submitted = ds.oldest_active.get(status)
                    if submitted is not None:
                        oldest.add(f'{ds_label},job_status="{status}"', submitted)
            for (name, label), value in sorted(counters.items()):
                if name == FAILURES:
                    failures.add(label_pairs(datastore_id=ds_id, reason=label), value)
            if ds.read_manifests:
                for result in FILE_RESULTS:
                    files.add(f'{ds_label},result="{result}"', counters.get((FILES, result), 0.0))
                with_failed.add(ds_label, counters.get((JOBS_WITH_FAILED_FILES, ""), 0.0))
            for reason, count in sorted(ds.manifest_errors.items()):
                manifest_errors.add(label_pairs(datastore_id=ds_id, reason=reason), count)
        duration.lines = duration_lines
        yield from (jobs, ended, failures, duration, oldest, files, with_failed, manifest_errors)


def _histogram(
    name: str, labels: str, counters: Mapping[tuple[str, str], float], status: str
) -> Iterator[str]:
    """Return one status's histogram lines, cumulative as stored, from 0 when none ended."""
    for le in DURATION_BUCKETS:
        value = counters.get((DURATION_BUCKET, f"{status}|{le:g}"), 0.0)
        yield f'{name}_bucket{{{labels},le="{format_value(le)}"}} {format_value(value)}\n'
    count = counters.get((DURATION_COUNT, status), 0.0)
    yield f'{name}_bucket{{{labels},le="+Inf"}} {format_value(count)}\n'
    yield f"{name}_sum{{{labels}}} {format_value(counters.get((DURATION_SUM, status), 0.0))}\n"
    yield f"{name}_count{{{labels}}} {format_value(count)}\n"
