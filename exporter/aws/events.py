"""HealthImaging's EventBridge events as an SQS message body: parsed strictly, pure and total.

`parse_event` turns any message body into an `ImagingEvent` or raises `MalformedEvent` naming
what was wrong (never anything else, never quoting the body: it is not ours to log). Only what
the exporter acts on is kept: no `jobName`, no S3 URIs (file names may carry patient data), no
`sourceImageSetArn`.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from exporter.aws.parsing import ENUM_VALUE, IDENTIFIER, VERSION_ID

SOURCE = "aws.medical-imaging"
# SQS bodies are at most 256 KiB; anything bigger is not an EventBridge event.
MAX_BODY_CHARS = 262_144
# The 19 detail-types of the EventBridge reference for aws.medical-imaging.
DATASTORE_DETAIL_TYPES = (
    "Data Store Creating",
    "Data Store Created",
    "Data Store Creation Failed",
    "Data Store Deleting",
    "Data Store Deleted",
)
IMPORT_JOB_DETAIL_TYPES = (
    "Import Job Submitted",
    "Import Job In Progress",
    "Import Job Completed",
    "Import Job Failed",
)
IMAGE_SET_DETAIL_TYPES = (
    "Image Set Created",
    "Image Set Copying",
    "Image Set Copying With Read Only Access",
    "Image Set Copied",
    "Image Set Copy Failed",
    "Image Set Updating",
    "Image Set Updated",
    "Image Set Update Failed",
    "Image Set Deleting",
    "Image Set Deleted",
)
DETAIL_TYPES = (*DATASTORE_DETAIL_TYPES, *IMPORT_JOB_DETAIL_TYPES, *IMAGE_SET_DETAIL_TYPES)
OTHER_DETAIL_TYPE = "other"  # the label value of anything else (a malformed body, a new type)
JOB_ID = re.compile(r"[0-9a-z]{1,32}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


class EventKind(StrEnum):
    """What an event is about."""

    DATASTORE = "datastore"
    IMPORT_JOB = "import_job"
    IMAGE_SET = "image_set"


class MalformedEvent(ValueError):
    """A message body that is not a HealthImaging event the exporter can read; one line."""


@dataclass(frozen=True, slots=True)
class ImagingEvent:
    """One HealthImaging event, reduced to what the exporter acts on."""

    event_id: str
    detail_type: str  # one of DETAIL_TYPES
    kind: EventKind
    time: float  # the event's `time`, Unix seconds
    datastore_id: str
    image_set_id: str | None = None  # image set events
    version: int | None = None  # image set events: imageSetVersion
    workflow_status: str | None = None  # image set events: imageSetWorkflowStatus
    image_set_state: str | None = None
    job_id: str | None = None  # import job events
    status: str | None = None  # jobStatus or datastoreStatus


def detail_type_label(detail_type: object) -> str:
    """Return a detail-type as a label value: one of the 19, or `other`."""
    return detail_type if isinstance(detail_type, str) and detail_type in DETAIL_TYPES else "other"


def peek_detail_type(body: object) -> str:
    """The label value of a body's detail-type, however malformed the rest (never raises)."""
    if not isinstance(body, str) or len(body) > MAX_BODY_CHARS:
        return OTHER_DETAIL_TYPE
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return OTHER_DETAIL_TYPE
    return detail_type_label(data.get("detail-type")) if isinstance(data, dict) else "other"


def parse_event(body: object) -> ImagingEvent:
    """Parse one SQS message body (EventBridge's whole envelope); raise MalformedEvent."""
    if not isinstance(body, str):
        raise MalformedEvent("the message body is not text")
    if len(body) > MAX_BODY_CHARS:
        raise MalformedEvent(f"the message body is longer than {MAX_BODY_CHARS} characters")
    try:
        data = json.loads(body)
    except RecursionError:
        raise MalformedEvent("the message body is nested too deeply") from None
    except ValueError:
        raise MalformedEvent("the message body is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedEvent(f"the message body is a {_kind(data)}, not an object")
    if data.get("source") != SOURCE:
        raise MalformedEvent(f"source is not {SOURCE}")
    detail_type = data.get("detail-type")
    if not isinstance(detail_type, str) or detail_type not in DETAIL_TYPES:
        raise MalformedEvent("detail-type is not one of HealthImaging's")
    event_id = data.get("id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 64 or not event_id.isascii():
        raise MalformedEvent("id is not 1 to 64 ASCII characters")
    when = _time(data.get("time"))
    detail = data.get("detail")
    if not isinstance(detail, dict):
        raise MalformedEvent(f"detail is {'missing' if detail is None else 'a ' + _kind(detail)}")
    datastore_id = _identifier(detail, "datastoreId")
    if detail_type in IMAGE_SET_DETAIL_TYPES:
        version = detail.get("imageSetVersion")
        if isinstance(version, int) and not isinstance(version, bool):
            version = str(version)
        if not isinstance(version, str) or not VERSION_ID.fullmatch(version):
            raise MalformedEvent("imageSetVersion is not 1 to 18 ASCII digits")
        return ImagingEvent(
            kind=EventKind.IMAGE_SET,
            datastore_id=datastore_id,
            image_set_id=_identifier(detail, "imagesetId"),
            version=int(version),
            workflow_status=_enum(detail, "imageSetWorkflowStatus"),
            image_set_state=_enum(detail, "imageSetState"),
            event_id=event_id,
            detail_type=detail_type,
            time=when,
        )
    if detail_type in IMPORT_JOB_DETAIL_TYPES:
        job_id = detail.get("jobId")
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise MalformedEvent("jobId is not 1 to 32 of [0-9a-z]")
        return ImagingEvent(
            kind=EventKind.IMPORT_JOB,
            datastore_id=datastore_id,
            job_id=job_id,
            status=_enum(detail, "jobStatus"),
            event_id=event_id,
            detail_type=detail_type,
            time=when,
        )
    return ImagingEvent(
        kind=EventKind.DATASTORE,
        datastore_id=datastore_id,
        status=_enum(detail, "datastoreStatus"),
        event_id=event_id,
        detail_type=detail_type,
        time=when,
    )


def _identifier(detail: Mapping[str, Any], name: str) -> str:
    value = detail.get(name)
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise MalformedEvent(f"detail.{name} is not 32 of [0-9a-z]")
    return value


def _enum(detail: Mapping[str, Any], name: str) -> str | None:
    value = detail.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not ENUM_VALUE.fullmatch(value):
        raise MalformedEvent(f"detail.{name} is not an upper-case enum value")
    return value


def _time(value: object) -> float:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise MalformedEvent("time is not an ISO 8601 UTC timestamp")
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.timestamp()
    except (ValueError, OverflowError, OSError):
        raise MalformedEvent("time is not an ISO 8601 UTC timestamp") from None


def _kind(value: object) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )
