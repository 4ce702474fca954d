"""The five data-plane operations, taking parsed arguments and returning response bodies."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

from . import search, wire
from .backend import Backend, check_enum, check_id
from .errors import ConflictError, NotFoundError, ValidationError
from .model import DATASTORE_STATUSES, Datastore

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
    with backend.lock:
        store = backend.store(datastore_id)
        return {
            "datastoreProperties": wire.datastore_properties(
                store, backend.datastore_arn(datastore_id)
            )
        }
