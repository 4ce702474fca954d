"""Turn HealthImaging answers (any JSON, as botocore parsed it) into typed data, or refuse them.

Pure functions, total over whatever arrives: each returns typed data or raises
ApiError(MALFORMED_RESPONSE) naming the field, never anything else. DICOM tags are never read.
"""

from __future__ import annotations

import datetime
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.aws.errors import ApiError, malformed, shown
from exporter.model import FAILURE_STATUSES, Version
from exporter.reasons import reason_code

# The DatastoreId and ImageSetId patterns of botocore's service-2.json (medical-imaging).
IDENTIFIER = re.compile(r"[0-9a-z]{32}")
# ImageSetExternalVersionId is "\d+" in the model; ASCII digits only (str.isdigit() also takes
# "²"), and at most 18 so it fits the store's 64-bit integers.
VERSION_ID = re.compile(r"[0-9]{1,18}")
# Workflow statuses and states are enums in the model; an unknown value of this shape (a newer
# API) is passed through as a label, anything else is refused.
ENUM_VALUE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# The model's DatastoreName: operator-chosen, immutable, bounded; safe as a label value.
DATASTORE_NAME = re.compile(r"[A-Za-z0-9._/#-]{1,256}")
# The model's NextToken: 1 to 8192 ASCII characters.
NEXT_TOKEN_MAX = 8192
# updatedAt/createdAt outside 1970..9999 are not dates HealthImaging can have written.
_LATEST_TIMESTAMP = 253_402_300_800.0
# SearchImageSets' version is an Integer; as a version id it must fit the same bound.
_VERSION_MAX = 10**18 - 1
UNKNOWN_STATUS = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class ImageSetSummary:
    """A search hit reduced to what change detection needs: no DICOM tags, ever."""

    image_set_id: str
    version: int | None
    updated_at: float | None
    created_at: float | None


@dataclass(frozen=True, slots=True)
class DatastoreProperties:
    """What GetDatastore says of a data store that the exporter uses: id, name and status."""

    datastore_id: str
    name: str
    status: str


def parse_datastore(answer: object) -> DatastoreProperties:
    """Turn a GetDatastore answer into DatastoreProperties; refuse a malformed one.

    A status outside the model's enum but of an enum's shape (a newer API) is passed through.
    """
    properties = _result(answer, "datastoreProperties")
    if not isinstance(properties, Mapping):
        raise malformed(f"datastoreProperties is a {_kind(properties)}, not an object")
    datastore_id = properties.get("datastoreId")
    if not isinstance(datastore_id, str) or not IDENTIFIER.fullmatch(datastore_id):
        raise malformed(f"datastoreId is not 32 of [0-9a-z]: {shown(datastore_id)}")
    name = properties.get("datastoreName")
    if not isinstance(name, str) or not DATASTORE_NAME.fullmatch(name):
        raise malformed(f"datastoreName is not 1 to 256 of [A-Za-z0-9._/#-]: {shown(name)}")
    status = _enum(properties, "datastoreStatus")
    if status is None:
        raise malformed("datastoreStatus is missing")
    return DatastoreProperties(datastore_id, name, sys.intern(status))


def read_versions_page(page: object) -> tuple[list[Version], str | None]:
    """Return one ListImageSetVersions page's versions (in answer order) and its next token."""
    items = _result_list(page, "imageSetPropertiesList")
    return [parse_version(item) for item in items], read_next_token(page)


def read_search_page(page: object) -> tuple[list[ImageSetSummary], str | None]:
    """Return one SearchImageSets page's summaries and its next token."""
    items = _result_list(page, "imageSetsMetadataSummaries")
    return [parse_summary(item) for item in items], read_next_token(page)


def read_next_token(page: object) -> str | None:
    """Return a page's nextToken, None at the end; refuse one that could not be sent back."""
    if not isinstance(page, Mapping):
        raise malformed("the answer is not an object")
    token = page.get("nextToken")
    if token is None or token == "":
        return None
    if not isinstance(token, str) or len(token) > NEXT_TOKEN_MAX or not token.isascii():
        raise malformed(f"nextToken is not 1 to {NEXT_TOKEN_MAX} ASCII characters")
    return token


