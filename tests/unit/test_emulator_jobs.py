"""Import jobs and datastore lifecycle in the emulator's backend, on a hand-moved clock."""

from __future__ import annotations

import json

import pytest

from exporter.emulator import Backend, Faults, routes
from exporter.emulator import operations as ops
from exporter.emulator.errors import ConflictError, NotFoundError, ValidationError
from exporter.emulator.joboutput import FAILURE_FILE, MANIFEST, SUCCESS_FILE, objects
from exporter.emulator.messages import Request
from exporter.emulator.testing import SIGV4, ManualClock

DS = "12345678901234567890123456789012"
ROLE = "arn:aws:iam::123456789012:role/ImportJobDataAccessRole"
START_BODY = {
    "dataAccessRoleArn": ROLE,
    "clientToken": "token-1",
    "inputS3Uri": "s3://medical-imaging-dicom-input/dicom_input/",
    "outputS3Uri": "s3://medical-imaging-output/job_output/",
    "jobName": "my-job",
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture
def backend(clock: ManualClock) -> Backend:
    b = Backend(clock=clock, monotonic=clock)
    b.load_dataset({"datastores": [{"datastoreId": DS, "datastoreName": "unit"}]})
    b.set_import_job_timing(2.0, 10.0)
    return b


def job_props(b: Backend, job_id: str) -> dict[str, object]:
    props = ops.get_dicom_import_job(b, DS, job_id)["jobProperties"]
    assert isinstance(props, dict)
    return props


def test_start_job_moves_through_statuses_on_the_clock(backend: Backend, clock: ManualClock):
    out = ops.start_dicom_import_job(backend, DS, START_BODY)
    assert out == {
        "datastoreId": DS,
        "jobId": out["jobId"],
        "jobStatus": "SUBMITTED",
        "submittedAt": 1_700_000_000.0,
    }
    job_id = out["jobId"]
    assert len(job_id) == 32
    assert job_props(backend, job_id) == {
        "jobId": job_id,
        "jobName": "my-job",
        "jobStatus": "SUBMITTED",
        "datastoreId": DS,
        "dataAccessRoleArn": ROLE,
        "submittedAt": 1_700_000_000.0,
        "inputS3Uri": "s3://medical-imaging-dicom-input/dicom_input/",
        "outputS3Uri": f"s3://medical-imaging-output/job_output/{DS}-DicomImport-{job_id}/",
    }
    clock.now += 2.0
    assert job_props(backend, job_id)["jobStatus"] == "IN_PROGRESS"
    clock.now += 9.999
    assert job_props(backend, job_id)["jobStatus"] == "IN_PROGRESS"
    clock.now += 0.001
    props = job_props(backend, job_id)
    assert props["jobStatus"] == "COMPLETED" and props["endedAt"] == 1_700_000_012.0
    assert "message" not in props


def test_client_token_is_idempotent(backend: Backend) -> None:
    first = ops.start_dicom_import_job(backend, DS, START_BODY)["jobId"]
    again = ops.start_dicom_import_job(backend, DS, START_BODY)["jobId"]
    other = ops.start_dicom_import_job(backend, DS, {**START_BODY, "clientToken": "t2"})["jobId"]
    assert first == again != other


def test_job_fails_with_a_message(backend: Backend, clock: ManualClock) -> None:
    job_id = backend.start_import_job(DS, status="FAILED", message="INVALID_REQUEST: bad input")
    clock.now += 12.0
    props = job_props(backend, job_id)
    assert props["jobStatus"] == "FAILED" and props["message"] == "INVALID_REQUEST: bad input"
    summary = ops.list_dicom_import_jobs(backend, DS)["jobSummaries"][0]
    assert summary["message"] == "INVALID_REQUEST: bad input"
    assert set(summary) == {
        "jobId",
        "jobName",
        "jobStatus",
        "datastoreId",
        "dataAccessRoleArn",
        "submittedAt",
        "endedAt",
        "message",
    }


def test_outcome_can_be_changed_and_forced_now(backend: Backend, clock: ManualClock) -> None:
    job_id = backend.start_import_job(DS)
    backend.set_import_job_outcome(DS, job_id, "COMPLETED", failed_files=3, now=True)
    props = job_props(backend, job_id)
    assert props["jobStatus"] == "COMPLETED" and props["endedAt"] == clock.now
    with pytest.raises(ConflictError):
        backend.set_import_job_outcome(DS, job_id, "FAILED")
    other = backend.start_import_job(DS)
    backend.set_import_job_outcome(DS, other, "FAILED", now=True)
    assert job_props(backend, other)["message"]  # a default message, never empty


def test_list_filters_by_status_and_pages_newest_first(
    backend: Backend, clock: ManualClock
) -> None:
    ids = []
    for i in range(7):
        ids.append(backend.start_import_job(DS, in_progress_seconds=100.0 if i % 2 else 0.0))
        clock.now += 1.0
    clock.now += 5.0
    pages, token = [], None
    while True:
        out = ops.list_dicom_import_jobs(backend, DS, None, 3, token)
        pages.append([s["jobId"] for s in out["jobSummaries"]])
        token = out.get("nextToken")
        if token is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [j for p in pages for j in p] == list(reversed(ids))
    running = ops.list_dicom_import_jobs(backend, DS, "IN_PROGRESS")["jobSummaries"]
    assert [s["jobId"] for s in running] == [ids[5], ids[3], ids[1]]
    done = ops.list_dicom_import_jobs(backend, DS, "COMPLETED")["jobSummaries"]
    assert {s["jobId"] for s in done} == {ids[0], ids[2], ids[4], ids[6]}
    with pytest.raises(ValidationError, match="does not belong"):
        ops.list_dicom_import_jobs(backend, DS, "COMPLETED", 3, out_token(backend))


def out_token(backend: Backend) -> str:
    token = ops.list_dicom_import_jobs(backend, DS, None, 1).get("nextToken")
    assert isinstance(token, str)
    return token


def test_paging_is_stable_while_jobs_change_status(backend: Backend, clock: ManualClock):
    ids = [backend.start_import_job(DS, submitted_seconds=0.0) for _ in range(4)]
    first = ops.list_dicom_import_jobs(backend, DS, None, 2)
    clock.now += 100.0  # every job ends between the two pages
    second = ops.list_dicom_import_jobs(backend, DS, None, 2, first["nextToken"])
    seen = [s["jobId"] for s in first["jobSummaries"] + second["jobSummaries"]]
    assert sorted(seen) == sorted(ids) and "nextToken" not in second


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"clientToken": None}, "clientToken' failed to satisfy constraint: Member must not be"),
        ({"dataAccessRoleArn": "arn:aws:iam::1:role/x"}, "dataAccessRoleArn"),
        ({"inputS3Uri": "https://bucket/x"}, "inputS3Uri"),
        ({"outputS3Uri": "s3://B/x"}, "outputS3Uri"),
        ({"jobName": "has space"}, "jobName"),
        ({"jobName": "x" * 65}, "length between 1 and 64"),
        ({"inputOwnerAccountId": "12"}, "inputOwnerAccountId"),
        ({"importConfiguration": [1]}, "importConfiguration"),
    ],
)
def test_start_job_validation(backend: Backend, change: dict[str, object], match: str) -> None:
    body = {k: v for k, v in {**START_BODY, **change}.items() if v is not None}
    with pytest.raises(ValidationError, match=match):
        ops.start_dicom_import_job(backend, DS, body)


