"""The per-attempt hook: every HTTP attempt meets the rate budget and is counted by outcome.

It lives with the AWS boundary because it reads botocore's events and parsed answers (retries
included); the metrics it feeds stay in exporter.metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from prometheus_client import Counter

from exporter.aws.errors import classify_error_code
from exporter.budget import RateBudget
from exporter.outcomes import Outcome

SERVICE = "medical-imaging"
# The key every successful answer of an operation carries; its absence means a malformed body.
RESULT_KEYS: dict[str, str | None] = {
    "ListImageSetVersions": "imageSetPropertiesList",
    "SearchImageSets": "imageSetsMetadataSummaries",
    "GetImageSet": "imageSetId",
    "GetDatastore": "datastoreProperties",
    "ListDatastores": None,
    "ListDICOMImportJobs": "jobSummaries",
    "GetDICOMImportJob": "jobProperties",
}


class AttemptObserver(Protocol):
    """Told about every HTTP attempt, retries included (the rate budget and request counters)."""

    def before_attempt(self, operation: str) -> None:
        """Block until the attempt may be sent."""

    def after_attempt(self, operation: str, outcome: Outcome) -> None:
        """Record an attempt's outcome."""


class AttemptCounters(Protocol):
    """The two counters AttemptRecorder feeds (ExporterMetrics has them)."""

    @property
    def api_requests(self) -> Counter:
        """HTTP attempts by operation and outcome."""

    @property
    def budget_wait(self) -> Counter:
        """Seconds waited for the budget, by operation."""


class AttemptRecorder:
    """Connects every AWS attempt to the rate budget and the request counters."""

    def __init__(self, budget: RateBudget, metrics: AttemptCounters) -> None:
        self._budget = budget
        self._metrics = metrics

    def before_attempt(self, operation: str) -> None:
        """Wait for the budget, counting the wait."""
        waited = self._budget.acquire(operation)
        if waited:
            self._metrics.budget_wait.labels(operation).inc(waited)

    def after_attempt(self, operation: str, outcome: Outcome) -> None:
        """Count the attempt and let the budget adapt to throttles."""
        self._metrics.api_requests.labels(operation, outcome.value).inc()
        self._budget.record(operation, throttled=outcome is Outcome.THROTTLED)


def classify_attempt(operation: str, parsed: object, exception: object) -> Outcome:
    """Return the outcome of one HTTP attempt from what botocore made of it."""
    if exception is not None or not isinstance(parsed, Mapping):
        return Outcome.NETWORK_ERROR
    metadata = parsed.get("ResponseMetadata")
    status = metadata.get("HTTPStatusCode") if isinstance(metadata, Mapping) else None
    error = parsed.get("Error")
    if isinstance(error, Mapping) or (isinstance(status, int) and status >= 300):
        code = error.get("Code") if isinstance(error, Mapping) else ""
        return classify_error_code(str(code), status if isinstance(status, int) else None)
    result_key = RESULT_KEYS.get(operation)
    if result_key is not None and result_key not in parsed:
        return Outcome.MALFORMED_RESPONSE
    return Outcome.SUCCESS


def hook_attempts(client: Any, observer: AttemptObserver) -> None:
    """Register the observer on a botocore client's per-attempt events."""

    def before_send(event_name: str, **_: Any) -> None:
        observer.before_attempt(event_name.rsplit(".", 1)[-1])

    def response_received(
        event_name: str, parsed_response: object = None, exception: object = None, **_: Any
    ) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        observer.after_attempt(operation, classify_attempt(operation, parsed_response, exception))

    client.meta.events.register(f"before-send.{SERVICE}", before_send)
    client.meta.events.register(f"response-received.{SERVICE}", response_received)
