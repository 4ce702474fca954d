"""Import jobs over real HTTP: the emulator's HealthImaging API and moto's S3, through boto3."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.aws import ApiError, ClientFactory, ManifestReader
from exporter.config import Config
from exporter.emulator import EmulatorServer, Faults
from exporter.imports.watcher import MANIFEST_TRIES
from exporter.outcomes import Outcome
from exporter.service import ExporterService
from tests.integration.conftest import DEMO_DATASTORE, ConfigFactory
from tests.moto import MotoServer

BUCKET = "import-output"
OUTPUT = f"s3://{BUCKET}/jobs/"
LONG = 86_400.0  # a job that stays where it is for the test's lifetime

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(service: ExporterService) -> Samples:
    """Every sample of the current rendering, keyed by name and labels."""
    text = service.exposition().text.decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset({"datastore_id": DEMO_DATASTORE, **labels}.items())))


def ended(found: Samples, status: str) -> float | None:
    return value(found, "healthimaging_import_jobs_ended_total", job_status=status)


@pytest.fixture
def s3_emulator(moto_server: MotoServer) -> Iterator[EmulatorServer]:
    """The emulator writing job output to moto's S3, into a bucket that exists."""
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    with EmulatorServer(port=0, dataset="demo", s3_endpoint_url=moto_server.url) as server:
        yield server


def test_first_sight_of_old_jobs_is_a_baseline(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: Callable[[Config], ExporterService],
) -> None:
    emulator.backend.generate_import_jobs(DEMO_DATASTORE, 60, failed_ratio=0.3, active=2)
    service = service_for(make_config())
    assert service.poll().ok
    found = samples(service)
    assert ended(found, "FAILED") == 0 and ended(found, "COMPLETED") == 0
    jobs = emulator.backend.store(DEMO_DATASTORE).import_jobs.values()
    failed = sum(1 for j in jobs if j.status == "FAILED")
    assert failed > 0
    gauge = "healthimaging_import_jobs"
    assert value(found, gauge, job_status="FAILED") == failed
    assert value(found, gauge, job_status="COMPLETED") == 60 - failed
    assert value(found, gauge, job_status="SUBMITTED") == 2
    assert not any(name == "healthimaging_import_job_failures_total" for name, _ in found)
    assert service.poll().ok
    assert ended(samples(service), "FAILED") == 0


def test_a_failed_job_is_counted_once_by_its_reason(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: Callable[[Config], ExporterService],
) -> None:
    backend = emulator.backend
    service = service_for(make_config())
    assert service.poll().ok  # the baseline: no jobs yet
    job = backend.start_import_job(DEMO_DATASTORE, submitted_seconds=LONG)
    assert service.poll().ok
    assert value(samples(service), "healthimaging_import_jobs", job_status="SUBMITTED") == 1
    message = "INVALID_REQUEST: s3://in/Doe_Jane_19700101.dcm has no pixel data"
    backend.set_import_job_outcome(DEMO_DATASTORE, job, "FAILED", message=message, now=True)
    for _ in range(3):
        assert service.poll().ok
        found = samples(service)
        assert ended(found, "FAILED") == 1
        assert ended(found, "COMPLETED") == 0
        reason = {"reason": "INVALID_REQUEST"}
        assert value(found, "healthimaging_import_job_failures_total", **reason) == 1
        assert value(found, "healthimaging_import_jobs", job_status="FAILED") == 1
        assert value(found, "healthimaging_import_jobs", job_status="SUBMITTED") == 0
        name = "healthimaging_import_job_duration_seconds_count"
        assert value(found, name, job_status="FAILED") == 1
    text = service.exposition().text.decode()
    assert "Doe_Jane" not in text and "pixel" not in text


def test_a_stuck_submitted_job_shows_its_submission_time(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: Callable[[Config], ExporterService],
) -> None:
    backend = emulator.backend
    service = service_for(make_config())
    assert service.poll().ok
    name = "healthimaging_import_oldest_active_job_submitted_timestamp_seconds"
    assert value(samples(service), name, job_status="SUBMITTED") is None
    stuck = backend.start_import_job(DEMO_DATASTORE, submitted_seconds=LONG)
    backend.start_import_job(DEMO_DATASTORE, submitted_seconds=LONG)  # a newer one
    submitted = backend.store(DEMO_DATASTORE).import_jobs[stuck].submitted_at
    assert service.poll().ok
    found = samples(service)
    assert value(found, name, job_status="SUBMITTED") == pytest.approx(submitted, abs=1e-3)
    assert value(found, name, job_status="IN_PROGRESS") is None
    assert value(found, "healthimaging_import_jobs", job_status="SUBMITTED") == 2


