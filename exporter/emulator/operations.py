"""The five data-plane operations, taking parsed arguments and returning response bodies."""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from typing import Any

from . import search, wire
from .backend import Backend, check_enum, check_id
from .errors import ConflictError, NotFoundError, ValidationError
from .model import DATASTORE_STATUSES, JOB_STATUSES, Datastore, ImportJob

DEFAULT_PAGE = 50


def check_max_results(value: int | None, low: int = 1, high: int = 50) -> int:
    """The page size, or ValidationException when outside the model's bounds."""
    if value is None:
        return DEFAULT_PAGE
    if not low <= value <= high:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at 'maxResults' failed to satisfy "
            f"constraint: Member must have value between {low} and {high}"
        )
    return value


def _active(backend: Backend, datastore_id: str) -> Datastore:
    store = backend.store(datastore_id)
    if store.status != "ACTIVE":
        raise ConflictError(f"Datastore {datastore_id} is {store.status}, not ACTIVE")
    return store


def list_image_set_versions(
    backend: Backend,
    datastore_id: str,
    image_set_id: str,
    max_results: int | None = None,
    next_token: str | None = None,
) -> dict[str, Any]:
    """ListImageSetVersions: newest first, cursor = the last version number returned."""
    check_id(datastore_id, "datastoreId")
    check_id(image_set_id, "imageSetId")
    limit = check_max_results(max_results)
    scope = f"ListImageSetVersions/{datastore_id}/{image_set_id}"
    with backend.lock:
        store = _active(backend, datastore_id)
        versions = backend.image_set(store, image_set_id).versions
        end = len(versions)
        if next_token is not None:
            cursor = backend.tokens.decode(scope, next_token)
            if not isinstance(cursor, int):
                raise ValidationError("Invalid nextToken")
            # Versions only ever append, so "older than version N" is stable across pages.
            end = bisect.bisect_left(versions, cursor, key=lambda v: int(v.version_id))
        start = max(0, end - limit)
        page = [wire.image_set_properties(image_set_id, v) for v in reversed(versions[start:end])]
        out: dict[str, Any] = {"imageSetPropertiesList": page}
        if start > 0:
            out["nextToken"] = backend.tokens.encode(scope, int(versions[start].version_id))
    return out


def get_image_set(
    backend: Backend, datastore_id: str, image_set_id: str, version_id: str | None = None
) -> dict[str, Any]:
    """GetImageSet: the latest version, or the one named by the `version` query parameter."""
    check_id(datastore_id, "datastoreId")
    check_id(image_set_id, "imageSetId")
    if version_id is not None and not version_id.isdigit():
        raise ValidationError(
            f"1 validation error detected: Value '{version_id}' at 'versionId' failed to "
            "satisfy constraint: Member must satisfy regular expression pattern: \\d+"
        )
    with backend.lock:
        store = _active(backend, datastore_id)
        image_set = backend.image_set(store, image_set_id)
        version = image_set.latest
        if version_id is not None:
            found = [v for v in image_set.versions if int(v.version_id) == int(version_id)]
            if not found:
                raise NotFoundError(f"Image set version {version_id} not found")
            version = found[0]
        arn = f"{backend.datastore_arn(datastore_id)}/imageset/{image_set_id}"
        return wire.get_image_set(datastore_id, image_set_id, version, arn)


def search_image_sets(
    backend: Backend,
    datastore_id: str,
    criteria: Mapping[str, Any],
    max_results: int | None = None,
    next_token: str | None = None,
) -> dict[str, Any]:
    """SearchImageSets: key-based cursor on (sort value, imageSetId), stable while data changes."""
    check_id(datastore_id, "datastoreId")
    limit = check_max_results(max_results)
    query = search.parse_criteria(criteria)
    scope = query.scope(datastore_id)
    after = None
    if next_token is not None:
        cursor = backend.tokens.decode(scope, next_token)
        if not (isinstance(cursor, list) and len(cursor) == 2):
            raise ValidationError("Invalid nextToken")
        after = (float(cursor[0]), str(cursor[1]))
    with backend.lock:
        store = _active(backend, datastore_id)
        hits, more = search.run(store, query, limit, after)
        out: dict[str, Any] = {
            "imageSetsMetadataSummaries": [wire.image_set_summary(s) for s in hits],
            "sort": {"sortOrder": query.sort_order, "sortField": query.sort_field},
        }
    if more is not None:
        out["nextToken"] = backend.tokens.encode(scope, list(more))
    return out


