"""The AWS boundary offline: clients per region and role, payload parsing, error mapping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.aws import (
    ApiError,
    AttemptRecorder,
    ClientFactory,
    DatastoreProperties,
    HealthImagingApi,
    ImageSetSummary,
    classify_attempt,
    classify_error_code,
    parse_datastore,
    parse_summary,
    parse_version,
    read_search_page,
    read_versions_page,
)
from exporter.aws.errors import UNREADABLE_CODE, one_line, shown
from exporter.aws.parsing import ENUM_VALUE, IDENTIFIER
from exporter.budget import RateBudget
from exporter.config import AwsSettings, DatastoreSettings
from exporter.metrics.own import ExporterMetrics
from exporter.model import Version
from exporter.outcomes import API_OUTCOMES, Outcome

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


# --- The boundary is total: whatever JSON arrives, typed data or malformed_response ------------

IMAGE_SET = "ea92b0d8838c72a3f25d00d13616f87e"
T = TypeVar("T")


def entry(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"versionId": "1", "imageSetState": "ACTIVE"}
    base.update(fields)
    return base


def refused(parse: object, answer: object) -> ApiError:
    assert callable(parse)
    with pytest.raises(ApiError) as caught:
        parse(answer)
    assert caught.value.outcome is Outcome.MALFORMED_RESPONSE
    message = str(caught.value)
    assert message.isprintable() and len(message) <= 200
    return caught.value


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"versionId": "²"}, "versionId"),  # isdigit() says yes, int() says no
        ({"versionId": "\uff11"}, "versionId"),  # a full-width digit: int() would take it
        ({"versionId": "9" * 19}, "versionId"),  # beyond the store's 64-bit integers
        ({"versionId": float("nan")}, "versionId"),
        ({"ImageSetWorkflowStatus": "\ud800"}, "ImageSetWorkflowStatus"),
        ({"ImageSetWorkflowStatus": "A" * 100_000}, "ImageSetWorkflowStatus"),
        ({"ImageSetWorkflowStatus": "copy failed"}, "ImageSetWorkflowStatus"),
        ({"imageSetState": "X" * 65}, "imageSetState"),
        ({"overrides": "forced"}, "overrides"),
        ({"overrides": {"forced": "yes"}}, "overrides.forced"),
        ({"isPrimary": 1}, "isPrimary"),
        ({"message": {"text": "x"}}, "message"),
    ],
)
def test_hostile_version_fields_are_malformed_naming_the_field(
    fields: dict[str, object], named: str
) -> None:
    error = refused(parse_version, entry(**fields))
    assert named in str(error)
    assert "AAAAAAAAAA" * 10 not in str(error)  # a 100 KB value is never repeated in full


@pytest.mark.parametrize(
    "page",
    [
        [],
        None,
        "imageSetPropertiesList",
        {"imageSetPropertiesList": {"versionId": "1"}},
        {"imageSetPropertiesList": "abc"},
        {"imageSetPropertiesList": None},
        {"imageSetPropertiesList": [None]},
        {"imageSetPropertiesList": [entry()], "nextToken": 5},
        {"imageSetPropertiesList": [entry()], "nextToken": "t" * 8193},
        {"Error": {"Code": UNREADABLE_CODE, "Message": "the answer could not be parsed"}},
    ],
)
def test_unreadable_version_pages_are_malformed(page: object) -> None:
    refused(read_versions_page, page)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"imageSetId": "../../../etc/passwd"}, "imageSetId"),
        ({"imageSetId": "a" * 10_240}, "imageSetId"),
        ({"imageSetId": IMAGE_SET.upper()}, "imageSetId"),
        ({"imageSetId": None}, "imageSetId"),
        ({"updatedAt": "yesterday"}, "updatedAt"),
        ({"updatedAt": 1e300}, "updatedAt"),
        ({"updatedAt": float("nan")}, "updatedAt"),
        ({"createdAt": -1}, "createdAt"),
        ({"createdAt": 10**400}, "createdAt"),
        ({"version": 10**30}, "version"),
        ({"version": True}, "version"),
    ],
)
def test_hostile_search_hits_are_malformed_naming_the_field(
    fields: dict[str, object], named: str
) -> None:
    item: dict[str, object] = {"imageSetId": IMAGE_SET, "DICOMTags": {"DICOMPatientId": "P-1"}}
    item.update(fields)
    error = refused(parse_summary, item)
    assert named in str(error) and "P-1" not in str(error)
    assert len(str(error)) < 200


def test_a_search_hit_keeps_no_dicom_data() -> None:
    hits, token = read_search_page(
        {
            "imageSetsMetadataSummaries": [
                {"imageSetId": IMAGE_SET, "version": 3, "updatedAt": 5.0, "DICOMTags": {"x": 1}}
            ],
            "nextToken": "abc",
        }
    )
    assert hits == [ImageSetSummary(IMAGE_SET, 3, 5.0, None)] and token == "abc"


def test_a_lone_surrogate_in_a_message_gives_a_plain_reason() -> None:
    failed = "COPY_FAILED"
    version = parse_version(
        entry(ImageSetWorkflowStatus=failed, message="bad \udc80 series\n" + "x" * 5000)
    )
    assert version.reason == "other"
    coded = parse_version(
        entry(ImageSetWorkflowStatus=failed, message="BAD_THING: \udc80" + "x" * 5000)
    )
    assert coded.reason == "BAD_THING"


def test_shown_values_are_short_printable_ascii() -> None:
    assert shown("\ud800" * 50).isascii() and len(shown("A" * 100_000)) == 40
    assert one_line("a\n\tb\x00c") == "a b c"


def test_outcomes_come_from_the_enum() -> None:
    assert ApiError("timeout", "x").outcome is Outcome.TIMEOUT
    with pytest.raises(ValueError):
        ApiError("no_such_outcome", "x")


# Arbitrary JSON, as botocore's JSON parser can hand it on: NaN and infinities, huge integers,
# lone surrogates, and objects whose keys are the fields the parsers read.
FIELDS = [
    "imageSetPropertiesList",
    "imageSetsMetadataSummaries",
    "nextToken",
    "versionId",
    "imageSetState",
    "ImageSetWorkflowStatus",
    "overrides",
    "forced",
    "isPrimary",
    "message",
    "imageSetId",
    "version",
    "updatedAt",
    "createdAt",
    "Error",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["\ud800", "x\udc80", "²", "\uff11", "1", "42", "ACTIVE", "COPY_FAILED", IMAGE_SET]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=6),
    ),
    max_leaves=30,
)


def check_typed_versions(versions: object) -> None:
    assert isinstance(versions, list)
    for version in versions:
        assert isinstance(version, Version)
        assert 0 <= version.version_id < 10**18
        assert ENUM_VALUE.fullmatch(version.workflow_status)
        assert ENUM_VALUE.fullmatch(version.image_set_state)
        assert (
            version.reason is None
            or version.reason == "other"
            or ENUM_VALUE.fullmatch(version.reason)
        )
        assert version.changed_at is None or 0 <= version.changed_at < 253_402_300_800.0


def typed_or_malformed(read: Callable[[object], T], answer: object) -> T | None:
    """Return what `read` makes of the answer, or None if it refused it the one allowed way."""
    try:
        return read(answer)
    except ApiError as exc:
        assert exc.outcome is Outcome.MALFORMED_RESPONSE
        assert str(exc).isprintable() and len(str(exc)) <= 200
        return None


@settings(max_examples=600, deadline=None)
@given(json_values)
def test_any_json_is_a_typed_result_or_malformed(answer: object) -> None:
    page = typed_or_malformed(read_versions_page, answer)
    if page is not None:
        check_typed_versions(page[0])
        assert page[1] is None or (page[1].isascii() and len(page[1]) <= 8192)
    found = typed_or_malformed(read_search_page, answer)
    if found is not None:
        assert all(IDENTIFIER.fullmatch(hit.image_set_id) for hit in found[0])
    version = typed_or_malformed(parse_version, answer)
    if version is not None:
        check_typed_versions([version])
    datastore = typed_or_malformed(parse_datastore, answer)
    if datastore is not None:
        assert IDENTIFIER.fullmatch(datastore.datastore_id)
        assert ENUM_VALUE.fullmatch(datastore.status)
    summary = typed_or_malformed(parse_summary, answer)
    if summary is not None:
        assert IDENTIFIER.fullmatch(summary.image_set_id)
        for stamp in (summary.updated_at, summary.created_at):
            assert stamp is None or 0 <= stamp < 253_402_300_800


version_entries = st.fixed_dictionaries(
    {
        "versionId": st.one_of(st.sampled_from(["1", "2", "3", "²", "x"]), json_values),
        "imageSetState": st.one_of(st.sampled_from(["ACTIVE", "LOCKED"]), json_values),
    },
    optional={
        "ImageSetWorkflowStatus": st.one_of(st.sampled_from(["COPIED", "COPY_FAILED"]), scalars),
        "overrides": st.one_of(st.fixed_dictionaries({"forced": scalars}), scalars),
        "isPrimary": scalars,
        "message": scalars,
    },
)


@settings(max_examples=600, deadline=None)
@given(st.lists(version_entries, max_size=6), st.one_of(st.none(), scalars))
def test_near_valid_version_pages_are_typed_or_malformed(
    entries: list[object], token: object
) -> None:
    try:
        versions, _ = read_versions_page({"imageSetPropertiesList": entries, "nextToken": token})
    except ApiError as exc:
        assert exc.outcome is Outcome.MALFORMED_RESPONSE
        return
    check_typed_versions(versions)


# --- The per-attempt hook ----------------------------------------------------------------------


def test_attempt_classification_covers_unreadable_answers() -> None:
    unreadable = {"Error": {"Code": UNREADABLE_CODE}, "ResponseMetadata": {"HTTPStatusCode": 200}}
    assert classify_attempt("ListImageSetVersions", unreadable, None) is Outcome.MALFORMED_RESPONSE
    throttled = {"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {}}
    assert classify_attempt("SearchImageSets", throttled, None) is Outcome.THROTTLED
    assert classify_attempt("SearchImageSets", None, OSError()) is Outcome.NETWORK_ERROR
    missing = {"ResponseMetadata": {"HTTPStatusCode": 200}}
    assert classify_attempt("SearchImageSets", missing, None) is Outcome.MALFORMED_RESPONSE
    assert classify_attempt("ListDatastores", missing, None) is Outcome.SUCCESS


def test_attempt_recorder_counts_by_outcome_and_slows_down_on_throttles() -> None:
    metrics = ExporterMetrics(CollectorRegistry())
    budget = RateBudget({"SearchImageSets": 10.0}, clock=lambda: 0.0, sleep=lambda s: None)
    recorder = AttemptRecorder(budget, metrics)
    recorder.before_attempt("SearchImageSets")
    recorder.after_attempt("SearchImageSets", Outcome.THROTTLED)
    recorder.after_attempt("SearchImageSets", Outcome.MALFORMED_RESPONSE)
    counted = metrics.api_requests.labels("SearchImageSets", "throttled")._value.get()
    assert counted == 1
    assert metrics.api_requests.labels("SearchImageSets", "malformed_response")._value.get() == 1
    assert budget.rates()["SearchImageSets"] < 10.0


def test_every_outcome_is_documented_in_the_metrics_reference() -> None:
    text = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    for outcome in Outcome:
        assert f"| `{outcome.value}` |" in text, outcome
    assert set(API_OUTCOMES) < set(Outcome)


DATASTORE_ID = "d" * 32


def datastore_answer(**fields: object) -> dict[str, object]:
    properties: dict[str, object] = {
        "datastoreId": DATASTORE_ID,
        "datastoreName": "radiology/prod#1",
        "datastoreStatus": "ACTIVE",
        "datastoreArn": f"arn:aws:medical-imaging:us-east-1:123456789012:datastore/{DATASTORE_ID}",
        "createdAt": datetime(2024, 1, 1, tzinfo=UTC),
        "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/x",
    }
    properties.update(fields)
    return {"datastoreProperties": properties}


def test_parse_datastore_keeps_id_name_and_status() -> None:
    assert parse_datastore(datastore_answer()) == DatastoreProperties(
        DATASTORE_ID, "radiology/prod#1", "ACTIVE"
    )
    # a status of a newer API, well formed, is passed through
    assert parse_datastore(datastore_answer(datastoreStatus="ARCHIVED")).status == "ARCHIVED"


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({}, "datastoreProperties is missing"),
        ({"datastoreProperties": []}, "datastoreProperties is a list"),
        ([], "the answer is a list"),
        ({"Error": {"Message": "the answer could not be parsed: x"}}, "could not be parsed"),
        (datastore_answer(datastoreId="D" * 32), "datastoreId"),
        (datastore_answer(datastoreId=None), "datastoreId"),
        (datastore_answer(datastoreName=""), "datastoreName"),
        (datastore_answer(datastoreName="a" * 257), "datastoreName"),
        (datastore_answer(datastoreName="patient name"), "datastoreName"),
        (datastore_answer(datastoreName=7), "datastoreName"),
        (datastore_answer(datastoreStatus=None), "datastoreStatus is missing"),
        (datastore_answer(datastoreStatus="active"), "datastoreStatus"),
        (datastore_answer(datastoreStatus=["ACTIVE"]), "datastoreStatus"),
    ],
)
def test_malformed_datastore_answers_name_the_field(answer: object, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_datastore(answer)
    assert caught.value.outcome is Outcome.MALFORMED_RESPONSE
    assert field in str(caught.value)


class OneAnswer:
    """A stand-in boto3 client whose get_datastore returns one answer."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def get_datastore(self, *, datastoreId: str) -> object:
        self.asked.append(datastoreId)
        return self.answer


def test_get_datastore_refuses_an_answer_about_another_data_store() -> None:
    client = OneAnswer(datastore_answer(datastoreId="e" * 32))
    with pytest.raises(ApiError) as caught:
        HealthImagingApi(client).get_datastore(DATASTORE_ID)
    assert caught.value.outcome is Outcome.MALFORMED_RESPONSE
    assert str(caught.value).startswith(f"GetDatastore data store {DATASTORE_ID}: ")
    ok = OneAnswer(datastore_answer())
    assert HealthImagingApi(ok).get_datastore(DATASTORE_ID).name == "radiology/prod#1"
    assert ok.asked == [DATASTORE_ID]


def test_get_datastore_respects_the_deadline() -> None:
    client = OneAnswer(datastore_answer())
    api = HealthImagingApi(client, monotonic=lambda: 100.0)
    with pytest.raises(ApiError) as caught:
        api.get_datastore(DATASTORE_ID, deadline=50.0)
    assert caught.value.outcome is Outcome.TIMEOUT and client.asked == []
