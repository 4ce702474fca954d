"""Import jobs, datastore lifecycle, job output in S3 and events in SQS, over real HTTP.

The medical-imaging client talks to the emulator; S3 and SQS are moto's standalone server on a
free loopback port (tests/moto.py). Shapes are checked against botocore's service model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.session
import pytest

from exporter.emulator import EmulatorServer, EventSettings
from exporter.emulator.testing import client_for
from exporter.emulator.testing import raw_request as raw
from tests.moto import MotoServer

DS = "12345678901234567890123456789012"
ROLE = "arn:aws:iam::123456789012:role/ImportJobDataAccessRole"
BIN = Path(sys.executable).parent
SOURCE = f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{DS}/imageset/{'0' * 32}"


def model_shape(name: str) -> Any:
    return botocore.session.get_session().get_service_model("medical-imaging").shape_for(name)


def assert_matches_model(value: dict[str, Any], shape_name: str) -> None:
    """Every member is one the model names, and every required member is there."""
    shape = model_shape(shape_name)
    assert set(value) <= set(shape.members), set(value) - set(shape.members)
    assert set(shape.required_members) <= set(value)


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(port=0, dataset="demo") as server:
        server.backend.set_import_job_timing(0.0, 0.0)
        yield server


@pytest.fixture
def client(emu: EmulatorServer) -> Any:
    return client_for(emu.url)


def start(client: Any, **kwargs: Any) -> str:
    args = {
        "datastoreId": DS,
        "dataAccessRoleArn": ROLE,
        "inputS3Uri": "s3://dicom-input/study-1/",
        "outputS3Uri": "s3://import-output/jobs/",
        **kwargs,
    }
    out = client.start_dicom_import_job(**args)
    assert_matches_model(
        {k: v for k, v in out.items() if k != "ResponseMetadata"}, "StartDICOMImportJobResponse"
    )
    return str(out["jobId"])


def test_jobs_through_boto3_match_the_model(emu: EmulatorServer, client: Any) -> None:
    emu.backend.set_import_job_timing(3600.0, 3600.0)  # stays SUBMITTED for this test
    job_id = start(client, jobName="nightly-import")
    props = client.get_dicom_import_job(datastoreId=DS, jobId=job_id)["jobProperties"]
    assert_matches_model(props, "DICOMImportJobProperties")
    assert props["jobStatus"] == "SUBMITTED" and props["jobName"] == "nightly-import"
    assert props["outputS3Uri"] == f"s3://import-output/jobs/{DS}-DicomImport-{job_id}/"
    summaries = client.list_dicom_import_jobs(datastoreId=DS)["jobSummaries"]
    assert [s["jobId"] for s in summaries] == [job_id]
    assert_matches_model(summaries[0], "DICOMImportJobSummary")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_dicom_import_job(datastoreId=DS, jobId="0" * 32)
    with pytest.raises(client.exceptions.ConflictException):
        start(client, datastoreId="98765432109876543210987654321098")  # CREATING datastore


def test_botocore_paginator_and_status_filter(emu: EmulatorServer, client: Any) -> None:
    ids = emu.backend.generate_import_jobs(DS, 120, seed=3, failed_ratio=0.2)
    pages = list(
        client.get_paginator("list_dicom_import_jobs").paginate(
            datastoreId=DS, PaginationConfig={"PageSize": 50}
        )
    )
    assert [len(p["jobSummaries"]) for p in pages] == [50, 50, 20]
    listed = [s["jobId"] for p in pages for s in p["jobSummaries"]]
    assert sorted(listed) == sorted(ids)
    submitted = [s["submittedAt"] for p in pages for s in p["jobSummaries"]]
    assert submitted == sorted(submitted, reverse=True)
    failed = client.list_dicom_import_jobs(datastoreId=DS, jobStatus="FAILED")["jobSummaries"]
    assert failed and all(s["jobStatus"] == "FAILED" and s["message"] for s in failed)
    assert all("endedAt" in s for s in failed)


def test_invalid_requests_on_the_wire(emu: EmulatorServer) -> None:
    path = f"/startDICOMImportJob/datastore/{DS}"
    status, headers, body = raw(emu.port, "POST", path, json.dumps({"clientToken": "t"}))
    assert status == 400 and headers["x-amzn-ErrorType"] == "ValidationException"
    assert "dataAccessRoleArn" in body["message"]
    status, headers, _ = raw(emu.port, "GET", f"/listDICOMImportJobs/datastore/{DS}?maxResults=0")
    assert status == 400
    status, headers, _ = raw(emu.port, "GET", f"/listDICOMImportJobs/datastore/{DS}?jobStatus=X")
    assert status == 400 and headers["x-amzn-ErrorType"] == "ValidationException"
    status, _, _ = raw(emu.port, "GET", f"/getDICOMImportJob/datastore/{DS}/job/{'a' * 33}")
    assert status == 400


def test_per_operation_quota_throttles_only_that_operation(
    emu: EmulatorServer, client: Any
) -> None:
    status, _, body = raw(
        emu.port,
        "PUT",
        "/_emulator/faults",
        json.dumps({"operation_quotas": {"ListDICOMImportJobs": 10}}),
    )
    assert status == 200 and body["operation_quotas"] == {"ListDICOMImportJobs": 10}
    codes = []
    for _ in range(30):
        try:
            client.list_dicom_import_jobs(datastoreId=DS)
            codes.append("ok")
        except botocore.exceptions.ClientError as exc:
            codes.append(exc.response["Error"]["Code"])
    assert "ThrottlingException" in codes and set(codes) <= {"ok", "ThrottlingException"}
    for _ in range(15):
        client.get_datastore(datastoreId=DS)  # its own, unlimited bucket


def test_datastore_lifecycle_through_boto3(emu: EmulatorServer, client: Any) -> None:
    emu.backend.set_datastore_timing(0.0, 3600.0)
    created = client.create_datastore(datastoreName="lifecycle")
    new = created["datastoreId"]
    assert created["datastoreStatus"] == "CREATING"
    emu.backend.advance()
    assert client.get_datastore(datastoreId=new)["datastoreProperties"]["datastoreStatus"] == (
        "ACTIVE"
    )
    deleted = client.delete_datastore(datastoreId=new)
    assert deleted["datastoreStatus"] == "DELETING"
    props = client.get_datastore(datastoreId=new)["datastoreProperties"]
    assert_matches_model(props, "DatastoreProperties")
    assert props["datastoreStatus"] == "DELETING"
    status, _, _ = raw(
        emu.port, "PUT", f"/_emulator/datastores/{new}/status", '{"datastoreStatus":"DELETED"}'
    )
    assert status == 200
    deleted_ones = client.list_datastores(datastoreStatus="DELETED")["datastoreSummaries"]
    assert [d["datastoreId"] for d in deleted_ones] == [new]
    with pytest.raises(client.exceptions.ConflictException):
        client.delete_datastore(datastoreId=DS)  # still holds image sets


def test_admin_api_plans_and_ends_jobs(emu: EmulatorServer, client: Any) -> None:
    status, _, body = raw(
        emu.port,
        "PUT",
        "/_emulator/timing",
        json.dumps({"import_job_submitted_seconds": 3600, "import_job_in_progress_seconds": 60}),
    )
    assert status == 200 and body["import_job_submitted_seconds"] == 3600.0
    status, _, body = raw(
        emu.port,
        "POST",
        f"/_emulator/datastores/{DS}/importjobs",
        json.dumps({"jobName": "admin-job", "status": "FAILED", "message": "INVALID_REQUEST: x"}),
    )
    assert status == 201
    job_id = body["jobId"]
    props = client.get_dicom_import_job(datastoreId=DS, jobId=job_id)["jobProperties"]
    assert props["jobStatus"] == "SUBMITTED"
    status, _, _ = raw(
        emu.port,
        "PUT",
        f"/_emulator/datastores/{DS}/importjobs/{job_id}/outcome",
        json.dumps({"status": "COMPLETED", "failedFiles": 4, "now": True}),
    )
    assert status == 200
    props = client.get_dicom_import_job(datastoreId=DS, jobId=job_id)["jobProperties"]
    assert props["jobStatus"] == "COMPLETED" and "message" not in props
    status, _, body = raw(
        emu.port,
        "PUT",
        f"/_emulator/datastores/{DS}/importjobs/{job_id}/outcome",
        json.dumps({"status": "FAILED"}),
    )
    assert status == 409
    status, _, body = raw(
        emu.port,
        "POST",
        f"/_emulator/datastores/{DS}/importjobs/generate",
        json.dumps({"count": 1000, "seed": 1, "active": 2}),
    )
    assert status == 201 and body["count"] == 1002
    status, _, body = raw(emu.port, "POST", f"/_emulator/datastores/{DS}/importjobs", '{"x": 1}')
    assert status == 201  # unknown fields are ignored, as on the data plane
    status, _, body = raw(
        emu.port, "POST", f"/_emulator/datastores/{DS}/importjobs", '{"failedFiles": "3"}'
    )
    assert status == 400 and "failedFiles" in body["message"]


# -- S3 output and SQS events, against moto's standalone server ----------------------------------


def read_object(s3: Any, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_ended_jobs_write_the_documented_output_to_s3(
    moto_server: MotoServer, emu: EmulatorServer, client: Any
) -> None:
    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket="import-output")
    status, _, body = raw(
        emu.port, "PUT", "/_emulator/s3", json.dumps({"endpoint_url": moto_server.url})
    )
    assert status == 200 and body["endpoint_url"] == moto_server.url
    ok = emu.backend.start_import_job(
        DS, output_s3_uri="s3://import-output/jobs/", imported_files=5, failed_files=2
    )
    failed = emu.backend.start_import_job(
        DS, output_s3_uri="s3://import-output/jobs", status="FAILED", imported_files=0
    )
    emu.backend.advance()
    assert emu.backend.flush(30)
    assert emu.backend.s3_output_counts() == {"jobs_written": 2, "write_failed": 0}

    props = client.get_dicom_import_job(datastoreId=DS, jobId=ok)["jobProperties"]
    assert props["jobStatus"] == "COMPLETED"
    folder = props["outputS3Uri"]
    manifest = json.loads(read_object(s3, folder + "job-output-manifest.json"))
    summary = manifest["jobSummary"]
    assert summary["jobId"] == ok and summary["datastoreId"] == DS
    assert summary["outputS3Uri"] == folder
    assert summary["numberOfImportedFiles"] == 5
    assert summary["numberOfFilesWithCustomerError"] == 2
    assert summary["numberOfScannedFiles"] == 7
    failure_lines = read_object(s3, summary["failureOutputS3Uri"] + "failure.ndjson").splitlines()
    assert len(failure_lines) == 2
    assert json.loads(failure_lines[0])["exception"]["exceptionType"] == "ValidationException"
    success_lines = read_object(s3, summary["successOutputS3Uri"] + "success.ndjson").splitlines()
    assert len(success_lines) == 5
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="import-output")["Contents"])
    assert keys == sorted(
        f"jobs/{DS}-DicomImport-{job}/{name}"
        for job in (ok, failed)
        for name in (
            "job-output-manifest.json",
            "SUCCESS/success.ndjson",
            "FAILURE/failure.ndjson",
        )
    )
    failed_props = client.get_dicom_import_job(datastoreId=DS, jobId=failed)["jobProperties"]
    failed_summary = json.loads(
        read_object(s3, failed_props["outputS3Uri"] + "job-output-manifest.json")
    )["jobSummary"]
    assert failed_summary["numberOfImportedFiles"] == 0
    assert failed_summary["imageSetsSummary"] == []


def test_missing_bucket_is_counted_not_fatal(moto_server: MotoServer, emu: EmulatorServer):
    emu.backend.configure_s3_output(moto_server.url)
    emu.backend.start_import_job(DS, output_s3_uri="s3://no-such-bucket/x/")
    emu.backend.advance()
    assert emu.backend.flush(30)
    assert emu.backend.s3_output_counts() == {"jobs_written": 0, "write_failed": 1}
    assert raw(emu.port, "GET", "/_emulator/health")[0] == 200


def receive_all(sqs: Any, queue_url: str, expected: int) -> list[dict[str, Any]]:
    """Messages until `expected` arrived or a long poll comes back empty."""
    out: list[dict[str, Any]] = []
    while len(out) < expected:
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2
        ).get("Messages", [])
        if not got:
            break
        for message in got:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return out


@pytest.fixture
def queue(moto_server: MotoServer) -> tuple[Any, str]:
    sqs = moto_server.client("sqs")
    return sqs, sqs.create_queue(QueueName="healthimaging-events")["QueueUrl"]


def test_events_arrive_in_sqs_as_documented_envelopes(
    moto_server: MotoServer, queue: tuple[Any, str], emu: EmulatorServer
) -> None:
    sqs, url = queue
    status, _, body = raw(
        emu.port,
        "PUT",
        "/_emulator/events",
        json.dumps({"queue_url": url, "endpoint_url": moto_server.url}),
    )
    assert status == 200 and body["queue_url"] == url
    set_id = "5b3a711878c34d40e888253319388649"
    raw(
        emu.port,
        "POST",
        f"/_emulator/datastores/{DS}/imagesets",
        json.dumps({"imageSetId": set_id}),
    )
    status, _, version = raw(
        emu.port,
        "POST",
        f"/_emulator/datastores/{DS}/imagesets/{set_id}/versions",
        json.dumps({"workflowStatus": "COPYING", "state": "LOCKED", "sourceImageSetArn": SOURCE}),
    )
    raw(
        emu.port,
        "PUT",
        f"/_emulator/datastores/{DS}/imagesets/{set_id}/versions/{version['versionId']}",
        json.dumps(
            {"workflowStatus": "COPY_FAILED", "message": "INVALID_REQUEST: x", "state": "ACTIVE"}
        ),
    )
    job_id = emu.backend.start_import_job(DS, job_name="evented")
    emu.backend.advance()
    assert raw(emu.port, "POST", "/_emulator/flush", "{}")[2] == {"flushed": True}
    received = receive_all(sqs, url, 5)
    assert [e["detail-type"] for e in received] == [
        "Image Set Copying",
        "Image Set Copy Failed",
        "Import Job Submitted",
        "Import Job In Progress",
        "Import Job Completed",
    ]  # the image set was IMPORTED at creation: no event for that
    for event in received:
        assert event["source"] == "aws.medical-imaging" and event["version"] == "0"
        assert event["account"] == "123456789012" and event["region"] == "us-east-1"
    copy_failed = received[1]
    assert copy_failed["resources"] == [
        f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{DS}/imageset/{set_id}"
    ]
    assert copy_failed["detail"]["imagesetId"] == set_id
    assert copy_failed["detail"]["imageSetWorkflowStatus"] == "COPY_FAILED"
    assert received[0]["detail"]["sourceImageSetArn"] == SOURCE
    assert received[0]["detail"]["imageSetState"] == "LOCKED"
    assert copy_failed["detail"]["imageSetState"] == "ACTIVE"
    assert received[4]["detail"]["jobId"] == job_id
    assert received[4]["detail"]["jobName"] == "evented"
    assert emu.backend.event_counts()["sent"] == 5


def test_drop_ratio_and_delay(
    moto_server: MotoServer, queue: tuple[Any, str], emu: EmulatorServer
) -> None:
    sqs, url = queue
    emu.backend.configure_events(
        EventSettings(queue_url=url, endpoint_url=moto_server.url, drop_ratio=0.5, seed=11)
    )
    for _ in range(40):
        emu.backend.create_datastore()
    assert emu.backend.flush(30)
    recorded = emu.backend.recorded_events()
    kept = [r.event["id"] for r in recorded if not r.dropped]
    assert 0 < len(kept) < 40
    received = receive_all(sqs, url, len(kept))
    assert sorted(e["id"] for e in received) == sorted(kept)

    emu.backend.configure_events(
        EventSettings(queue_url=url, endpoint_url=moto_server.url, delay_seconds=3.0)
    )
    emu.backend.create_datastore()
    # Still held back: the delay is long against one call here, and nothing is sent early.
    assert emu.backend.event_counts()["sent"] == 0
    assert emu.backend.flush(30)
    assert emu.backend.event_counts()["sent"] == 1
    assert [e["detail-type"] for e in receive_all(sqs, url, 1)] == ["Data Store Created"]


def test_console_script_flags_publish_events_and_write_output(
    moto_server: MotoServer, queue: tuple[Any, str]
) -> None:
    sqs, url = queue
    moto_server.client("s3").create_bucket(Bucket="cli-output")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            str(BIN / "healthimaging-emulator"),
            "--port",
            "0",
            "--s3-endpoint-url",
            moto_server.url,
            "--events-queue-url",
            url,
            "--events-endpoint-url",
            moto_server.url,
            "--events-seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        emulator_url = proc.stdout.readline().strip().rsplit(" ", 1)[1]
        port = int(emulator_url.rsplit(":", 1)[1])
        raw(
            port,
            "PUT",
            "/_emulator/timing",
            '{"import_job_submitted_seconds": 0, "import_job_in_progress_seconds": 0}',
        )
        status, _, body = raw(
            port,
            "POST",
            f"/_emulator/datastores/{DS}/importjobs",
            json.dumps({"outputS3Uri": "s3://cli-output/out/", "failedFiles": 1}),
        )
        assert status == 201
        received = receive_all(sqs, url, 3)
        assert [e["detail-type"] for e in received] == [
            "Import Job Submitted",
            "Import Job In Progress",
            "Import Job Completed",
        ]
        assert raw(port, "POST", "/_emulator/flush", "{}")[2] == {"flushed": True}
        manifest_key = f"out/{DS}-DicomImport-{body['jobId']}/job-output-manifest.json"
        manifest = json.loads(
            read_object(moto_server.client("s3"), f"s3://cli-output/{manifest_key}")
        )
        assert manifest["jobSummary"]["numberOfFilesWithCustomerError"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
