"""The AWS boundary: the only boto3 user; plain dataclasses out, DICOM data dropped.

- parsing: answers (any JSON) to typed data or ApiError(MALFORMED_RESPONSE), pure
- client: HealthImagingApi (bounded paging, deadlines, error mapping, data store status) and
  ClientFactory
- manifests: the file counts of import jobs' output in S3 (ManifestReader), nothing else
- attempts: the per-attempt hook feeding the rate budget and request counters
"""

from exporter.aws.attempts import (
    AttemptCounters,
    AttemptObserver,
    AttemptRecorder,
    classify_attempt,
)
from exporter.aws.client import (
    MAX_SEARCH_PAGES,
    MAX_VERSION_PAGES,
    PAYLOAD_LOGGERS,
    ClientFactory,
    HealthImagingApi,
    silence_payload_logging,
)
from exporter.aws.errors import ApiError, classify_error_code
from exporter.aws.manifests import ManifestCounts, ManifestReader
from exporter.aws.parsing import (
    DatastoreProperties,
    ImageSetSummary,
    ImportJob,
    parse_datastore,
    parse_summary,
    parse_version,
    read_search_page,
    read_versions_page,
)

__all__ = [
    "MAX_SEARCH_PAGES",
    "MAX_VERSION_PAGES",
    "PAYLOAD_LOGGERS",
    "ApiError",
    "AttemptCounters",
    "AttemptObserver",
    "AttemptRecorder",
    "ClientFactory",
    "DatastoreProperties",
    "HealthImagingApi",
    "ImageSetSummary",
    "ImportJob",
    "ManifestCounts",
    "ManifestReader",
    "classify_attempt",
    "classify_error_code",
    "parse_datastore",
    "parse_summary",
    "parse_version",
    "read_search_page",
    "read_versions_page",
    "silence_payload_logging",
]
