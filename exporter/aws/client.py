"""boto3 clients for HealthImaging: bounded, deadline-aware paging and total error mapping."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
import botocore
import botocore.exceptions
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.parsers import ResponseParserFactory

from exporter import __version__
from exporter.aws.attempts import SERVICE, AttemptObserver, hook_attempts
from exporter.aws.errors import UNREADABLE_CODE, ApiError, classify_error_code, malformed, shown
from exporter.aws.manifests import ManifestReader
from exporter.aws.parsing import (
    DatastoreProperties,
    ImageSetSummary,
    ImportJob,
    parse_datastore,
    read_import_job,
    read_import_jobs_page,
    read_next_token,
    read_search_page,
    read_versions_page,
)
from exporter.config import AwsSettings, DatastoreSettings, EventsSettings
from exporter.model import Version, distinct_versions
from exporter.outcomes import Outcome

if TYPE_CHECKING:
    from exporter.aws.queue import EventQueue

log = logging.getLogger(__name__)

SESSION_NAME = "healthimaging-exporter"
PAGE_SIZE = 50
# No listing pages forever, whatever nextToken the service sends: 1000 pages are 50,000
# versions of one image set, far beyond any real history; a search window is bounded too.
MAX_VERSION_PAGES = 1000
MAX_SEARCH_PAGES = 2000
# A baseline or reconciliation lists every ended import job: 400 pages are 20,000 jobs.
MAX_IMPORT_JOB_PAGES = 400

# botocore logs whole request and response bodies at DEBUG: search results carry patient data
# and requests carry signed headers. Whoever configures logging, these stay at WARNING.
PAYLOAD_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


def silence_payload_logging() -> None:
    """Keep the AWS SDK's loggers, which log payloads at DEBUG, at WARNING or above."""
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING or logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