def test_job_errors(backend: Backend) -> None:
    with pytest.raises(NotFoundError):
        ops.get_dicom_import_job(backend, DS, "0" * 32)
    with pytest.raises(ValidationError, match="jobId"):
        ops.get_dicom_import_job(backend, DS, "NOT-AN-ID")
    with pytest.raises(ValidationError, match="jobStatus"):
        ops.list_dicom_import_jobs(backend, DS, "DONE")
    with pytest.raises(ValidationError, match="maxResults"):
        ops.list_dicom_import_jobs(backend, DS, None, 51)
    with pytest.raises(NotFoundError):
        ops.list_dicom_import_jobs(backend, "9" * 32)
    backend.set_datastore_status(DS, "DELETING")
    with pytest.raises(ConflictError):
        ops.start_dicom_import_job(backend, DS, START_BODY)


def test_generate_import_jobs_for_a_bench(backend: Backend, clock: ManualClock) -> None:
    ids = backend.generate_import_jobs(DS, 1000, seed=7, failed_ratio=0.1, active=5)
    assert len(set(ids)) == 1005
    again = Backend(clock=clock)
    again.load_dataset({"datastores": [{"datastoreId": DS}]})
    assert again.generate_import_jobs(DS, 1000, seed=7, failed_ratio=0.1) == ids[:1000]
    failed = ops.list_dicom_import_jobs(backend, DS, "FAILED")
    pages = 0
    statuses: dict[str, int] = {}
    token = None
    while True:
        out = ops.list_dicom_import_jobs(backend, DS, None, 50, token)
        pages += 1
        for s in out["jobSummaries"]:
            statuses[s["jobStatus"]] = statuses.get(s["jobStatus"], 0) + 1
            assert clock.now - 7 * 86_400 <= s["submittedAt"] <= clock.now
        token = out.get("nextToken")
        if token is None:
            break
    assert pages == 21 and statuses["SUBMITTED"] == 5
    assert 50 <= statuses["FAILED"] <= 150 and failed["jobSummaries"][0]["message"]
    assert backend.recorded_events()[-1].event["detail-type"] == "Import Job Submitted"
    assert len(backend.recorded_events()) == 5  # history makes no events