def test_a_failing_job_listing_sets_up_0_and_the_versions_are_still_polled(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: Callable[[Config], ExporterService],
) -> None:
    # A throttled budget slows the calls that follow: time enough for them once it clears.
    service = service_for(make_config(aws={"max_attempts": 1}, poll={"timeout_seconds": 60}))
    assert service.poll().ok
    emulator.backend.set_faults(Faults(operation_quotas={"ListDICOMImportJobs": 0.001}))
    service.poll()
    service.poll()  # the quota's one-second burst is spent by now
    found = samples(service)
    assert value(found, "healthimaging_up") == 0
    errors = "healthimaging_exporter_poll_errors_total"
    assert (value(found, errors, reason=Outcome.THROTTLED.value) or 0) >= 1
    requests = found[
        (
            "healthimaging_exporter_api_requests_total",
            frozenset({"operation": "ListImageSetVersions", "outcome": "success"}.items()),
        )
    ]
    assert requests >= 3
    emulator.backend.set_faults(Faults())
    assert service.poll().ok
    assert value(samples(service), "healthimaging_up") == 1


def test_a_job_completed_with_failed_files_counts_them_from_the_manifest_in_s3(
    s3_emulator: EmulatorServer,
    moto_server: MotoServer,
    make_config: ConfigFactory,
    service_for: Callable[[Config], ExporterService],
) -> None:
    backend = s3_emulator.backend
    config = make_config(
        aws={"endpoint_url": s3_emulator.url, "s3_endpoint_url": moto_server.url},
        import_jobs={"read_manifests": True},
    )
    service = service_for(config)
    assert service.poll().ok
    job = backend.start_import_job(DEMO_DATASTORE, output_s3_uri=OUTPUT, submitted_seconds=LONG)
    clean = backend.start_import_job(DEMO_DATASTORE, output_s3_uri=OUTPUT, submitted_seconds=LONG)
    assert service.poll().ok
    backend.set_import_job_outcome(
        DEMO_DATASTORE,
        job,
        "COMPLETED",
        imported_files=6,
        failed_files=2,
        server_error_files=1,
        now=True,
    )
    backend.set_import_job_outcome(DEMO_DATASTORE, clean, "COMPLETED", imported_files=4, now=True)
    assert backend.flush()
    assert service.poll().ok
    for _ in range(2):  # read once, whatever polls follow
        found = samples(service)
        assert value(found, "healthimaging_import_files_total", result="failed") == 3
        assert value(found, "healthimaging_import_files_total", result="imported") == 10
        assert value(found, "healthimaging_import_jobs_with_failed_files_total") == 1
        assert ended(found, "COMPLETED") == 2
        assert service.poll().ok
    assert not any(n == "healthimaging_exporter_manifest_read_errors_total" for n, _ in found)


def test_an_unreadable_manifest_is_counted_and_polling_goes_on(
    s3_emulator: EmulatorServer,
    moto_server: MotoServer,
    make_config: ConfigFactory,
    service_for: Callable[[Config], ExporterService],
) -> None:
    backend = s3_emulator.backend
    s3 = moto_server.client("s3")
    config = make_config(
        aws={"endpoint_url": s3_emulator.url, "s3_endpoint_url": moto_server.url},
        import_jobs={"read_manifests": True},
    )
    service = service_for(config)
    assert service.poll().ok
    garbled = backend.start_import_job(DEMO_DATASTORE, output_s3_uri=OUTPUT, submitted_seconds=LONG)
    missing = backend.start_import_job(
        DEMO_DATASTORE, output_s3_uri="s3://no-such-bucket/out/", submitted_seconds=LONG
    )
    assert service.poll().ok
    for job in (garbled, missing):
        backend.set_import_job_outcome(DEMO_DATASTORE, job, "COMPLETED", now=True)
    assert backend.flush()
    output = backend.store(DEMO_DATASTORE).import_jobs[garbled].output_s3_uri
    key = output.removeprefix(f"s3://{BUCKET}/") + "job-output-manifest.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"jobSummary": [')
    errors = "healthimaging_exporter_manifest_read_errors_total"
    assert service.poll().ok
    found = samples(service)
    assert value(found, errors, reason=Outcome.MALFORMED_RESPONSE.value) == 1
    # A missing manifest may only be late: an error once the last try still misses it.
    assert value(found, errors, reason=Outcome.NOT_FOUND.value) is None
    for _ in range(MANIFEST_TRIES):
        assert service.poll().ok
    found = samples(service)
    assert value(found, errors, reason=Outcome.MALFORMED_RESPONSE.value) == MANIFEST_TRIES
    assert value(found, errors, reason=Outcome.NOT_FOUND.value) == 1
    assert value(found, "healthimaging_up") == 1
    assert ended(found, "COMPLETED") == 2
    assert value(found, "healthimaging_import_files_total", result="imported") == 0


