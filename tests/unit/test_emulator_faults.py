"""Fault injection and the transport-neutral routes: auth, errors, malformed bodies, counters."""

from __future__ import annotations

import json

import pytest

from exporter.emulator import Backend, Faults, admin, routes
from exporter.emulator.dataset import demo_path
from exporter.emulator.errors import AccessDeniedError, InternalError, ThrottlingError
from exporter.emulator.messages import Request, Response
from exporter.emulator.testing import ManualClock
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET

DS = DEMO_DATASTORE
SET = DEMO_IMAGE_SET
SIGNED = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/medical-imaging/"
    "aws4_request, SignedHeaders=host, Signature=00"
}
LIST_PATH = f"/datastore/{DS}/imageSet/{SET}/listImageSetVersions"


@pytest.fixture
def ticker() -> ManualClock:
    return ManualClock(100.0)


@pytest.fixture
def backend(ticker: ManualClock) -> Backend:
    b = Backend(monotonic=ticker)
    b.load_dataset(demo_path())
    return b


def call(
    b: Backend, method: str, path: str, body: bytes = b"", signed: bool = True, **query: str
) -> Response:
    request = Request(method, path, query, SIGNED if signed else {}, body)
    return (
        admin.dispatch(b, request) if path.startswith(admin.PREFIX) else routes.dispatch(b, request)
    )


def error_type(response: Response) -> str | None:
    return dict(response.headers).get("x-amzn-ErrorType")


def test_quota_is_a_token_bucket_per_operation(backend: Backend, ticker: ManualClock) -> None:
    backend.set_faults(Faults(quota_per_second=5))
    statuses = [call(backend, "POST", LIST_PATH).status for _ in range(7)]
    assert statuses == [200] * 5 + [429, 429]
    assert call(backend, "GET", "/datastore").status == 200, "buckets are per operation"
    ticker.now += 0.2  # one token refilled
    assert [call(backend, "POST", LIST_PATH).status for _ in range(2)] == [200, 429]
    ticker.now += 10  # burst is capped at one second's worth
    assert [call(backend, "POST", LIST_PATH).status for _ in range(6)] == [200] * 5 + [429]


def test_ratios_are_reproducible_with_a_seed(backend: Backend) -> None:
    def run() -> list[int]:
        backend.set_faults(Faults(throttle_ratio=0.3, error_ratio=0.2, seed=42))
        return [call(backend, "GET", "/datastore").status for _ in range(200)]

    first = run()
    assert first == run()
    assert 30 < first.count(429) < 90 and 15 < first.count(500) < 60 and first.count(200) > 60


def test_admit_raises_the_modelled_errors(backend: Backend) -> None:
    backend.set_faults(Faults(throttle_ratio=1.0))
    with pytest.raises(ThrottlingError):
        backend.admit("GetImageSet", DS)
    backend.set_faults(Faults(error_ratio=1.0))
    with pytest.raises(InternalError):
        backend.admit("GetImageSet", DS)
    backend.set_faults(Faults(access_denied_datastores=frozenset({DS})))
    with pytest.raises(AccessDeniedError):
        backend.admit("GetImageSet", DS)
    backend.admit("GetImageSet", "0" * 32)


def test_malformed_responses_count_down(backend: Backend) -> None:
    backend.set_faults(Faults(malformed_responses=2))
    bodies = [call(backend, "POST", LIST_PATH) for _ in range(3)]
    assert [r.status for r in bodies] == [200, 200, 200]
    for bad in bodies[:2]:
        with pytest.raises(json.JSONDecodeError):
            json.loads(bad.body)
    assert json.loads(bodies[2].body)["imageSetPropertiesList"]
    assert backend.faults.malformed_responses == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"throttle_ratio": 1.5}, "throttle_ratio"),
        ({"error_ratio": -0.1}, "error_ratio"),
        ({"latency_seconds": -1}, "latency_seconds"),
        ({"malformed_responses": -1}, "malformed_responses"),
        ({"quota_per_second": 0}, "quota_per_second"),
    ],
)
def test_faults_refuse_nonsense(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Faults(**kwargs)  # type: ignore[arg-type]


def test_faults_dict_round_trip() -> None:
    faults = Faults(throttle_ratio=0.5, access_denied_datastores=frozenset({"b", "a"}), seed=3)
    assert Faults.from_dict(faults.to_dict()) == faults
    with pytest.raises(ValueError, match="unknown"):
        Faults.from_dict({"explode": True})
    with pytest.raises(ValueError, match="number"):
        Faults.from_dict({"throttle_ratio": "high"})


def test_unsigned_request_is_refused_and_counted(backend: Backend) -> None:
    response = call(backend, "POST", LIST_PATH, signed=False)
    assert response.status == 403 and error_type(response) == "MissingAuthenticationTokenException"
    assert json.loads(response.body) == {"message": "Missing Authentication Token"}
    assert backend.request_counts() == {"ListImageSetVersions": 1}


def test_unknown_route_and_wrong_method(backend: Backend) -> None:
    for method, path in [("GET", "/nope"), ("PATCH", f"/datastore/{DS}"), ("GET", LIST_PATH)]:
        response = call(backend, method, path)
        assert response.status == 404 and error_type(response) == "UnknownOperationException"
        assert "message" in json.loads(response.body)
    assert backend.request_counts() == {}


def test_bad_json_body_and_bad_max_results(backend: Backend) -> None:
    search = f"/datastore/{DS}/searchImageSets"
    for body in (b"{not json", b"[1, 2]", b"\xff"):
        response = call(backend, "POST", search, body)
        assert response.status == 400 and error_type(response) == "ValidationException"
    response = call(backend, "POST", search, maxResults="ten")
    assert response.status == 400 and error_type(response) == "ValidationException"


class ExplodingBackend(Backend):
    """A backend whose request path fails unexpectedly."""

    def latency(self) -> float:
        raise RuntimeError("disk on fire")


def test_unexpected_exception_is_a_clean_500(caplog: pytest.LogCaptureFixture) -> None:
    response = call(ExplodingBackend(), "GET", "/datastore")
    assert response.status == 500 and error_type(response) == "InternalServerException"
    assert b"disk on fire" not in response.body and b"Traceback" not in response.body
    assert [r.getMessage() for r in caplog.records] == [
        "ListDatastores failed: RuntimeError: disk on fire"
    ]


def test_admin_routes_without_network(backend: Backend) -> None:
    assert (
        json.loads(call(backend, "GET", "/_emulator/health", signed=False).body)["imageSets"] == 8
    )
    put = call(backend, "PUT", "/_emulator/faults", b'{"throttle_ratio": 2}', signed=False)
    assert put.status == 400 and b"throttle_ratio" in put.body
    missing = call(backend, "POST", f"/_emulator/datastores/{'0' * 32}/generate", b'{"count": 1}')
    assert missing.status == 404 and error_type(missing) == "ResourceNotFoundException"
    wrong_type = call(backend, "POST", f"/_emulator/datastores/{DS}/generate", b'{"count": true}')
    assert wrong_type.status == 400
    assert call(backend, "GET", "/_emulator/nothing").status == 404
