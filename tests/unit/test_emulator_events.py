"""The HealthImaging EventBridge events the emulator publishes for every change it makes."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from exporter.emulator import Backend, EventSettings
from exporter.emulator.events import DETAIL_TYPES, event_time
from exporter.emulator.testing import ManualClock

DS = "12345678901234567890123456789012"
SET = "abcdefabcdefabcdefabcdefabcdef12"
ACCOUNT = "111122223333"
ENVELOPE_KEYS = {
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_710_374_460.0)  # 2024-03-14T00:01:00Z, the guide's example time


@pytest.fixture
def backend(clock: ManualClock) -> Backend:
    b = Backend(clock=clock, region="us-west-2", account_id=ACCOUNT)
    b.load_dataset({"datastores": [{"datastoreId": DS, "datastoreName": "test"}]})
    b.set_import_job_timing(1.0, 1.0)
    return b


def events(b: Backend) -> list[dict[str, Any]]:
    return [r.event for r in b.recorded_events()]


def check_envelope(event: dict[str, Any], resource: str) -> None:
    assert set(event) == ENVELOPE_KEYS
    assert event["version"] == "0" and event["source"] == "aws.medical-imaging"
    assert uuid.UUID(event["id"]).version == 4
    assert event["account"] == ACCOUNT and event["region"] == "us-west-2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    assert event["resources"] == [resource]
    assert event["detail-type"] in DETAIL_TYPES


def test_event_time_is_whole_seconds_utc() -> None:
    assert event_time(1_710_374_460.999) == "2024-03-14T00:01:00Z"


def test_image_set_events_carry_the_documented_fields(backend: Backend) -> None:
    backend.create_image_set(DS, SET, workflow_status="CREATED")
    version = backend.add_version(DS, SET, "COPYING", state="LOCKED", source_image_set_arn="arn:x")
    backend.set_workflow_status(DS, SET, version, "COPY_FAILED", "INVALID_REQUEST: x")
    out = events(backend)
    arn = f"arn:aws:medical-imaging:us-west-2:{ACCOUNT}:datastore/{DS}/imageset/{SET}"
    for event in out:
        check_envelope(event, arn)
    assert [e["detail-type"] for e in out] == [
        "Image Set Created",
        "Image Set Copying",
        "Image Set Copy Failed",
    ]
    assert out[0]["time"] == "2024-03-14T00:01:00Z"
    assert out[0]["detail"] == {
        "imagingVersion": "1.0",
        "isPrimary": True,
        "imageSetVersion": "1",
        "datastoreId": DS,
        "imagesetId": SET,
        "imageSetState": "ACTIVE",
        "imageSetWorkflowStatus": "CREATED",
    }
    assert out[1]["detail"]["sourceImageSetArn"] == "arn:x"
    assert out[1]["detail"]["imageSetState"] == "LOCKED"
    assert out[2]["detail"]["imageSetVersion"] == "2"
    assert "sourceImageSetArn" not in out[2]["detail"]
    assert "message" not in out[2]["detail"]  # AWS's events carry no message


@pytest.mark.parametrize(
    "status", ["IMPORTING", "IMPORTED", "IMPORT_FAILED", "UPDATING_FOR_STUDY_CONSISTENCY"]
)
def test_statuses_without_an_aws_event_publish_nothing(backend: Backend, status: str) -> None:
    backend.create_image_set(DS, SET, workflow_status=status)
    backend.add_version(DS, SET, status)
    assert events(backend) == []


def test_every_image_set_status_with_an_event(backend: Backend) -> None:
    backend.create_image_set(DS, SET)
    expected = {
        "CREATED": "Image Set Created",
        "COPYING": "Image Set Copying",
        "COPYING_WITH_READ_ONLY_ACCESS": "Image Set Copying With Read Only Access",
        "COPIED": "Image Set Copied",
        "COPY_FAILED": "Image Set Copy Failed",
        "UPDATING": "Image Set Updating",
        "UPDATED": "Image Set Updated",
        "UPDATE_FAILED": "Image Set Update Failed",
        "DELETING": "Image Set Deleting",
        "DELETED": "Image Set Deleted",
    }
    for status in expected:
        backend.add_version(DS, SET, status)
    assert [e["detail-type"] for e in events(backend)] == list(expected.values())
    copying = events(backend)[1]["detail"]
    assert copying["sourceImageSetArn"].endswith(f"/imageset/{SET}")  # default: itself
    read_only = events(backend)[2]["detail"]
    assert "sourceImageSetArn" not in read_only


def test_delete_image_set_publishes_deleted(backend: Backend) -> None:
    backend.create_image_set(DS, SET)
    backend.delete_image_set(DS, SET)
    (event,) = events(backend)
    assert event["detail-type"] == "Image Set Deleted"
    assert event["detail"]["imageSetState"] == "DELETED"


def test_import_job_events(backend: Backend, clock: ManualClock) -> None:
    job_id = backend.start_import_job(
        DS,
        job_name="test_only_1",
        input_s3_uri="s3://healthimaging-test-bucket/input/",
        output_s3_uri="s3://healthimaging-test-bucket/output/",
        status="FAILED",
    )
    clock.now += 5.0
    backend.advance()
    out = events(backend)
    for event in out:
        check_envelope(event, f"arn:aws:medical-imaging:us-west-2:{ACCOUNT}:datastore/{DS}")
    assert [e["detail-type"] for e in out] == [
        "Import Job Submitted",
        "Import Job In Progress",
        "Import Job Failed",
    ]
    # Each event is stamped with its change's time on the clock, not when it was noticed.
    assert [e["time"] for e in out] == [
        "2024-03-14T00:01:00Z",
        "2024-03-14T00:01:01Z",
        "2024-03-14T00:01:02Z",
    ]
    assert out[2]["detail"] == {
        "imagingVersion": "1.0",
        "datastoreId": DS,
        "jobId": job_id,
        "jobName": "test_only_1",
        "jobStatus": "FAILED",
        "inputS3Uri": "s3://healthimaging-test-bucket/input/",
        "outputS3Uri": f"s3://healthimaging-test-bucket/output/{DS}-DicomImport-{job_id}/",
    }


def test_datastore_events(backend: Backend, clock: ManualClock) -> None:
    backend.set_datastore_timing(2.0, 2.0)
    new = backend.create_datastore_async("test")
    clock.now += 2.0
    backend.advance()
    backend.delete_datastore_async(new)
    clock.now += 2.0
    backend.advance()
    backend.set_datastore_status(DS, "CREATE_FAILED")
    out = events(backend)
    assert [e["detail-type"] for e in out] == [
        "Data Store Creating",
        "Data Store Created",
        "Data Store Deleting",
        "Data Store Deleted",
        "Data Store Creation Failed",
    ]
    check_envelope(out[0], f"arn:aws:medical-imaging:us-west-2:{ACCOUNT}:datastore/{new}")
    assert out[0]["detail"] == {
        "imagingVersion": "1.0",
        "datastoreId": new,
        "datastoreName": "test",
        "datastoreStatus": "CREATING",
    }


def test_bulk_generation_and_dataset_loads_publish_nothing(backend: Backend) -> None:
    backend.generate(DS, 50)
    backend.generate_import_jobs(DS, 50)
    backend.load_dataset({"datastores": [{"datastoreId": DS}]})
    assert events(backend) == []


def test_drop_ratio_is_seeded_and_counted(backend: Backend) -> None:
    def run(seed: int) -> list[bool]:
        backend.configure_events(EventSettings(drop_ratio=0.3, seed=seed))
        for _ in range(200):
            backend.create_datastore()
        return [r.dropped for r in backend.recorded_events()]

    first, again, other = run(1), run(1), run(2)
    assert first == again != other
    assert 30 <= sum(first) <= 90
    counts = backend.event_counts()
    assert counts["published"] == 200 and counts["dropped"] == sum(other)
    assert counts["sent"] == 0  # no queue: recorded only


def test_event_settings_round_trip_and_refusals() -> None:
    settings = EventSettings(queue_url="http://q", drop_ratio=0.5, delay_seconds=2, seed=4)
    assert EventSettings.from_dict(settings.to_dict()) == settings
    for bad, match in (
        ({"drop_ratio": 2}, "drop_ratio"),
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"queue_url": 3}, "queue_url"),
        ({"seed": "x"}, "seed"),
        ({"nope": 1}, "unknown"),
    ):
        with pytest.raises(ValueError, match=match):
            EventSettings.from_dict(bad)
