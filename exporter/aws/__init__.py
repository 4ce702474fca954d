"""The AWS boundary: the only boto3 user; plain dataclasses out, DICOM data dropped.

- parsing: answers (any JSON) to typed data or ApiError(MALFORMED_RESPONSE), pure
- client: HealthImagingApi (bounded paging, deadlines, error mapping, data store status) and
  ClientFactory
- manifests: the file counts of import jobs' output in S3 (ManifestReader), nothing else
- attempts: the per-attempt hook feeding the rate budget and request counters
- events: HealthImaging's EventBridge events (SQS message bodies) to typed events, pure
- queue: the SQS queue those events arrive on (receive, delete, depth)
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
from exporter.aws.events import (
    DETAIL_TYPES,
    OTHER_DETAIL_TYPE,
    EventKind,
    ImagingEvent,
    MalformedEvent,
    parse_event,
    peek_detail_type,
)
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
from exporter.aws.queue import QUEUE_ATTRIBUTES, EventQueue, QueueMessage

__all__ = [
    "DETAIL_TYPES",
    "MAX_SEARCH_PAGES",
    "MAX_VERSION_PAGES",
    "OTHER_DETAIL_TYPE",
    "PAYLOAD_LOGGERS",
    "QUEUE_ATTRIBUTES",
    "ApiError",
    "AttemptCounters",
    "AttemptObserver",
    "AttemptRecorder",
    "ClientFactory",
    "DatastoreProperties",
    "EventKind",
    "EventQueue",
    "HealthImagingApi",
    "ImageSetSummary",
    "ImagingEvent",
    "ImportJob",
    "MalformedEvent",
    "ManifestCounts",
    "ManifestReader",
    "QueueMessage",
    "classify_attempt",
    "classify_error_code",
    "parse_datastore",
    "parse_event",
    "parse_summary",
    "parse_version",
    "peek_detail_type",
    "read_search_page",
    "read_versions_page",
    "silence_payload_logging",
]