def parse_version(item: object) -> Version:
    """Turn one ImageSetProperties entry into a Version; raise ApiError if it is malformed."""
    if not isinstance(item, Mapping):
        raise malformed(f"imageSetPropertiesList holds a {_kind(item)}, not an object")
    raw_id = item.get("versionId")
    if not isinstance(raw_id, str) or not VERSION_ID.fullmatch(raw_id):
        raise malformed(f"versionId is not 1 to 18 ASCII digits: {shown(raw_id)}")
    state = _enum(item, "imageSetState")
    if state is None:
        raise malformed("imageSetState is missing")
    # A version written before workflow statuses existed has none; say so rather than drop it.
    status = _enum(item, "ImageSetWorkflowStatus") or UNKNOWN_STATUS
    overrides = item.get("overrides")
    if overrides is None:
        overrides = {}
    elif not isinstance(overrides, Mapping):
        raise malformed(f"overrides is a {_kind(overrides)}, not an object")
    message = item.get("message")
    if message is not None and not isinstance(message, str):
        raise malformed(f"message is a {_kind(message)}, not a string")
    # issue 12: when the version last changed (updatedAt is when it entered its status), kept
    # past the diff only while in progress.
    changed_at = _version_time(item, "updatedAt")
    if changed_at is None:
        changed_at = _version_time(item, "createdAt")
    return Version(
        version_id=int(raw_id),
        # Interned: a handful of distinct values shared by every version in memory.
        workflow_status=sys.intern(status),
        image_set_state=sys.intern(state),
        forced=_boolean(overrides, "forced", "overrides.forced") is True,
        is_primary=_boolean(item, "isPrimary", "isPrimary"),
        changed_at=changed_at,
        # Free text stops here: only its bounded leading code (exporter.reasons) goes on.
        reason=reason_code(message) if status in FAILURE_STATUSES else None,
    )


def _version_time(item: Mapping[str, Any], name: str) -> float | None:
    # A version's time only dates an in-progress status or a reshard's hand-over: a garbled
    # one costs that, not the whole version list (which would hide its failures).
    try:
        return _timestamp(item, name, "")
    except ApiError:
        return None


def parse_summary(item: object) -> ImageSetSummary:
    """Turn one ImageSetsMetadataSummary into an ImageSetSummary, leaving its DICOM tags."""
    if not isinstance(item, Mapping):
        raise malformed(f"imageSetsMetadataSummaries holds a {_kind(item)}, not an object")
    image_set_id = item.get("imageSetId")
    # It becomes a key, a file of state and a label: only the model's pattern is let through.
    if not isinstance(image_set_id, str) or not IDENTIFIER.fullmatch(image_set_id):
        raise malformed(f"imageSetId is not 32 of [0-9a-z]: {shown(image_set_id)}")
    version = item.get("version")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or not 0 < version <= _VERSION_MAX
    ):
        raise malformed(f"image set {image_set_id}: version is not a version id: {shown(version)}")
    return ImageSetSummary(
        image_set_id=image_set_id,
        version=version,
        updated_at=_timestamp(item, "updatedAt", image_set_id),
        created_at=_timestamp(item, "createdAt", image_set_id),
    )


def _result(page: object, key: str) -> object:
    if not isinstance(page, Mapping):
        raise malformed(f"the answer is a {_kind(page)}, not an object")
    error = page.get("Error")
    if isinstance(error, Mapping):
        # Put there by client._TotalParser when botocore could not parse the body.
        raise malformed(str(error.get("Message") or "the answer could not be parsed"))
    value = page.get(key)
    if value is None:
        raise malformed(f"{key} is missing")
    return value