def list_datastores(
    backend: Backend,
    status: str | None = None,
    max_results: int | None = None,
    next_token: str | None = None,
) -> dict[str, Any]:
    """ListDatastores: by id, optionally only those in one status."""
    if status is not None:
        check_enum(status, DATASTORE_STATUSES, "datastoreStatus")
    limit = check_max_results(max_results)
    backend.advance()
    scope = f"ListDatastores/{status or ''}"
    after = "" if next_token is None else backend.tokens.decode(scope, next_token)
    if not isinstance(after, str):
        raise ValidationError("Invalid nextToken")
    with backend.lock:
        stores = [
            s
            for s in backend.datastores()
            if s.datastore_id > after and (status is None or s.status == status)
        ]
        page = stores[:limit]
        out: dict[str, Any] = {
            "datastoreSummaries": [
                wire.datastore_properties(s, backend.datastore_arn(s.datastore_id)) for s in page
            ]
        }
    if len(stores) > limit:
        out["nextToken"] = backend.tokens.encode(scope, page[-1].datastore_id)
    return out


def get_datastore(backend: Backend, datastore_id: str) -> dict[str, Any]:
    """GetDatastore."""
    check_id(datastore_id, "datastoreId")
    backend.advance()
    with backend.lock:
        store = backend.store(datastore_id)
        return {
            "datastoreProperties": wire.datastore_properties(
                store, backend.datastore_arn(datastore_id)
            )
        }


# Member constraints of the service model (StartDICOMImportJobRequest, CreateDatastoreRequest).
_JOB_NAME = (re.compile(r"[A-Za-z0-9._/#-]+"), 1, 64)
_ROLE_ARN = (re.compile(r"arn:aws(-[^:]+)?:iam::[0-9]{12}:role/.+"), 20, 2048)
_CLIENT_TOKEN = (re.compile(r"[A-Za-z0-9._-]+"), 1, 64)
_S3_URI = (re.compile(r"s3://[a-z0-9][\.\-a-z0-9]{1,61}[a-z0-9](/.*)?"), 1, 1024)
_ACCOUNT_ID = (re.compile(r"\d+"), 12, 12)
_DATASTORE_NAME = (re.compile(r"[A-Za-z0-9._/#-]+"), 1, 256)
_JOB_ID = (re.compile(r"[0-9a-z]+"), 1, 32)


def _member(
    body: Mapping[str, Any],
    name: str,
    constraint: tuple[re.Pattern[str], int, int],
    *,
    required: bool,
) -> str | None:
    """One string member checked against the model, ValidationException worded like AWS."""
    value = body.get(name)
    if value is None:
        if required:
            raise ValidationError(
                f"1 validation error detected: Value null at '{name}' failed to satisfy "
                "constraint: Member must not be null"
            )
        return None
    return check_string(value, name, constraint)


def check_string(value: Any, name: str, constraint: tuple[re.Pattern[str], int, int]) -> str:
    """A string within the model's length bounds and pattern, or ValidationException."""
    pattern, low, high = constraint
    if not isinstance(value, str):
        raise ValidationError(f"1 validation error detected: '{name}' must be a string")
    if not low <= len(value) <= high:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
            f"constraint: Member must have length between {low} and {high}"
        )
    if not pattern.fullmatch(value):
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {pattern.pattern}"
        )
    return value