def test_datastore_lifecycle(backend: Backend, clock: ManualClock) -> None:
    backend.set_datastore_timing(3.0, 4.0)
    created = ops.create_datastore(backend, {"clientToken": "c1", "datastoreName": "new"})
    new_id = created["datastoreId"]
    assert created == {"datastoreId": new_id, "datastoreStatus": "CREATING"}
    clock.now += 3.0
    props = ops.get_datastore(backend, new_id)["datastoreProperties"]
    assert props["datastoreStatus"] == "ACTIVE" and props["updatedAt"] == clock.now
    assert ops.delete_datastore(backend, new_id) == {
        "datastoreId": new_id,
        "datastoreStatus": "DELETING",
    }
    with pytest.raises(ConflictError):
        ops.delete_datastore(backend, new_id)
    clock.now += 4.0
    listed = ops.list_datastores(backend, "DELETED")["datastoreSummaries"]
    assert [d["datastoreId"] for d in listed] == [new_id]
    backend.create_image_set(DS)
    with pytest.raises(ConflictError, match="image sets"):
        ops.delete_datastore(backend, DS)
    backend.schedule_datastore_status(DS, "CREATE_FAILED", 1.0)
    assert ops.get_datastore(backend, DS)["datastoreProperties"]["datastoreStatus"] == "ACTIVE"
    clock.now += 1.0
    status = ops.get_datastore(backend, DS)["datastoreProperties"]["datastoreStatus"]
    assert status == "CREATE_FAILED"
    with pytest.raises(ValidationError):
        backend.set_datastore_status(DS, "GONE")


def test_output_objects_follow_the_documented_layout(backend: Backend, clock: ManualClock):
    job_id = backend.start_import_job(
        DS,
        input_s3_uri="s3://in/dicom",
        output_s3_uri="s3://out/jobs",
        imported_files=3,
        failed_files=2,
        server_error_files=1,
    )
    clock.now += 12.0
    backend.advance()
    with backend.lock:
        job = backend.import_job(backend.store(DS), job_id)
    bodies = objects(job, "a" * 32)
    assert set(bodies) == {MANIFEST, SUCCESS_FILE, FAILURE_FILE}
    folder = f"s3://out/jobs/{DS}-DicomImport-{job_id}/"
    summary = json.loads(bodies[MANIFEST])["jobSummary"]
    assert summary["outputS3Uri"] == folder
    assert summary["failureOutputS3Uri"] == folder + "FAILURE/"
    assert summary["successOutputS3Uri"] == folder + "SUCCESS/"
    assert (
        summary["numberOfScannedFiles"],
        summary["numberOfImportedFiles"],
        summary["numberOfFilesWithCustomerError"],
        summary["numberOfFilesWithServerError"],
        summary["numberOfGeneratedImageSets"],
    ) == (6, 3, 2, 1, 1)
    failures = [json.loads(line) for line in bodies[FAILURE_FILE].splitlines()]
    assert [f["exception"]["exceptionType"] for f in failures] == [
        "ValidationException",
        "ValidationException",
        "InternalServerException",
    ]
    assert all(f["inputFile"].startswith("dicom/emulated-") for f in failures)
    successes = [json.loads(line) for line in bodies[SUCCESS_FILE].splitlines()]
    assert len(successes) == 3 and successes[0]["importResponse"]["isPrimary"] is True


def test_completed_job_adds_an_imported_image_set(backend: Backend, clock: ManualClock):
    backend.start_import_job(DS, imported_files=2)
    clock.now += 12.0
    backend.advance()
    with backend.lock:
        sets = list(backend.store(DS).image_sets.values())
    assert len(sets) == 1 and sets[0].latest.workflow_status == "IMPORTED"


def call(backend: Backend, method: str, path: str, query: dict[str, str] | None = None):
    return routes.dispatch(
        backend, Request(method, path, query or {}, {"Authorization": SIGV4}, b"")
    )


def test_operation_quotas_apply_per_operation(backend: Backend, clock: ManualClock) -> None:
    backend.set_faults(Faults(operation_quotas={"ListDICOMImportJobs": 10}))
    path = f"/listDICOMImportJobs/datastore/{DS}"
    statuses = [call(backend, "GET", path).status for _ in range(12)]
    assert statuses.count(200) == 10 and statuses.count(429) == 2
    assert call(backend, "GET", f"/datastore/{DS}").status == 200  # no quota set for it
    clock.now += 1.0
    assert call(backend, "GET", path).status == 200
    assert Faults.from_dict(Faults(operation_quotas={"A": 2}).to_dict()).operation_quotas == {
        "A": 2
    }
    with pytest.raises(ValueError, match="operation_quotas"):
        Faults(operation_quotas={"A": 0})
