"""Paging through botocore's paginators over real HTTP: bounded by pages, deadline and repeats."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from itertools import count

import pytest

from exporter.aws import ApiError, AttemptObserver, ClientFactory, HealthImagingApi
from exporter.aws.client import MAX_SEARCH_PAGES, MAX_VERSION_PAGES
from exporter.config import AwsSettings, DatastoreSettings
from exporter.outcomes import Outcome
from tests.canned_api import Answer, canned_api

DS = "12345678901234567890123456789012"
IMAGE_SET = "ea92b0d8838c72a3f25d00d13616f87e"


def version_page(version_id: int, token: str | None) -> bytes:
    entry = {"imageSetId": IMAGE_SET, "versionId": str(version_id), "imageSetState": "ACTIVE"}
    body: dict[str, object] = {"imageSetPropertiesList": [entry]}
    if token is not None:
        body["nextToken"] = token
    return json.dumps(body).encode()


def search_page(token: str | None) -> bytes:
    body: dict[str, object] = {"imageSetsMetadataSummaries": [{"imageSetId": IMAGE_SET}]}
    if token is not None:
        body["nextToken"] = token
    return json.dumps(body).encode()


def tokens(next_token: Callable[[int], str | None], page: Callable[..., bytes]) -> Answer:
    """Answer request n (from 1) with a page whose nextToken is next_token(n)."""
    numbers = count(1)
    lock = threading.Lock()

    def answer(method: str, path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        with lock:
            n = next(numbers)
        if page is version_page:
            return 200, version_page(n, next_token(n))
        return 200, page(next_token(n))

    return answer


def api_for(
    url: str,
    observer: AttemptObserver | None = None,
    max_version_pages: int = MAX_VERSION_PAGES,
    max_search_pages: int = MAX_SEARCH_PAGES,
    monotonic: Callable[[], float] = time.monotonic,
) -> HealthImagingApi:
    """A HealthImagingApi on the factory's real client, with test-sized bounds and clock."""
    factory = ClientFactory(AwsSettings(endpoint_url=url, max_attempts=2), observer, pool_size=2)
    client = factory.for_datastore(DatastoreSettings(DS, "all"))._client
    return HealthImagingApi(
        client,
        max_version_pages=max_version_pages,
        max_search_pages=max_search_pages,
        monotonic=monotonic,
    )


def test_a_token_that_never_repeats_stops_at_the_page_bound() -> None:
    with canned_api(tokens(lambda n: f"token-{n}", version_page)) as server:
        api = api_for(server.url, max_version_pages=25)
        with pytest.raises(ApiError) as caught:
            api.list_image_set_versions(DS, IMAGE_SET)
        assert caught.value.outcome is Outcome.MALFORMED_RESPONSE
        assert "more than 25 pages" in str(caught.value)
        assert server.requests == 25


def test_search_pages_are_bounded_too() -> None:
    with canned_api(tokens(lambda n: f"token-{n}", search_page)) as server:
        api = api_for(server.url, max_search_pages=7)
        with pytest.raises(ApiError) as caught:
            list(api.search_updated(DS, 0.0, 10.0))
        assert caught.value.outcome is Outcome.MALFORMED_RESPONSE
        assert server.requests == 7


def test_the_default_bounds_are_finite_and_generous() -> None:
    assert 100 <= MAX_VERSION_PAGES <= 10_000 and 100 <= MAX_SEARCH_PAGES <= 10_000


@pytest.mark.parametrize(
    ("sequence", "requests"),
    [
        (["a", "a"], 2),  # in a row: botocore's own check would catch it too
        (["a", "b", "a", "b"], 3),  # a cycle botocore does not notice
    ],
)
def test_a_repeated_token_is_malformed(sequence: list[str], requests: int) -> None:
    answer = tokens(lambda n: sequence[(n - 1) % len(sequence)], version_page)
    with canned_api(answer) as server:
        with pytest.raises(ApiError) as caught:
            api_for(server.url).list_image_set_versions(DS, IMAGE_SET)
        assert caught.value.outcome is Outcome.MALFORMED_RESPONSE
        assert "repeats" in str(caught.value)
        assert server.requests == requests


def test_a_listing_across_pages_is_joined_newest_first() -> None:
    answer = tokens(lambda n: f"t{n}" if n < 4 else None, version_page)
    with canned_api(answer) as server:
        versions = api_for(server.url).list_image_set_versions(DS, IMAGE_SET)
        assert [v.version_id for v in versions] == [4, 3, 2, 1]
        # The paginator asks for pages of 50 and sends each token back.
        assert server.requests == 4


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_paging_stops_at_the_deadline_with_timeout() -> None:
    clock = FakeClock()

    def answer(method: str, path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        clock.now += 1.0  # each page takes a second of the fake clock
        return 200, version_page(int(clock.now), f"t{clock.now}")

    with canned_api(answer) as server:
        api = api_for(server.url, monotonic=clock)
        with pytest.raises(ApiError) as caught:
            api.list_image_set_versions(DS, IMAGE_SET, deadline=103.5)
        assert caught.value.outcome is Outcome.TIMEOUT
        assert server.requests == 4  # at 100, 101, 102 and 103; not at 104
        with pytest.raises(ApiError) as caught:
            list(api.search_updated(DS, 0.0, 1.0, deadline=clock.now))
        assert caught.value.outcome is Outcome.TIMEOUT
        with pytest.raises(ApiError):
            api.search_page(DS, 0.0, 1.0, None, deadline=clock.now)
        assert server.requests == 4  # nothing sent after the deadline


def test_search_page_is_one_call_that_sends_the_saved_token_back() -> None:
    seen: list[list[str]] = []

    def answer(method: str, path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        seen.append(query.get("nextToken", []))
        return 200, search_page("service-token-2")

    with canned_api(answer) as server:
        hits, token = api_for(server.url).search_page(DS, 0.0, 10.0, "service-token-1")
        assert [h.image_set_id for h in hits] == [IMAGE_SET] and token == "service-token-2"
        assert seen == [["service-token-1"]]


class Attempts:
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, Outcome]] = []

    def before_attempt(self, operation: str) -> None:
        pass

    def after_attempt(self, operation: str, outcome: Outcome) -> None:
        self.outcomes.append((operation, outcome))


def test_an_unparseable_answer_is_one_counted_attempt_and_malformed() -> None:
    attempts = Attempts()
    entry = {"versionId": "1", "imageSetState": "ACTIVE", "updatedAt": "yesterday"}
    body = json.dumps({"imageSetPropertiesList": [entry]}).encode()
    with canned_api(body) as server:
        with pytest.raises(ApiError) as caught:
            api_for(server.url, attempts).list_image_set_versions(DS, IMAGE_SET)
        assert caught.value.outcome is Outcome.MALFORMED_RESPONSE
        assert "could not be parsed" in str(caught.value)
    # Not retried (the same body would come back), and counted like any other attempt.
    assert attempts.outcomes == [("ListImageSetVersions", Outcome.MALFORMED_RESPONSE)]


def test_a_garbage_5xx_is_still_a_retried_server_error() -> None:
    attempts = Attempts()

    def answer(method: str, path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        return 503, b"[[[" * 2000

    with canned_api(answer) as server:
        with pytest.raises(ApiError) as caught:
            api_for(server.url, attempts).list_image_set_versions(DS, IMAGE_SET)
        assert caught.value.outcome is Outcome.SERVER_ERROR
        assert server.requests == 2  # max_attempts
    assert [o for _, o in attempts.outcomes] == [Outcome.SERVER_ERROR] * 2