class _TotalParser:
    """botocore's parser, made total: a body it cannot parse becomes an error answer.

    botocore raises whatever a bad body provokes (ValueError for a timestamp of "yesterday",
    RuntimeError for 1e300, AttributeError for a string where an object belongs, RecursionError
    for deep nesting) from outside its retry and event machinery. Turned into an error answer
    here, the attempt is counted by the hooks like any other and the call fails with a
    ClientError the client maps to malformed_response; an error status keeps its meaning
    (a 503 with a garbage body is still retried as a 503).
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def parse(self, response: Mapping[str, Any], shape: Any) -> Any:
        try:
            return self._inner.parse(response, shape)
        except Exception as exc:  # whatever botocore raised, the body was unreadable
            status = response.get("status_code")
            headers = response.get("headers") or {}
            is_error = isinstance(status, int) and status >= 300
            return {
                "Error": {
                    "Code": "" if is_error else UNREADABLE_CODE,
                    "Message": f"the answer could not be parsed: {type(exc).__name__}: "
                    + shown(str(exc), 80),
                },
                "ResponseMetadata": {
                    "HTTPStatusCode": status,
                    "HTTPHeaders": {str(k).lower(): v for k, v in headers.items()},
                },
            }


class _TotalParserFactory(ResponseParserFactory):  # type: ignore[misc]
    def create_parser(self, protocol_name: str) -> _TotalParser:
        return _TotalParser(super().create_parser(protocol_name))


@contextmanager
def _translated(operation: str) -> Iterator[None]:
    """Turn whatever botocore raises for one call into an ApiError with a one-line message."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        response = exc.response if isinstance(exc.response, Mapping) else {}
        error = response.get("Error") or {}
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code = str(error.get("Code") or "Unknown")
        outcome = classify_error_code(code, status if isinstance(status, int) else None)
        message = shown(str(error.get("Message") or ""), 200)
        if code == UNREADABLE_CODE:
            raise ApiError(outcome, f"{operation}: {message}") from None
        raise ApiError(outcome, f"{operation}: {shown(code, 80)}: {message}") from None
    except botocore.exceptions.NoCredentialsError:
        raise ApiError(Outcome.ACCESS_DENIED, f"{operation}: no AWS credentials found") from None
    except botocore.exceptions.PaginationError as exc:
        # botocore's own check: the same nextToken twice in a row.
        raise malformed(f"{operation}: {shown(str(exc), 120)}") from None
    except botocore.exceptions.ParamValidationError as exc:
        raise ApiError(Outcome.VALIDATION_ERROR, f"{operation}: {shown(str(exc), 200)}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ApiError(Outcome.NETWORK_ERROR, f"{operation}: {shown(str(exc), 200)}") from None


class HealthImagingApi:
    """A thin, typed wrapper around one boto3 medical-imaging client.

    Every method returns typed data or raises ApiError; nothing else escapes, whatever the
    service answers. Listings are bounded in pages and, given a `deadline` (a time.monotonic()
    value), stop with a TIMEOUT ApiError once it has passed.
    """

    def __init__(
        self,
        client: Any,
        *,
        max_version_pages: int = MAX_VERSION_PAGES,
        max_search_pages: int = MAX_SEARCH_PAGES,
        monotonic: Callable[[], float] = time.monotonic,
        max_import_job_pages: int = MAX_IMPORT_JOB_PAGES,
    ) -> None:
        self._client = client
        self._max_version_pages = max_version_pages
        self._max_search_pages = max_search_pages
        self._max_import_job_pages = max_import_job_pages
        self._monotonic = monotonic

    def list_dicom_import_jobs(
        self, datastore_id: str, status: str | None = None, *, deadline: float | None = None
    ) -> list[ImportJob]:
        """Return the data store's import jobs (ListDICOMImportJobs), of one status if given."""
        operation = "ListDICOMImportJobs"
        params = {"datastoreId": datastore_id}
        if status is not None:
            params["jobStatus"] = status
        subject = f"data store {datastore_id} {status or 'all'}"
        jobs: list[ImportJob] = []
        for page in self._pages(operation, subject, params, self._max_import_job_pages, deadline):
            with _named(operation, subject):
                jobs.extend(read_import_jobs_page(page)[0])
        return jobs

    def list_recent_dicom_import_jobs(
        self, datastore_id: str, max_pages: int, *, deadline: float | None = None
    ) -> tuple[list[ImportJob], bool]:
        """Return the data store's jobs of every status, page by page, as far as time allows.

        At most `max_pages` pages, and no page started after `deadline` (the first one always
        is); returns the jobs read and whether the listing was complete. The API has no time
        filter and a data store keeps years of jobs: a baseline or reconciliation takes the
        pages it can rather than failing for ever on a long history.
        """
        operation = "ListDICOMImportJobs"
        params = {"datastoreId": datastore_id}
        subject = f"data store {datastore_id} all"
        jobs: list[ImportJob] = []
        pages = self._pages(operation, subject, params, max(1, max_pages) + 1, None)
        for number, page in enumerate(pages, 1):
            with _named(operation, subject):
                found, token = read_import_jobs_page(page)
            jobs.extend(found)
            if token is None:
                return jobs, True
            if number >= max_pages or (deadline is not None and self._monotonic() >= deadline):
                return jobs, False
        return jobs, True

    def get_dicom_import_job(
        self, datastore_id: str, job_id: str, *, deadline: float | None = None
    ) -> ImportJob:
        """Return one import job (GetDICOMImportJob): how it ended, and its output folder."""
        operation = "GetDICOMImportJob"
        self._check_deadline(operation, deadline)
        with _translated(operation):
            answer = self._client.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)
        with _named(operation, f"import job {job_id}"):
            return read_import_job(answer)

    def list_image_set_versions(
        self, datastore_id: str, image_set_id: str, *, deadline: float | None = None
    ) -> tuple[Version, ...]:
        """Return every version of an image set, newest first, one entry per version id."""
        operation = "ListImageSetVersions"
        params = {"datastoreId": datastore_id, "imageSetId": image_set_id}
        versions: list[Version] = []
        subject = f"image set {image_set_id}"
        for page in self._pages(operation, subject, params, self._max_version_pages, deadline):
            with _named(operation, subject):
                versions.extend(read_versions_page(page)[0])
        return distinct_versions(versions)

    def get_datastore(
        self, datastore_id: str, *, deadline: float | None = None
    ) -> DatastoreProperties:
        """Return the data store's id, name and status (GetDatastore)."""
        operation = "GetDatastore"
        self._check_deadline(operation, deadline)
        with _translated(operation):
            answer = self._client.get_datastore(datastoreId=datastore_id)
        with _named(operation, f"data store {datastore_id}"):
            properties = parse_datastore(answer)
            if properties.datastore_id != datastore_id:
                raise malformed(f"the answer is about data store {properties.datastore_id}")
        return properties

    @staticmethod
    def _search_params(datastore_id: str, since: float, until: float) -> dict[str, Any]:
        # botocore sends these timestamps as whole seconds: round the window outward, or
        # whatever changed in the current second would be missed.
        bounds = [{"updatedAt": math.floor(since)}, {"updatedAt": math.ceil(until)}]
        return {
            "datastoreId": datastore_id,
            "searchCriteria": {
                "filters": [{"values": bounds, "operator": "BETWEEN"}],
                "sort": {"sortField": "updatedAt", "sortOrder": "ASC"},
            },
        }

    def search_page(
        self,
        datastore_id: str,
        since: float,
        until: float,
        token: str | None = None,
        *,
        deadline: float | None = None,
    ) -> tuple[list[ImageSetSummary], str | None]:
        """Return one page of image sets updated in [since, until], oldest first, and its token.

        One direct call rather than a paginator: the backfill saves the service's own nextToken
        between cycles and resumes from it, which botocore's resume tokens would not accept.
        """
        operation = "SearchImageSets"
        self._check_deadline(operation, deadline)
        params = self._search_params(datastore_id, since, until)
        params["maxResults"] = PAGE_SIZE
        if token:
            params["nextToken"] = token
        with _translated(operation):
            page = self._client.search_image_sets(**params)
        with _named(operation, f"data store {datastore_id}"):
            return read_search_page(page)

    def search_updated(
        self, datastore_id: str, since: float, until: float, *, deadline: float | None = None
    ) -> Iterator[ImageSetSummary]:
        """Yield image sets whose updatedAt lies in [since, until], oldest update first."""
        operation = "SearchImageSets"
        params = self._search_params(datastore_id, since, until)
        subject = f"data store {datastore_id}"
        for page in self._pages(operation, subject, params, self._max_search_pages, deadline):
            with _named(operation, subject):
                summaries = read_search_page(page)[0]
            yield from summaries

    def _pages(
        self,
        operation: str,
        subject: str,
        params: Mapping[str, Any],
        max_pages: int,
        deadline: float | None,
    ) -> Iterator[Mapping[str, Any]]:
        """Yield the pages of a listing through botocore's paginator, bounded and checked.

        botocore only notices a token repeated twice in a row; a token seen on any earlier page,
        a listing longer than max_pages and a passed deadline stop it here.
        """
        paginator = self._client.get_paginator(_snake(operation))
        pages = iter(paginator.paginate(**params, PaginationConfig={"PageSize": PAGE_SIZE}))
        seen: set[bytes] = set()
        number = 0
        while True:
            self._check_deadline(operation, deadline)
            with _translated(operation):
                page = next(pages, None)
            if page is None:
                return
            number += 1
            with _named(operation, subject):
                token = read_next_token(page)
            yield page
            if token is None:
                return
            digest = hashlib.blake2b(token.encode("ascii"), digest_size=16).digest()
            if digest in seen:
                raise malformed(f"{operation} {subject}: nextToken repeats (page {number})")
            if number >= max_pages:
                raise malformed(f"{operation} {subject}: more than {max_pages} pages; stopped")
            seen.add(digest)

    def _check_deadline(self, operation: str, deadline: float | None) -> None:
        if deadline is not None and self._monotonic() >= deadline:
            raise ApiError(Outcome.TIMEOUT, f"{operation}: the deadline passed")