def _result_list(page: object, key: str) -> list[Any]:
    items = _result(page, key)
    if not isinstance(items, list):
        raise malformed(f"{key} is a {_kind(items)}")
    return items


def _enum(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not ENUM_VALUE.fullmatch(value):
        raise malformed(f"{name} is not an upper-case enum value: {shown(value)}")
    return value


def _boolean(item: Mapping[str, Any], name: str, field: str) -> bool | None:
    value = item.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise malformed(f"{field} is a {_kind(value)}, not a boolean")


def _timestamp(
    item: Mapping[str, Any], name: str, image_set_id: str, subject: str | None = None
) -> float | None:
    value = item.get(name)
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, datetime.datetime):  # what botocore makes of a timestamp
        try:
            seconds = value.timestamp()
        except (OverflowError, OSError, ValueError):
            seconds = None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value) if abs(value) < 1e300 else None
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds < _LATEST_TIMESTAMP:
        where = subject or f"image set {image_set_id}"
        raise malformed(f"{where}: {name} is not a date: {shown(value)}")
    return seconds


def _kind(value: object) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


# The model's JobId pattern and length; it becomes a key of stored state, never a label.
JOB_ID = re.compile(r"[0-9a-z]{1,32}")
S3_URI = re.compile(r"s3://[a-z0-9][.\-a-z0-9]{1,61}[a-z0-9](/.*)?")
S3_URI_MAX = 1024


@dataclass(frozen=True, slots=True)
class ImportJob:
    """A DICOM import job reduced to what the exporter counts: no name, no input, no message.

    `reason` is the bounded code of a FAILED job's message (exporter.reasons); `output_s3_uri`
    (the job's output folder) only comes from GetDICOMImportJob.
    """

    job_id: str
    status: str
    submitted_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None
    output_s3_uri: str | None = None


def read_import_jobs_page(page: object) -> tuple[list[ImportJob], str | None]:
    """Return one ListDICOMImportJobs page's jobs and its next token."""
    items = _result_list(page, "jobSummaries")
    return [parse_import_job(item, "jobSummaries") for item in items], read_next_token(page)


def read_import_job(answer: object) -> ImportJob:
    """Return the job of a GetDICOMImportJob answer."""
    if not isinstance(answer, Mapping):
        raise malformed(f"the answer is a {_kind(answer)}, not an object")
    error = answer.get("Error")
    if isinstance(error, Mapping):
        raise malformed(str(error.get("Message") or "the answer could not be parsed"))
    properties = answer.get("jobProperties")
    if properties is None:
        raise malformed("jobProperties is missing")
    return parse_import_job(properties, "jobProperties")


def parse_import_job(item: object, where: str) -> ImportJob:
    """Turn a DICOMImportJobSummary or DICOMImportJobProperties into an ImportJob."""
    if not isinstance(item, Mapping):
        raise malformed(f"{where} holds a {_kind(item)}, not an object")
    job_id = item.get("jobId")
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise malformed(f"jobId is not 1 to 32 of [0-9a-z]: {shown(job_id)}")
    status = _enum(item, "jobStatus")
    if status is None:
        raise malformed(f"import job {job_id}: jobStatus is missing")
    message = item.get("message")
    if message is not None and not isinstance(message, str):
        raise malformed(f"import job {job_id}: message is a {_kind(message)}, not a string")
    output = item.get("outputS3Uri")
    if output is not None and (
        not isinstance(output, str) or len(output) > S3_URI_MAX or not S3_URI.fullmatch(output)
    ):
        raise malformed(f"import job {job_id}: outputS3Uri is not an s3:// URI")
    return ImportJob(
        job_id=job_id,
        status=sys.intern(status),
        submitted_at=_timestamp(item, "submittedAt", "", f"import job {job_id}"),
        ended_at=_timestamp(item, "endedAt", "", f"import job {job_id}"),
        # Free text stops here: only its bounded leading code goes on.
        reason=reason_code(message) if status == "FAILED" else None,
        output_s3_uri=output,
    )
