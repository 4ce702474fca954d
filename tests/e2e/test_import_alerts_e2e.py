"""Import jobs that fail, for real: emulator -> S3 (moto) -> exporter -> Prometheus -> Alertmanager.

The emulator's jobs move SUBMITTED -> IN_PROGRESS -> their end on its clock and write their
output (job-output-manifest.json and the per-file records) to moto's S3; the exporter watches
the jobs and reads the manifests (import_jobs.read_manifests).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.paging import PAGER
from tests.e2e.test_alerting_e2e import Stack, start_stack
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET
from tests.moto import MotoServer

pytestmark = pytest.mark.e2e

OUTPUT_BUCKET = "emulator-output"  # the emulator's default outputS3Uri is in this bucket


@pytest.fixture
def stack(moto_server: MotoServer) -> Iterator[Stack]:
    """The pipeline of test_alerting_e2e, reading import job manifests from moto's S3."""
    moto_server.client("s3").create_bucket(Bucket=OUTPUT_BUCKET)
    running = start_stack(
        lambda emulator: {
            "aws": {
                "region": "us-east-1",
                "endpoint_url": emulator.url,
                "s3_endpoint_url": moto_server.url,
            },
            "poll": {"interval_seconds": 1},
            "import_jobs": {"read_manifests": True},
            "datastores": [{"datastore_id": DEMO_DATASTORE, "image_sets": [DEMO_IMAGE_SET]}],
        },
        # The import jobs' baseline is in: their counters are exported and scraped.
        f'healthimaging_import_jobs_ended_total{{datastore_id="{DEMO_DATASTORE}"}}',
    )
    running.emulator.backend.configure_s3_output(moto_server.url)
    running.emulator.backend.set_import_job_timing(0.5, 1.0)
    try:
        yield running
    finally:
        running.stop()


def test_a_failed_job_and_a_job_with_failed_files_each_page_once(stack: Stack) -> None:
    backend = stack.emulator.backend
    backend.start_import_job(
        DEMO_DATASTORE, status="FAILED", message="INVALID_REQUEST: no DICOM files in the input"
    )
    failed = stack.data_store_alert("HealthImagingImportJobFailed", DEMO_DATASTORE)
    assert failed["labels"]["severity"] == "critical"

    backend.start_import_job(DEMO_DATASTORE, imported_files=3, failed_files=2)
    stack.data_store_alert("HealthImagingImportCompletedWithFailedFiles", DEMO_DATASTORE)
    # The counts came from the manifest in S3, and the failure message stayed out.
    result = stack.prometheus.wait_for_query(
        f'healthimaging_import_files_total{{datastore_id="{DEMO_DATASTORE}",result="failed"}} == 2'
    )
    assert result
    body = stack.exporter.metrics()
    assert "no DICOM files" not in body
    # One page each on the paging receiver (critical and warning alerts also reach the default
    # receiver): nothing resolved or paged again while the jobs stay in their hour.
    import_alerts = [
        (payload["receiver"], alert["status"], alert["labels"]["alertname"])
        for payload in stack.hook.payloads
        for alert in payload["alerts"]
        if alert["labels"]["alertname"].startswith("HealthImagingImport")
    ]
    pages = [(status, name) for receiver, status, name in import_alerts if receiver == PAGER]
    assert pages == [("firing", "HealthImagingImportJobFailed")]
    others = sorted((status, name) for receiver, status, name in import_alerts if receiver != PAGER)
    assert others == [
        ("firing", "HealthImagingImportCompletedWithFailedFiles"),
        ("firing", "HealthImagingImportJobFailed"),
    ]


def test_a_job_stuck_in_submitted_warns_once_and_resolves_when_it_moves_on(stack: Stack) -> None:
    backend = stack.emulator.backend
    job_id = backend.start_import_job(DEMO_DATASTORE, submitted_seconds=3600)
    stuck = stack.data_store_alert("HealthImagingImportStuck", DEMO_DATASTORE)
    # Per data store and status: never the job's id or name (unbounded) as a label.
    assert stuck["labels"] == {
        "alertname": "HealthImagingImportStuck",
        "severity": "warning",
        "datastore_id": DEMO_DATASTORE,
        "job_status": "SUBMITTED",
    }
    assert job_id not in str(stuck)
    backend.set_import_job_outcome(DEMO_DATASTORE, job_id, "COMPLETED", now=True)
    stack.data_store_alert("HealthImagingImportStuck", DEMO_DATASTORE, "resolved")
    notes = [
        (payload["receiver"], alert["status"])
        for payload in stack.hook.payloads
        for alert in payload["alerts"]
        if alert["labels"]["alertname"] == "HealthImagingImportStuck"
    ]
    # A warning: not paged; on the default receiver, once firing and once resolved.
    assert [receiver for receiver, _ in notes if receiver == PAGER] == []
    assert sorted(status for _, status in notes) == ["firing", "resolved"]
