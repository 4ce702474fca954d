"""The unsigned admin API under /_emulator/: load data, mutate it, set faults, read counters."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any

from . import dataset
from .backend import Backend
from .errors import ApiError, DatasetError, InternalError, UnknownOperationError, ValidationError
from .events import EventSettings
from .faults import Faults
from .messages import Request, Response, error_response, json_body, json_response

PREFIX = "/_emulator/"
log = logging.getLogger("exporter.emulator")

AdminHandler = Callable[[Backend, Request, dict[str, str]], tuple[int, Any]]


def _field(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """An optional body field of the given type; ValidationException naming it otherwise."""
    value = body.get(name)
    if value is None:
        return default
    # bool is an int in Python, but true is no count and 1 is no flag.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValidationError(f"{name} must be of type {kind.__name__}")
    return value


def _timestamp_field(body: dict[str, Any], name: str) -> float | None:
    """An optional epoch-seconds field; ValidationException unless it is a finite number."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"{name} must be a number of epoch seconds")
    return float(value)


def _health(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    with backend.lock:
        stores = backend.datastores()
        image_sets = sum(len(s.image_sets) for s in stores)
    return 200, {"status": "ok", "datastores": len(stores), "imageSets": image_sets}


def _load(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("dataset body must be UTF-8 YAML or JSON") from None
    try:
        backend.load_dataset(dataset.parse_text(text))
    except DatasetError as exc:
        raise ValidationError(str(exc)) from None
    return _health(backend, request, p)


def _create_datastore(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    ds_id = backend.create_datastore(
        _field(body, "datastoreId", str, None),
        _field(body, "datastoreName", str, "datastore"),
        _field(body, "datastoreStatus", str, "ACTIVE"),
    )
    return 201, {"datastoreId": ds_id}


def _create_image_set(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    set_id = backend.create_image_set(
        p["ds"],
        _field(body, "imageSetId", str, None),
        _field(body, "workflowStatus", str, "IMPORTED"),
        _field(body, "DICOMTags", dict, None),
    )
    return 201, {"imageSetId": set_id, "versionId": "1"}


def _add_version(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    version_id = backend.add_version(
        p["ds"],
        p["id"],
        _field(body, "workflowStatus", str, "UPDATED"),
        forced=_field(body, "forced", bool, False),
        message=_field(body, "message", str, None),
        state=_field(body, "state", str, "ACTIVE"),
        updated_at=_timestamp_field(body, "updatedAt"),
        source_image_set_arn=_field(body, "sourceImageSetArn", str, None),
    )
    return 201, {"versionId": version_id}


def _set_status(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    status = _field(body, "workflowStatus", str, None)
    if status is None:
        raise ValidationError("workflowStatus is required")
    backend.set_workflow_status(
        p["ds"],
        p["id"],
        p["v"],
        status,
        _field(body, "message", str, None),
        updated_at=_timestamp_field(body, "updatedAt"),
        state=_field(body, "state", str, None),
        source_image_set_arn=_field(body, "sourceImageSetArn", str, None),
    )
    return 200, {}


def _delete_image_set(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    backend.delete_image_set(p["ds"], p["id"])
    return 200, {}


def _generate(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    count = _field(body, "count", int, None)
    if count is None:
        raise ValidationError("count is required")
    ids = backend.generate(p["ds"], count, seed=_field(body, "seed", int, 0))
    return 201, {"count": len(ids), "imageSetIds": ids}


def _get_faults(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    return 200, backend.faults.to_dict()


def _put_faults(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    try:
        faults = Faults.from_dict(json_body(request))
    except (TypeError, ValueError) as exc:
        raise ValidationError(str(exc)) from None
    backend.set_faults(faults)
    return _get_faults(backend, request, p)


def _number(body: dict[str, Any], name: str, default: Any) -> Any:
    """An optional int or float field (a JSON number); ValidationException otherwise."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{name} must be a number")
    return float(value)


def _set_datastore_status(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    status = _field(body, "datastoreStatus", str, None)
    if status is None:
        raise ValidationError("datastoreStatus is required")
    after = _number(body, "after", None)
    if after is None:
        backend.set_datastore_status(p["ds"], status)
    else:
        backend.schedule_datastore_status(p["ds"], status, after)
    return 200, {}


def _start_job(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    defaults: dict[str, Any] = {}
    for key, name in (
        ("inputS3Uri", "input_s3_uri"),
        ("outputS3Uri", "output_s3_uri"),
        ("dataAccessRoleArn", "data_access_role_arn"),
    ):
        value = _field(body, key, str, None)
        if value is not None:
            defaults[name] = value
    job_id = backend.start_import_job(
        p["ds"],
        job_name=_field(body, "jobName", str, None),
        status=_field(body, "status", str, "COMPLETED"),
        message=_field(body, "message", str, None),
        imported_files=_field(body, "importedFiles", int, 1),
        failed_files=_field(body, "failedFiles", int, 0),
        server_error_files=_field(body, "serverErrorFiles", int, 0),
        submitted_seconds=_number(body, "submittedSeconds", None),
        in_progress_seconds=_number(body, "inProgressSeconds", None),
        **defaults,
    )
    return 201, {"jobId": job_id}


def _job_outcome(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    status = _field(body, "status", str, None)
    if status is None:
        raise ValidationError("status is required")
    backend.set_import_job_outcome(
        p["ds"],
        p["job"],
        status,
        message=_field(body, "message", str, None),
        imported_files=_field(body, "importedFiles", int, None),
        failed_files=_field(body, "failedFiles", int, 0),
        server_error_files=_field(body, "serverErrorFiles", int, 0),
        now=_field(body, "now", bool, False),
    )
    return 200, {}


def _generate_jobs(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    count = _field(body, "count", int, None)
    if count is None:
        raise ValidationError("count is required")
    ids = backend.generate_import_jobs(
        p["ds"],
        count,
        seed=_field(body, "seed", int, 0),
        spread_seconds=_number(body, "spreadSeconds", 7 * 86_400.0),
        failed_ratio=_number(body, "failedRatio", 0.05),
        active=_field(body, "active", int, 0),
    )
    return 201, {"count": len(ids), "jobIds": ids}


def _get_timing(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    return 200, backend.timing()


def _put_timing(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    unknown = sorted(set(body) - set(backend.timing()))
    if unknown:
        raise ValidationError(f"unknown timing setting(s): {', '.join(unknown)}")
    current = backend.timing()
    merged = {k: _number(body, k, v) for k, v in current.items()}
    backend.set_import_job_timing(
        merged["import_job_submitted_seconds"], merged["import_job_in_progress_seconds"]
    )
    backend.set_datastore_timing(
        merged["datastore_creating_seconds"], merged["datastore_deleting_seconds"]
    )
    return 200, backend.timing()


def _get_events(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    return 200, {**backend.event_settings.to_dict(), "counts": backend.event_counts()}


def _put_events(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    try:
        settings = EventSettings.from_dict(json_body(request))
    except (TypeError, ValueError) as exc:
        raise ValidationError(str(exc)) from None
    backend.configure_events(settings)
    return _get_events(backend, request, p)


def _recent_events(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    return 200, [{"event": r.event, "dropped": r.dropped} for r in backend.recorded_events()]


def _get_s3(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    return 200, {"endpoint_url": backend.s3_endpoint_url, "counts": backend.s3_output_counts()}


def _put_s3(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    unknown = sorted(set(body) - {"endpoint_url"})
    if unknown:
        raise ValidationError(f"unknown S3 setting(s): {', '.join(unknown)}")
    backend.configure_s3_output(_field(body, "endpoint_url", str, None))
    return _get_s3(backend, request, p)


def _advance(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    backend.advance()
    return 200, {}


def _flush(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    body = json_body(request)
    timeout = _number(body, "timeout", 30.0)
    return 200, {"flushed": backend.flush(min(timeout, 120.0))}


def _get_requests(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    return 200, backend.request_counts()


def _reset_requests(backend: Backend, request: Request, p: dict[str, str]) -> tuple[int, Any]:
    backend.reset_request_counts()
    return 200, {}


_DS = r"datastores/(?P<ds>[^/]+)"
_SET = rf"{_DS}/imagesets/(?P<id>[^/]+)"
ADMIN_ROUTES: tuple[tuple[str, re.Pattern[str], AdminHandler], ...] = tuple(
    (method, re.compile(PREFIX + pattern), handler)
    for method, pattern, handler in (
        ("GET", "health", _health),
        ("POST", "dataset", _load),
        ("POST", "datastores", _create_datastore),
        ("POST", f"{_DS}/imagesets", _create_image_set),
        ("POST", f"{_SET}/versions", _add_version),
        ("PUT", rf"{_SET}/versions/(?P<v>[^/]+)", _set_status),
        ("DELETE", _SET, _delete_image_set),
        ("POST", f"{_DS}/generate", _generate),
        ("PUT", f"{_DS}/status", _set_datastore_status),
        ("POST", f"{_DS}/importjobs", _start_job),
        ("POST", f"{_DS}/importjobs/generate", _generate_jobs),
        ("PUT", rf"{_DS}/importjobs/(?P<job>[^/]+)/outcome", _job_outcome),
        ("GET", "timing", _get_timing),
        ("PUT", "timing", _put_timing),
        ("GET", "events", _get_events),
        ("PUT", "events", _put_events),
        ("GET", "events/recent", _recent_events),
        ("GET", "s3", _get_s3),
        ("PUT", "s3", _put_s3),
        ("POST", "advance", _advance),
        ("POST", "flush", _flush),
        ("GET", "faults", _get_faults),
        ("PUT", "faults", _put_faults),
        ("GET", "requests", _get_requests),
        ("DELETE", "requests", _reset_requests),
    )
)


def dispatch(backend: Backend, request: Request) -> Response:
    """Answer one admin request; never raises."""
    for method, pattern, handler in ADMIN_ROUTES:
        match = pattern.fullmatch(request.path)
        if match and method == request.method:
            try:
                status, payload = handler(backend, request, match.groupdict())
            except ApiError as exc:
                return error_response(exc)
            except Exception as exc:
                log.error("admin %s failed: %s: %s", request.path, type(exc).__name__, exc)
                return error_response(InternalError("Internal server error"))
            return json_response(status, payload)
    return error_response(
        UnknownOperationError(f"No admin route matches {request.method} {request.path}")
    )