def start_dicom_import_job(
    backend: Backend, datastore_id: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """StartDICOMImportJob: a SUBMITTED job that moves on the emulator's clock."""
    check_id(datastore_id, "datastoreId")
    role = _member(body, "dataAccessRoleArn", _ROLE_ARN, required=True)
    token = _member(body, "clientToken", _CLIENT_TOKEN, required=True)
    input_uri = _member(body, "inputS3Uri", _S3_URI, required=True)
    output_uri = _member(body, "outputS3Uri", _S3_URI, required=True)
    name = _member(body, "jobName", _JOB_NAME, required=False)
    _member(body, "inputOwnerAccountId", _ACCOUNT_ID, required=False)
    config = body.get("importConfiguration")
    if config is not None and not isinstance(config, dict):
        raise ValidationError("1 validation error detected: 'importConfiguration' must be a map")
    assert role is not None and token is not None and input_uri is not None
    assert output_uri is not None
    job_id = backend.start_import_job(
        datastore_id,
        input_s3_uri=input_uri,
        output_s3_uri=output_uri,
        data_access_role_arn=role,
        job_name=name,
        client_token=token,
        import_configuration=config,
    )
    with backend.lock:
        job = backend.import_job(backend.store(datastore_id), job_id)
        return {
            "datastoreId": datastore_id,
            "jobId": job_id,
            "jobStatus": "SUBMITTED",  # what StartDICOMImportJob answers, however fast it runs
            "submittedAt": job.submitted_at,
        }


def _job_key(job: ImportJob) -> tuple[float, str]:
    return (job.submitted_at, job.job_id)


def list_dicom_import_jobs(
    backend: Backend,
    datastore_id: str,
    status: str | None = None,
    max_results: int | None = None,
    next_token: str | None = None,
) -> dict[str, Any]:
    """ListDICOMImportJobs: newest submittedAt first; the cursor is the last (time, id) sent."""
    check_id(datastore_id, "datastoreId")
    if status is not None:
        check_enum(status, JOB_STATUSES, "jobStatus")
    limit = check_max_results(max_results)
    scope = f"ListDICOMImportJobs/{datastore_id}/{status or ''}"
    before: tuple[float, str] | None = None
    if next_token is not None:
        cursor = backend.tokens.decode(scope, next_token)
        if not (isinstance(cursor, list) and len(cursor) == 2):
            raise ValidationError("Invalid nextToken")
        before = (float(cursor[0]), str(cursor[1]))
    backend.advance()
    with backend.lock:
        store = backend.store(datastore_id)
        jobs = sorted(
            (
                j
                for j in store.import_jobs.values()
                if (status is None or j.status == status)
                and (before is None or _job_key(j) < before)
            ),
            key=_job_key,
            reverse=True,
        )
        page = jobs[:limit]
        out: dict[str, Any] = {"jobSummaries": [wire.import_job_summary(j) for j in page]}
    if len(jobs) > limit:
        out["nextToken"] = backend.tokens.encode(scope, list(_job_key(page[-1])))
    return out


def get_dicom_import_job(backend: Backend, datastore_id: str, job_id: str) -> dict[str, Any]:
    """GetDICOMImportJob."""
    check_id(datastore_id, "datastoreId")
    check_string(job_id, "jobId", _JOB_ID)
    backend.advance()
    with backend.lock:
        job = backend.import_job(backend.store(datastore_id), job_id)
        return {"jobProperties": wire.import_job_properties(job)}


def create_datastore(backend: Backend, body: Mapping[str, Any]) -> dict[str, Any]:
    """CreateDatastore: CREATING now, ACTIVE after the datastore timing."""
    _member(body, "clientToken", _CLIENT_TOKEN, required=True)
    name = _member(body, "datastoreName", _DATASTORE_NAME, required=False)
    ds_id = backend.create_datastore_async(name or "datastore")
    with backend.lock:
        return {"datastoreId": ds_id, "datastoreStatus": backend.store(ds_id).status}


def delete_datastore(backend: Backend, datastore_id: str) -> dict[str, Any]:
    """DeleteDatastore: DELETING now, DELETED after the datastore timing."""
    check_id(datastore_id, "datastoreId")
    status = backend.delete_datastore_async(datastore_id)
    return {"datastoreId": datastore_id, "datastoreStatus": status}
