"""Import job answers and manifests: strict parsing, counts only, and the import_jobs config."""

from __future__ import annotations

import datetime

import pytest

from exporter.aws import ApiError
from exporter.aws.manifests import counts_from_manifest, split_s3_uri
from exporter.aws.parsing import read_import_job, read_import_jobs_page
from exporter.config import ConfigError, parse_config
from exporter.outcomes import Outcome

DS = "1" * 32
WHEN = datetime.datetime(2024, 3, 14, tzinfo=datetime.UTC)


def summary(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "jobId": "a" * 32,
        "jobName": "patient-smith-series",
        "jobStatus": "FAILED",
        "datastoreId": DS,
        "submittedAt": WHEN,
        "endedAt": WHEN + datetime.timedelta(minutes=5),
        "message": "INVALID_REQUEST: s3://in/Smith_John_1970.dcm is not DICOM",
    }
    base.update(fields)
    return base


def test_a_failed_job_keeps_only_its_reason_code_and_times() -> None:
    jobs, token = read_import_jobs_page({"jobSummaries": [summary()], "nextToken": "t"})
    (job,) = jobs
    assert token == "t"
    assert job.reason == "INVALID_REQUEST"
    assert job.ended_at is not None and job.submitted_at is not None
    assert job.ended_at - job.submitted_at == 300
    assert "Smith" not in repr(job) and "patient" not in repr(job)


def test_get_import_job_carries_the_output_folder() -> None:
    output = f"s3://bucket/out/{DS}-DicomImport-{'a' * 32}/"
    job = read_import_job({"jobProperties": summary(jobStatus="COMPLETED", outputS3Uri=output)})
    assert job.output_s3_uri == output and job.reason is None


@pytest.mark.parametrize(
    "bad",
    [
        {"jobSummaries": "x"},
        {"jobSummaries": [summary(jobId="A" * 33)]},
        {"jobSummaries": [summary(jobStatus="failed")]},
        {"jobSummaries": [summary(endedAt="yesterday")]},
        {"jobSummaries": [summary(message=7)]},
        {"jobSummaries": [summary(outputS3Uri="http://not-s3/")]},
    ],
)
def test_malformed_job_answers_are_refused(bad: object) -> None:
    with pytest.raises(ApiError) as caught:
        read_import_jobs_page(bad)
    assert caught.value.outcome is Outcome.MALFORMED_RESPONSE


def test_manifest_counts_customer_and_server_errors_as_failed() -> None:
    manifest = {
        "jobSummary": {
            "numberOfImportedFiles": 7,
            "numberOfFilesWithCustomerError": 2,
            "numberOfFilesWithServerError": 1,
            "imageSetsSummary": [{"imageSetId": "x"}],
        }
    }
    assert counts_from_manifest(manifest) == (7, 3)
    assert counts_from_manifest({"jobSummary": {}}) == (None, None)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"jobSummary": []},
        {"jobSummary": {"numberOfImportedFiles": -1}},
        {"jobSummary": {"numberOfImportedFiles": True}},
        {"jobSummary": {"numberOfImportedFiles": "3"}},
    ],
)
def test_malformed_manifests_are_refused(bad: object) -> None:
    with pytest.raises(ApiError) as caught:
        counts_from_manifest(bad)
    assert caught.value.outcome is Outcome.MALFORMED_RESPONSE


def test_output_uris_split_into_bucket_and_prefix() -> None:
    assert split_s3_uri("s3://my-bucket/out/job") == ("my-bucket", "out/job/")
    assert split_s3_uri("s3://my-bucket/out/job/") == ("my-bucket", "out/job/")
    assert split_s3_uri("s3://my-bucket") == ("my-bucket", "")
    with pytest.raises(ApiError):
        split_s3_uri("https://my-bucket/out")


def test_import_jobs_config_defaults_and_per_data_store_override() -> None:
    config = parse_config({"datastores": [{"datastore_id": DS, "image_sets": "all"}]})
    settings = config.import_jobs
    assert settings.enabled and not settings.read_manifests
    assert settings.window_days == 7 and settings.reconcile_seconds == 86_400
    assert config.aws.rate_limits["ListDICOMImportJobs"] == 5
    assert config.aws.rate_limits["GetDICOMImportJob"] == 5
    config = parse_config(
        {
            "aws": {"s3_endpoint_url": "http://127.0.0.1:5000/"},
            "import_jobs": {"enabled": False, "window_days": 1, "read_manifests": True},
            "datastores": [
                {"datastore_id": DS, "image_sets": "all", "import_jobs": True},
                {"datastore_id": "2" * 32, "image_sets": "all"},
            ],
        }
    )
    first, second = config.datastores
    assert config.import_jobs.enabled_for(first) and not config.import_jobs.enabled_for(second)
    assert config.import_jobs.window_seconds == 86_400
    assert config.aws.s3_endpoint_url == "http://127.0.0.1:5000"


def test_bad_import_jobs_settings_are_named() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "import_jobs": {"enabled": "yes", "reconcile_seconds": 1, "bogus": 1},
                "datastores": [{"datastore_id": DS, "image_sets": "all", "import_jobs": 1}],
            }
        )
    message = str(caught.value)
    assert "import_jobs.enabled: must be true or false" in message
    assert "import_jobs.reconcile_seconds: must be between 60" in message
    assert "import_jobs.bogus: unknown key" in message
    assert "datastores[0].import_jobs: must be true or false" in message
