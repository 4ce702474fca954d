"""Every bad answer in tests/data/api/, served over real HTTP to boto3 and the AWS boundary."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.aws import ApiError, ClientFactory, HealthImagingApi, ImageSetSummary
from exporter.config import AwsSettings, DatastoreSettings
from exporter.model import Version
from exporter.outcomes import Outcome
from tests.canned_api import CannedServer, canned_api

DATA = Path(__file__).parent.parent / "data" / "api"
DS = "12345678901234567890123456789012"
IMAGE_SET = "ea92b0d8838c72a3f25d00d13616f87e"
ANSWERS = sorted(DATA.glob("*/*.json"))
LABEL = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def api_for(url: str) -> HealthImagingApi:
    settings = AwsSettings(endpoint_url=url, max_attempts=1)
    return ClientFactory(settings, None, pool_size=2).for_datastore(DatastoreSettings(DS, "all"))


@pytest.fixture(scope="module")
def server() -> Iterator[CannedServer]:
    with canned_api(b"{}") as running:
        yield running


@pytest.fixture(scope="module")
def api(server: CannedServer) -> Iterator[HealthImagingApi]:
    # One client for every answer (building one costs more than the call); the autouse dummy
    # credentials are per test, so the module's client gets its own.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield api_for(server.url)


def call(api: HealthImagingApi, operation: str) -> list[object]:
    if operation == "ListImageSetVersions":
        return list(api.list_image_set_versions(DS, IMAGE_SET))
    return list(api.search_updated(DS, 0.0, 2_000_000_000.0))


def test_there_are_answers_for_both_operations() -> None:
    assert {p.parent.name for p in ANSWERS} == {"ListImageSetVersions", "SearchImageSets"}


@pytest.mark.parametrize("path", ANSWERS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_bad_answer_is_malformed_response_or_a_typed_result(
    path: Path, server: CannedServer, api: HealthImagingApi
) -> None:
    server.respond_with(path.read_bytes())
    try:
        result = call(api, path.parent.name)
    except ApiError as exc:
        assert exc.outcome is Outcome.MALFORMED_RESPONSE, str(exc)
        message = str(exc)
        # One short, printable line: never a 100 KB value, never a lone surrogate.
        assert "\n" not in message and len(message) <= 400 and message.isprintable()
        message.encode("utf-8")
        assert "PATIENT-SECRET" not in message
        assert not path.stem.startswith("ok_"), f"a readable answer was refused: {message}"
        return
    assert path.stem.startswith("ok_"), f"an unreadable answer was accepted: {result!r:.200}"
    if path.parent.name == "ListImageSetVersions":
        assert all(isinstance(v, Version) for v in result)
        ids = [v.version_id for v in result if isinstance(v, Version)]
        assert ids == sorted(set(ids), reverse=True)  # one entry per version id, newest first
        for v in result:
            assert isinstance(v, Version)
            assert LABEL.fullmatch(v.workflow_status) and LABEL.fullmatch(v.image_set_state)
            # Of a message only a bounded code, or `other`, is kept (exporter.reasons).
            assert v.reason is None or v.reason == "other" or LABEL.fullmatch(v.reason)


FIELDS = [
    "imageSetPropertiesList",
    "imageSetsMetadataSummaries",
    "versionId",
    "imageSetState",
    "ImageSetWorkflowStatus",
    "overrides",
    "isPrimary",
    "message",
    "imageSetId",
    "version",
    "updatedAt",
    "createdAt",
    "DICOMTags",
]
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.sampled_from(["\ud800", "²", "1", "ACTIVE", "COPY_FAILED", IMAGE_SET, "yesterday"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), inner, max_size=5),
    ),
    max_leaves=20,
)
answers = st.one_of(
    json_values,
    st.fixed_dictionaries({"imageSetPropertiesList": st.lists(json_values, max_size=3)}),
    st.fixed_dictionaries({"imageSetsMetadataSummaries": st.lists(json_values, max_size=3)}),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers, st.sampled_from(["ListImageSetVersions", "SearchImageSets"]))
def test_any_json_over_http_is_malformed_response_or_a_typed_result(
    server: CannedServer, api: HealthImagingApi, answer: object, operation: str
) -> None:
    # json.dumps writes NaN and Infinity and escapes lone surrogates, as a broken server might.
    server.respond_with(json.dumps(answer).encode())
    try:
        result = call(api, operation)
    except ApiError as exc:
        assert exc.outcome is Outcome.MALFORMED_RESPONSE, str(exc)
        assert str(exc).isprintable() and len(str(exc)) <= 400
        return
    for item in result:
        if isinstance(item, Version):
            assert LABEL.fullmatch(item.workflow_status) and LABEL.fullmatch(item.image_set_state)
        else:
            assert isinstance(item, ImageSetSummary) and item.image_set_id == IMAGE_SET
