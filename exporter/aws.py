"""The AWS boundary: boto3 clients for HealthImaging, returning dataclasses without DICOM data."""

from __future__ import annotations

import logging
import math
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import boto3
import botocore.exceptions
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

from exporter import __version__
from exporter.config import AwsSettings, DatastoreSettings
from exporter.model import FAILURE_STATUSES, Version
from exporter.reasons import reason_code

log = logging.getLogger(__name__)

SERVICE = "medical-imaging"
SESSION_NAME = "healthimaging-exporter"
OUTCOMES = (
    "success",
    "throttled",
    "access_denied",
    "not_found",
    "validation_error",
    "server_error",
    "network_error",
    "malformed_response",
)
# The key every successful response of an operation carries; its absence means a malformed body.
RESULT_KEYS = {
    "ListImageSetVersions": "imageSetPropertiesList",
    "SearchImageSets": "imageSetsMetadataSummaries",
    "GetImageSet": "imageSetId",
    "GetDatastore": "datastoreProperties",
    "ListDatastores": None,
}
_THROTTLE_CODES = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
_DENIED_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "MissingAuthenticationTokenException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "ExpiredToken",
    }
)


# botocore logs whole request and response bodies at DEBUG: search results carry patient data
# and requests carry signed headers. Whoever configures logging, these stay at WARNING.
PAYLOAD_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


def silence_payload_logging() -> None:
    """Keep the AWS SDK's loggers, which log payloads at DEBUG, at WARNING or above."""
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING or logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


class ApiError(Exception):
    """A HealthImaging call failed; `outcome` is one of OUTCOMES, the message one line."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class AttemptObserver(Protocol):
    """Told about every HTTP attempt, retries included (the rate budget and request counters)."""

    def before_attempt(self, operation: str) -> None:
        """Block until the attempt may be sent."""

    def after_attempt(self, operation: str, outcome: str) -> None:
        """Record an attempt's outcome."""


@dataclass(frozen=True, slots=True)
class ImageSetSummary:
    """A search hit reduced to what change detection needs: no DICOM tags, ever."""

    image_set_id: str
    version: int | None
    updated_at: float | None
    created_at: float | None


def classify_error_code(code: str, status: int | None) -> str:
    """Map an AWS error code and HTTP status to an outcome."""
    if code in _THROTTLE_CODES or status == 429:
        return "throttled"
    if code in _DENIED_CODES or status == 403:
        return "access_denied"
    if code == "ResourceNotFoundException" or status == 404:
        return "not_found"
    if status is not None and status >= 500:
        return "server_error"
    return "validation_error"


def _classify_attempt(operation: str, parsed: Mapping[str, Any] | None, exception: object) -> str:
    if exception is not None or parsed is None:
        return "network_error"
    status = parsed.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if "Error" in parsed or (isinstance(status, int) and status >= 300):
        return classify_error_code(str(parsed.get("Error", {}).get("Code", "")), status)
    result_key = RESULT_KEYS.get(operation)
    if result_key is not None and result_key not in parsed:
        return "malformed_response"
    return "success"


