"""Data-plane routing: method + path → operation, with auth, faults and error mapping."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import operations
from .backend import Backend
from .errors import ApiError, InternalError, MissingAuthError, UnknownOperationError
from .messages import Request, Response, error_response, int_param, json_body, json_response

log = logging.getLogger("exporter.emulator")

Handler = Callable[[Backend, Request, dict[str, str]], dict[str, Any]]


@dataclass(frozen=True)
class Route:
    """One operation of the service model: its HTTP binding and its handler."""

    operation: str
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def _list_versions(backend: Backend, request: Request, p: dict[str, str]) -> dict[str, Any]:
    json_body(request)
    return operations.list_image_set_versions(
        backend,
        p["datastoreId"],
        p["imageSetId"],
        int_param(request, "maxResults"),
        request.query.get("nextToken"),
    )


def _get_image_set(backend: Backend, request: Request, p: dict[str, str]) -> dict[str, Any]:
    json_body(request)
    return operations.get_image_set(
        backend, p["datastoreId"], p["imageSetId"], request.query.get("version")
    )


def _search(backend: Backend, request: Request, p: dict[str, str]) -> dict[str, Any]:
    return operations.search_image_sets(
        backend,
        p["datastoreId"],
        json_body(request),
        int_param(request, "maxResults"),
        request.query.get("nextToken"),
    )


def _list_datastores(backend: Backend, request: Request, p: dict[str, str]) -> dict[str, Any]:
    return operations.list_datastores(
        backend,
        request.query.get("datastoreStatus"),
        int_param(request, "maxResults"),
        request.query.get("nextToken"),
    )


def _get_datastore(backend: Backend, request: Request, p: dict[str, str]) -> dict[str, Any]:
    return operations.get_datastore(backend, p["datastoreId"])


def _create_datastore(backend: Backend, request: Request, p: dict[str, str]) -> dict[str, Any]:
    return operations.create_datastore(backend, json_body(request))


def _delete_datastore(backend: Backend, request: Request, p: dict[str, str]) -> dict[str, Any]:
    return operations.delete_datastore(backend, p["datastoreId"])


def _start_job(backend: Backend, request: Request, p: dict[str, str]) -> dict[str, Any]:
    return operations.start_dicom_import_job(backend, p["datastoreId"], json_body(request))


def _list_jobs(backend: Backend, request: Request, p: dict[str, str]) -> dict[str, Any]:
    return operations.list_dicom_import_jobs(
        backend,
        p["datastoreId"],
        request.query.get("jobStatus"),
        int_param(request, "maxResults"),
        request.query.get("nextToken"),
    )


def _get_job(backend: Backend, request: Request, p: dict[str, str]) -> dict[str, Any]:
    return operations.get_dicom_import_job(backend, p["datastoreId"], p["jobId"])


_SEG = r"[^/]+"
ROUTES: tuple[Route, ...] = (
    Route(
        "ListImageSetVersions",
        "POST",
        re.compile(
            rf"/datastore/(?P<datastoreId>{_SEG})/imageSet/(?P<imageSetId>{_SEG})"
            r"/listImageSetVersions"
        ),
        _list_versions,
    ),
    Route(
        "GetImageSet",
        "POST",
        re.compile(
            rf"/datastore/(?P<datastoreId>{_SEG})/imageSet/(?P<imageSetId>{_SEG})/getImageSet"
        ),
        _get_image_set,
    ),
    Route(
        "SearchImageSets",
        "POST",
        re.compile(rf"/datastore/(?P<datastoreId>{_SEG})/searchImageSets"),
        _search,
    ),
    Route("ListDatastores", "GET", re.compile(r"/datastore"), _list_datastores),
    Route("CreateDatastore", "POST", re.compile(r"/datastore"), _create_datastore),
    Route(
        "GetDatastore", "GET", re.compile(rf"/datastore/(?P<datastoreId>{_SEG})"), _get_datastore
    ),
    Route(
        "DeleteDatastore",
        "DELETE",
        re.compile(rf"/datastore/(?P<datastoreId>{_SEG})"),
        _delete_datastore,
    ),
    Route(
        "StartDICOMImportJob",
        "POST",
        re.compile(rf"/startDICOMImportJob/datastore/(?P<datastoreId>{_SEG})"),
        _start_job,
    ),
    Route(
        "ListDICOMImportJobs",
        "GET",
        re.compile(rf"/listDICOMImportJobs/datastore/(?P<datastoreId>{_SEG})"),
        _list_jobs,
    ),
    Route(
        "GetDICOMImportJob",
        "GET",
        re.compile(rf"/getDICOMImportJob/datastore/(?P<datastoreId>{_SEG})/job/(?P<jobId>{_SEG})"),
        _get_job,
    ),
)


def _signed(request: Request) -> bool:
    """A SigV4 Authorization header is present; the signature itself is not verified."""
    auth = request.header("Authorization") or ""
    return auth.startswith("AWS4-HMAC-SHA256 ") and "Credential=" in auth


def dispatch(backend: Backend, request: Request) -> Response:
    """Answer one data-plane request; never raises."""
    for route in ROUTES:
        match = route.pattern.fullmatch(request.path)
        if match and route.method == request.method:
            return _call(backend, route, request, match.groupdict())
    return error_response(
        UnknownOperationError(f"No operation matches {request.method} {request.path}")
    )


def _call(backend: Backend, route: Route, request: Request, params: dict[str, str]) -> Response:
    backend.record_request(route.operation)
    try:
        if not _signed(request):
            raise MissingAuthError("Missing Authentication Token")
        latency = backend.latency()
        if latency > 0:
            time.sleep(latency)
        backend.admit(route.operation, params.get("datastoreId"))
        payload = route.handler(backend, request, params)
    except ApiError as exc:
        return error_response(exc)
    except Exception as exc:
        log.error("%s failed: %s: %s", route.operation, type(exc).__name__, exc)
        return error_response(InternalError("Internal server error"))
    response = json_response(200, payload)
    if backend.take_malformed():
        # Cut the JSON mid-way: a client must treat this as a parse failure, not data.
        return Response(200, response.body[: max(1, len(response.body) // 2)], response.headers)
    return response