def test_manifest_reads_are_bounded_in_bytes(
    moto_server: MotoServer,
) -> None:
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    summary = {"jobSummary": {"numberOfImportedFiles": 1, "imageSetsSummary": ["x" * 4096]}}
    s3.put_object(Bucket=BUCKET, Key="big/job-output-manifest.json", Body=json.dumps(summary))
    s3.put_object(
        Bucket=BUCKET,
        Key="big/FAILURE/failure.ndjson",
        Body=b'{"inputFile": "a.dcm"}\n{"inputFile": "b.dcm"}\n{"inputFile": "c.dcm"}',
    )
    reader = ManifestReader(s3, max_manifest_bytes=1024)
    with pytest.raises(ApiError) as caught:
        reader.read_counts(f"s3://{BUCKET}/big/")
    assert caught.value.outcome is Outcome.MALFORMED_RESPONSE
    # Failure records are counted by lines when the manifest has no failed counts.
    counts = ManifestReader(s3).read_counts(f"s3://{BUCKET}/big")
    assert (counts.imported, counts.failed) == (1, 3)
    with pytest.raises(ApiError) as caught:
        ManifestReader(s3).read_counts(f"s3://{BUCKET}/nothing-here/")
    assert caught.value.outcome is Outcome.NOT_FOUND


def test_a_job_that_ended_between_cycles_is_counted_by_the_reconciliation_once(
    emulator: EmulatorServer, make_config: ConfigFactory
) -> None:
    backend = emulator.backend
    offset = [0.0]
    service = ExporterService(make_config(), clock=lambda: time.time() + offset[0])
    try:
        assert service.poll().ok
        job = backend.start_import_job(DEMO_DATASTORE, submitted_seconds=LONG)
        message = "INVALID_REQUEST: never seen active"
        backend.set_import_job_outcome(DEMO_DATASTORE, job, "FAILED", message=message, now=True)
        assert service.poll().ok
        assert ended(samples(service), "FAILED") == 0  # not in the active listings
        offset[0] = 86_400.0 + 1  # import_jobs.reconcile_seconds later
        for _ in range(2):
            assert service.poll().ok
            assert ended(samples(service), "FAILED") == 1
    finally:
        service.close()


def test_read_import_job_counts_a_job_at_once_and_cycles_do_not_count_it_again(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    service_for: Callable[[Config], ExporterService],
) -> None:
    backend = emulator.backend
    service = service_for(make_config())
    assert not service.poller.read_import_job(DEMO_DATASTORE, "0" * 32)  # before the baseline
    assert service.poll().ok
    job = backend.start_import_job(DEMO_DATASTORE, submitted_seconds=LONG)
    backend.set_import_job_outcome(DEMO_DATASTORE, job, "FAILED", now=True)
    assert service.poller.read_import_job(DEMO_DATASTORE, job)  # as an event would have it
    assert ended(samples(service), "FAILED") == 1
    assert not service.poller.read_import_job(DEMO_DATASTORE, job)
    assert service.poll().ok
    assert ended(samples(service), "FAILED") == 1
    with pytest.raises(ApiError) as caught:
        service.poller.read_import_job(DEMO_DATASTORE, "f" * 32)
    assert caught.value.outcome is Outcome.NOT_FOUND


def test_a_long_history_is_listed_as_far_as_the_page_bound_allows(
    emulator: EmulatorServer, make_config: ConfigFactory
) -> None:
    emulator.backend.generate_import_jobs(DEMO_DATASTORE, 120)
    config = make_config()
    api = ClientFactory(config.aws, None, 2).for_datastore(config.datastores[0])
    jobs, complete = api.list_recent_dicom_import_jobs(DEMO_DATASTORE, 2)
    assert (len(jobs), complete) == (100, False)
    jobs, complete = api.list_recent_dicom_import_jobs(DEMO_DATASTORE, 10)
    assert (len({j.job_id for j in jobs}), complete) == (120, True)
    # A deadline already passed still reads one page.
    jobs, complete = api.list_recent_dicom_import_jobs(DEMO_DATASTORE, 10, deadline=0.0)
    assert (len(jobs), complete) == (50, False)
