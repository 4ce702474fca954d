"""The AWS boundary offline: clients per region and role, payload parsing, error mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exporter.aws import ApiError, ClientFactory, classify_error_code, parse_version
from exporter.config import AwsSettings, DatastoreSettings

DS = DatastoreSettings("d" * 32, ("i" * 32,))


def test_one_client_per_region_and_role_with_overrides() -> None:
    factory = ClientFactory(AwsSettings(region="us-east-1"), None, pool_size=4)
    home = factory.for_datastore(DS)
    assert home is factory.for_datastore(DatastoreSettings("e" * 32, "all"))
    away = factory.for_datastore(DatastoreSettings("f" * 32, "all", region="eu-west-1"))
    assert away is not home
    assert away._client.meta.region_name == "eu-west-1"
    # No explicit endpoint: the real service host, with the runtime- prefix botocore adds.
    assert away._client.meta.config.inject_host_prefix is True
    assert away._client.meta.endpoint_url == "https://medical-imaging.eu-west-1.amazonaws.com"


def test_explicit_endpoint_turns_host_prefix_off() -> None:
    factory = ClientFactory(AwsSettings(endpoint_url="http://127.0.0.1:4566"), None, pool_size=4)
    client = factory.for_datastore(DS)._client
    assert client.meta.config.inject_host_prefix is False
    assert client.meta.endpoint_url == "http://127.0.0.1:4566"
    assert client.meta.config.retries["total_max_attempts"] == 5


def test_role_is_assumed_lazily_with_the_exporters_session_name() -> None:
    role = "arn:aws:iam::123456789012:role/healthimaging-exporter"
    factory = ClientFactory(AwsSettings(), None, pool_size=4)
    client = factory.for_datastore(DatastoreSettings("d" * 32, "all", role_arn=role))._client
    credentials = client._request_signer._credentials
    # Deferred: nothing is asked of STS until the first call, and then refreshed before expiry.
    assert credentials.method == "assume-role"
    assert credentials._refresh_using.__self__._role_arn == role
    assert credentials._refresh_using.__self__._role_session_name == "healthimaging-exporter"


def test_parse_version_keeps_every_field_but_dicom() -> None:
    version = parse_version(
        {
            "imageSetId": "i" * 32,
            "versionId": "2",
            "imageSetState": "ACTIVE",
            "ImageSetWorkflowStatus": "COPY_FAILED",
            "createdAt": 1680027126.436,
            "updatedAt": 1680027455.944,
            "message": "INVALID_REQUEST:  Series\nof X don't match.",
            "overrides": {"forced": True},
            "isPrimary": False,
        }
    )
    assert (version.version_id, version.workflow_status, version.forced, version.is_primary) == (
        2,
        "COPY_FAILED",
        True,
        False,
    )
    assert version.reason == "INVALID_REQUEST"  # the code only: the message stops here


@pytest.mark.parametrize(
    "item",
    [
        "not an object",
        {"versionId": "x", "imageSetState": "ACTIVE"},
        {"versionId": "1"},
        {"versionId": None, "imageSetState": "ACTIVE"},
    ],
)
def test_malformed_entries_are_api_errors(item: object) -> None:
    with pytest.raises(ApiError) as caught:
        parse_version(item)
    assert caught.value.outcome == "malformed_response"
    assert "\n" not in str(caught.value)


def test_missing_workflow_status_is_passed_through_as_unknown() -> None:
    assert parse_version({"versionId": "1", "imageSetState": "LOCKED"}).workflow_status == "UNKNOWN"


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        ("ThrottlingException", 429, "throttled"),
        ("AccessDeniedException", 403, "access_denied"),
        ("ResourceNotFoundException", 404, "not_found"),
        ("ValidationException", 400, "validation_error"),
        ("InternalServerException", 500, "server_error"),
        ("ConflictException", 409, "validation_error"),
        ("SomethingNew", 503, "server_error"),
    ],
)
def test_error_codes_map_to_outcomes(code: str, status: int, outcome: str) -> None:
    assert classify_error_code(code, status) == outcome


def test_in_progress_version_keeps_when_it_entered_its_status() -> None:
    created = datetime(2023, 3, 28, 18, 12, 6, 436000, tzinfo=UTC)  # botocore gives datetimes
    updated = datetime(2023, 3, 28, 18, 50, 36, 304000, tzinfo=UTC)
    item = {
        "versionId": "3",
        "imageSetState": "LOCKED",
        "ImageSetWorkflowStatus": "COPYING",
        "createdAt": created,
        "updatedAt": updated,
    }
    version = parse_version(item)
    assert version.started_at == updated.timestamp() == version.changed_at
    assert parse_version({**item, "updatedAt": None}).started_at == created.timestamp()
    assert version.settled() is version  # kept as it is
    # Any other status keeps no timestamp past its first diff: the listing's is transient.
    done = parse_version({**item, "ImageSetWorkflowStatus": "COPIED"})
    assert done.started_at is None and done.changed_at == updated.timestamp()
    assert done.settled().changed_at is None


def test_a_garbled_timestamp_costs_the_age_not_the_listing() -> None:
    item = {"versionId": "3", "imageSetState": "ACTIVE", "ImageSetWorkflowStatus": "UPDATING"}
    for bad in ("yesterday", float("nan"), True, {"a": 1}):
        version = parse_version({**item, "updatedAt": bad})
        assert version.started_at is None and version.workflow_status == "UPDATING"


def test_failed_version_keeps_only_the_code_of_its_message() -> None:
    item = {
        "versionId": "2",
        "imageSetState": "ACTIVE",
        "ImageSetWorkflowStatus": "COPY_FAILED",
        "message": "INVALID_REQUEST:  Series of SourceImageSet and DestinationImageSet "
        "don't match.",
    }
    version = parse_version(item)
    assert version.reason == "INVALID_REQUEST" and version.started_at is None
    assert parse_version({**item, "message": "Series did not match"}).reason == "other"
    # A message on a version that did not fail gives no reason.
    assert parse_version({**item, "ImageSetWorkflowStatus": "COPIED"}).reason is None