def _one_line(text: object, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _timestamp(value: object) -> float | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ApiError("malformed_response", f"timestamp is not a date: {_one_line(value, 40)}")


def parse_version(item: object) -> Version:
    """Turn one ImageSetProperties entry into a Version; raise ApiError if it is malformed."""
    if not isinstance(item, Mapping):
        raise ApiError("malformed_response", "image set properties entry is not an object")
    version_id = item.get("versionId")
    state = item.get("imageSetState")
    if not isinstance(version_id, str) or not version_id.isdigit():
        raise ApiError(
            "malformed_response", f"versionId is not a number: {_one_line(version_id, 40)}"
        )
    if not isinstance(state, str) or not state:
        raise ApiError("malformed_response", "imageSetState is missing")
    # A version written before workflow statuses existed has none; say so rather than drop it.
    status = item.get("ImageSetWorkflowStatus") or "UNKNOWN"
    overrides = item.get("overrides") or {}
    primary = item.get("isPrimary")
    message = item.get("message")
    # issue 12: when the version last changed (updatedAt is when it entered its status), kept
    # past the diff only while in progress; a garbled one costs that age, not the whole list.
    changed_at = _lenient_timestamp(item.get("updatedAt"))
    if changed_at is None:
        changed_at = _lenient_timestamp(item.get("createdAt"))
    return Version(
        version_id=int(version_id),
        # Interned: a handful of distinct values shared by every version in memory.
        workflow_status=sys.intern(str(status)),
        image_set_state=sys.intern(state),
        forced=bool(isinstance(overrides, Mapping) and overrides.get("forced")),
        is_primary=primary if isinstance(primary, bool) else None,
        changed_at=changed_at,
        reason=reason_code(message) if status in FAILURE_STATUSES else None,
    )


def _lenient_timestamp(value: object) -> float | None:
    try:
        return _timestamp(value)
    except (ApiError, TypeError, ValueError, OverflowError):
        return None


def _summary(item: object) -> ImageSetSummary:
    if not isinstance(item, Mapping) or not isinstance(item.get("imageSetId"), str):
        raise ApiError("malformed_response", "search result without an imageSetId")
    version = item.get("version")
    # DICOMTags are deliberately not read: patient data never crosses this boundary.
    return ImageSetSummary(
        image_set_id=item["imageSetId"],
        version=version if isinstance(version, int) and not isinstance(version, bool) else None,
        updated_at=_timestamp(item.get("updatedAt")),
        created_at=_timestamp(item.get("createdAt")),
    )


class HealthImagingApi:
    """A thin, typed wrapper around one boto3 medical-imaging client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def _call(self, operation: str, **params: Any) -> Mapping[str, Any]:
        method = getattr(self._client, _snake(operation))
        try:
            response: Mapping[str, Any] = method(**params)
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(error.get("Code", "Unknown"))
            outcome = classify_error_code(code, status)
            raise ApiError(
                outcome, f"{operation}: {code}: {_one_line(error.get('Message', ''))}"
            ) from None
        except botocore.exceptions.NoCredentialsError:
            raise ApiError("access_denied", f"{operation}: no AWS credentials found") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ApiError("network_error", f"{operation}: {_one_line(exc)}") from None
        result_key = RESULT_KEYS.get(operation)
        if result_key is not None and result_key not in response:
            raise ApiError("malformed_response", f"{operation}: response has no {result_key}")
        return response

    def _page(
        self, operation: str, params: Mapping[str, Any], token: str | None
    ) -> tuple[list[Any], str | None]:
        """Call one page of a paginated operation; return its items and the next token."""
        page = self._call(operation, **params, **({"nextToken": token} if token else {}))
        items = page[RESULT_KEYS[operation] or ""]
        if not isinstance(items, list):
            raise ApiError("malformed_response", f"{operation}: results are not a list")
        next_token = page.get("nextToken")
        return items, next_token if next_token else None

    def _pages(self, operation: str, params: Mapping[str, Any]) -> Iterator[list[Any]]:
        """Yield every page's items, following nextToken; a token that repeats is an error."""
        token: str | None = None
        seen: set[str] = set()
        while True:
            items, token = self._page(operation, params, token)
            yield items
            if token is None:
                return
            if token in seen:
                raise ApiError("malformed_response", f"{operation}: nextToken repeats")
            seen.add(token)

    def list_image_set_versions(self, datastore_id: str, image_set_id: str) -> tuple[Version, ...]:
        """Return every version of an image set, newest first, following nextToken."""
        params = {"datastoreId": datastore_id, "imageSetId": image_set_id, "maxResults": 50}
        versions = [
            parse_version(item)
            for items in self._pages("ListImageSetVersions", params)
            for item in items
        ]
        versions.sort(key=lambda v: v.version_id, reverse=True)
        return tuple(versions)

    @staticmethod
    def _search_params(datastore_id: str, since: float, until: float) -> dict[str, Any]:
        # botocore sends these timestamps as whole seconds: round the window outward, or
        # whatever changed in the current second would be missed.
        bounds = [{"updatedAt": math.floor(since)}, {"updatedAt": math.ceil(until)}]
        return {
            "datastoreId": datastore_id,
            "maxResults": 50,
            "searchCriteria": {
                "filters": [{"values": bounds, "operator": "BETWEEN"}],
                "sort": {"sortField": "updatedAt", "sortOrder": "ASC"},
            },
        }

    def search_page(
        self, datastore_id: str, since: float, until: float, token: str | None = None
    ) -> tuple[list[ImageSetSummary], str | None]:
        """Return one page of image sets updated in [since, until], oldest first, and its token."""
        params = self._search_params(datastore_id, since, until)
        items, next_token = self._page("SearchImageSets", params, token)
        return [_summary(item) for item in items], next_token

    def search_updated(
        self, datastore_id: str, since: float, until: float
    ) -> Iterator[ImageSetSummary]:
        """Yield image sets whose updatedAt lies in [since, until], oldest update first."""
        params = self._search_params(datastore_id, since, until)
        for items in self._pages("SearchImageSets", params):
            yield from (_summary(item) for item in items)


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")


class ClientFactory:
    """Builds one client per (region, role) pair and hooks the attempt observer into each."""

    def __init__(
        self, settings: AwsSettings, observer: AttemptObserver | None, pool_size: int
    ) -> None:
        silence_payload_logging()
        self._settings = settings
        self._observer = observer
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._apis: dict[tuple[str, str | None], HealthImagingApi] = {}
        self._base_session: boto3.Session | None = None

    def for_datastore(self, datastore: DatastoreSettings) -> HealthImagingApi:
        """Return the API client for a data store, honouring its region and role overrides."""
        region = datastore.region or self._settings.region
        role = datastore.role_arn or self._settings.role_arn
        with self._lock:
            api = self._apis.get((region, role))
            if api is None:
                api = HealthImagingApi(self._create_client(region, role))
                self._apis[(region, role)] = api
            return api

    def _session(self, region: str, role_arn: str | None) -> boto3.Session:
        if self._base_session is None:
            self._base_session = boto3.Session(profile_name=self._settings.profile)
        if role_arn is None:
            return self._base_session
        base = self._base_session
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=base._session.create_client,
            source_credentials=base.get_credentials(),
            role_arn=role_arn,
            extra_args={"RoleSessionName": SESSION_NAME},
        )
        # Refreshed by botocore before they expire, on the next call that needs them.
        credentials = DeferredRefreshableCredentials(
            method="assume-role", refresh_using=fetcher.fetch_credentials
        )
        core = botocore.session.Session()
        core._credentials = credentials
        return boto3.Session(botocore_session=core, region_name=region)

    def _create_client(self, region: str, role_arn: str | None) -> Any:
        s = self._settings
        config = BotoConfig(
            region_name=region,
            connect_timeout=s.connect_timeout_seconds,
            read_timeout=s.read_timeout_seconds,
            retries={"mode": s.retry_mode, "total_max_attempts": s.max_attempts},
            max_pool_connections=self._pool_size,
            # An explicit endpoint (the emulator, a VPC endpoint) is used as given.
            inject_host_prefix=s.endpoint_url is None,
            user_agent_extra=f"healthimaging-exporter/{__version__}",
        )
        client = self._session(region, role_arn).client(
            SERVICE, region_name=region, endpoint_url=s.endpoint_url, config=config
        )
        if self._observer is not None:
            _hook(client, self._observer)
        return client


def _hook(client: Any, observer: AttemptObserver) -> None:
    def before_send(event_name: str, **_: Any) -> None:
        observer.before_attempt(event_name.rsplit(".", 1)[-1])

    def response_received(
        event_name: str,
        parsed_response: Mapping[str, Any] | None = None,
        exception: object = None,
        **_: Any,
    ) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        observer.after_attempt(operation, _classify_attempt(operation, parsed_response, exception))

    client.meta.events.register(f"before-send.{SERVICE}", before_send)
    client.meta.events.register(f"response-received.{SERVICE}", response_received)