@contextmanager
def _named(operation: str, subject: str) -> Iterator[None]:
    """Prefix a parsing error with the operation and what was asked for."""
    try:
        yield
    except ApiError as exc:
        where = f"{operation} {subject}".strip()
        raise ApiError(exc.outcome, f"{where}: {exc}") from None


def _snake(operation: str) -> str:
    # botocore's own name mapping: ListDICOMImportJobs is list_dicom_import_jobs.
    return str(botocore.xform_name(operation))


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
        self._manifests: dict[tuple[str, str | None], ManifestReader] = {}
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

    def manifests_for_datastore(self, datastore: DatastoreSettings) -> ManifestReader:
        """Return the S3 reader of import job manifests, with the data store's region and role."""
        region = datastore.region or self._settings.region
        role = datastore.role_arn or self._settings.role_arn
        with self._lock:
            reader = self._manifests.get((region, role))
            if reader is None:
                reader = ManifestReader(self._create_s3_client(region, role))
                self._manifests[(region, role)] = reader
            return reader

    def _boto_config(
        self, region: str, pool: int, read_timeout: float | None = None, **extra: Any
    ) -> BotoConfig:
        """One client configuration for every service: timeouts, retries and user agent."""
        s = self._settings
        return BotoConfig(
            region_name=region,
            connect_timeout=s.connect_timeout_seconds,
            read_timeout=s.read_timeout_seconds if read_timeout is None else read_timeout,
            retries={"mode": s.retry_mode, "total_max_attempts": s.max_attempts},
            max_pool_connections=pool,
            user_agent_extra=f"healthimaging-exporter/{__version__}",
            **extra,
        )

    def _create_s3_client(self, region: str, role_arn: str | None) -> Any:
        s = self._settings
        # An explicit endpoint (moto in tests, a VPC endpoint) takes bucket names in the path.
        addressing = {"addressing_style": "path"} if s.s3_endpoint_url else {}
        config = self._boto_config(region, 2, s3=addressing)
        return self._session(region, role_arn).client(
            "s3", region_name=region, endpoint_url=s.s3_endpoint_url, config=config
        )

    def for_events(self, events: EventsSettings, shard: int = 0) -> EventQueue:
        """Return the SQS queue of `events` for a shard, with its region and role (or aws.*'s)."""
        from exporter.aws.queue import EventQueue  # the queue module imports this one

        region = events.region or self._settings.region
        role = events.role_arn or self._settings.role_arn
        # A long poll answers after up to wait_seconds by design: the read timeout covers it.
        read_timeout = events.wait_seconds + self._settings.read_timeout_seconds
        config = self._boto_config(region, 2, read_timeout)
        with self._lock:
            client = self._session(region, role).client(
                "sqs", region_name=region, endpoint_url=events.endpoint_url, config=config
            )
        return EventQueue(client, events.queue_url_for(shard))

    def _session(self, region: str, role_arn: str | None) -> boto3.Session:
        if self._base_session is None:
            self._base_session = boto3.Session(profile_name=self._settings.profile)
            _make_parsing_total(self._base_session._session)
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
        _make_parsing_total(core)
        return boto3.Session(botocore_session=core, region_name=region)

    def _create_client(self, region: str, role_arn: str | None) -> Any:
        s = self._settings
        # An explicit endpoint (the emulator, a VPC endpoint) is used as given.
        config = self._boto_config(
            region, self._pool_size, inject_host_prefix=s.endpoint_url is None
        )
        client = self._session(region, role_arn).client(
            SERVICE, region_name=region, endpoint_url=s.endpoint_url, config=config
        )
        if self._observer is not None:
            hook_attempts(client, self._observer)
        return client


def _make_parsing_total(session: botocore.session.Session) -> None:
    # The documented component of a botocore session that clients take their parsers from.
    session.register_component("response_parser_factory", _TotalParserFactory())
