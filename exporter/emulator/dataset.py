"""Reads and validates dataset files (YAML or JSON) into datastore records."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import DatasetError
from .model import (
    DATASTORE_STATUSES,
    ID_PATTERN,
    IMAGE_SET_STATES,
    WORKFLOW_STATUSES,
    Datastore,
    ImageSet,
    Version,
)

_ID_RE = re.compile(ID_PATTERN)
# The DICOMTags members of the service model, with whether each is an integer.
DICOM_TAGS: dict[str, bool] = {
    "DICOMPatientId": False,
    "DICOMPatientName": False,
    "DICOMPatientBirthDate": False,
    "DICOMPatientSex": False,
    "DICOMStudyInstanceUID": False,
    "DICOMStudyId": False,
    "DICOMStudyDescription": False,
    "DICOMNumberOfStudyRelatedSeries": True,
    "DICOMNumberOfStudyRelatedInstances": True,
    "DICOMAccessionNumber": False,
    "DICOMSeriesInstanceUID": False,
    "DICOMSeriesModality": False,
    "DICOMSeriesBodyPart": False,
    "DICOMSeriesNumber": True,
    "DICOMStudyDate": False,
    "DICOMStudyTime": False,
}
_DATASTORE_KEYS = {
    "datastoreId",
    "datastoreName",
    "datastoreStatus",
    "createdAt",
    "updatedAt",
    "imageSets",
}
_IMAGE_SET_KEYS = {"imageSetId", "DICOMTags", "versions"}
_VERSION_KEYS = {
    "versionId",
    "imageSetState",
    "ImageSetWorkflowStatus",
    "createdAt",
    "updatedAt",
    "deletedAt",
    "message",
    "overrides",
    "isPrimary",
}


def demo_path() -> Path:
    """Where the shipped demo dataset lives."""
    return Path(str(resources.files("exporter.emulator") / "data" / "demo.yaml"))


def read_source(source: str | os.PathLike[str] | Mapping[str, Any]) -> Mapping[str, Any]:
    """Parse a YAML/JSON file (JSON is YAML) or pass an already-parsed mapping through."""
    if isinstance(source, Mapping):
        return source
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {os.fspath(source)!r}: {exc.strerror}") from None
    return parse_text(text)


def parse_text(text: str) -> Mapping[str, Any]:
    """Parse YAML or JSON text into a mapping, or raise DatasetError in one line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"dataset is not valid YAML or JSON{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise DatasetError("dataset: expected a mapping with a 'datastores' list")
    return data


def build(data: Mapping[str, Any], now: float) -> list[Datastore]:
    """Validate a parsed dataset and turn it into datastore records; `now` fills missing dates."""
    _check_keys(data, {"datastores"}, "dataset")
    stores = _list(data.get("datastores", []), "datastores")
    out: list[Datastore] = []
    seen: set[str] = set()
    for i, raw in enumerate(stores):
        store = _datastore(raw, f"datastores[{i}]", now)
        if store.datastore_id in seen:
            raise DatasetError(f"datastores[{i}].datastoreId: duplicate {store.datastore_id!r}")
        seen.add(store.datastore_id)
        out.append(store)
    return out


def _datastore(raw: Any, where: str, now: float) -> Datastore:
    obj = _mapping(raw, where)
    _check_keys(obj, _DATASTORE_KEYS, where)
    ds_id = _id(obj.get("datastoreId"), f"{where}.datastoreId")
    name = _str(obj.get("datastoreName", "datastore"), f"{where}.datastoreName")
    status = _enum(
        obj.get("datastoreStatus", "ACTIVE"), DATASTORE_STATUSES, f"{where}.datastoreStatus"
    )
    created = _time(obj.get("createdAt", now), f"{where}.createdAt")
    updated = _time(obj.get("updatedAt", created), f"{where}.updatedAt")
    image_sets: dict[str, ImageSet] = {}
    for j, raw_set in enumerate(_list(obj.get("imageSets", []), f"{where}.imageSets")):
        image_set = image_set_from(raw_set, f"{where}.imageSets[{j}]", now)
        if image_set.image_set_id in image_sets:
            raise DatasetError(
                f"{where}.imageSets[{j}].imageSetId: duplicate {image_set.image_set_id!r}"
            )
        image_sets[image_set.image_set_id] = image_set
    store = Datastore(ds_id, name, status, created, updated)
    store.put(list(image_sets.values()))
    return store


def image_set_from(raw: Any, where: str, now: float) -> ImageSet:
    """Validate one image set entry (id, DICOMTags, versions oldest first)."""
    obj = _mapping(raw, where)
    _check_keys(obj, _IMAGE_SET_KEYS, where)
    set_id = _id(obj.get("imageSetId"), f"{where}.imageSetId")
    tags = dicom_tags(obj.get("DICOMTags", {}), f"{where}.DICOMTags")
    raw_versions = _list(obj.get("versions"), f"{where}.versions")
    if not raw_versions:
        raise DatasetError(f"{where}.versions: an image set needs at least one version")
    versions: list[Version] = []
    for k, raw_version in enumerate(raw_versions):
        previous = int(versions[-1].version_id) if versions else 0
        versions.append(_version(raw_version, f"{where}.versions[{k}]", previous))
    created = versions[0].created_at if versions[0].created_at is not None else now
    updated = max(v.changed_at for v in versions)
    return ImageSet(set_id, versions, tags, created, max(updated, created))


def _version(raw: Any, where: str, previous: int) -> Version:
    obj = _mapping(raw, where)
    _check_keys(obj, _VERSION_KEYS, where)
    version_id = obj.get("versionId", str(previous + 1))
    if isinstance(version_id, int) and not isinstance(version_id, bool):
        version_id = str(version_id)
    if not isinstance(version_id, str) or not version_id.isdigit():
        raise DatasetError(f"{where}.versionId: expected a string of digits, got {version_id!r}")
    if int(version_id) <= previous:
        raise DatasetError(
            f"{where}.versionId: {version_id!r} must be greater than the previous version "
            "(list versions oldest first)"
        )
    forced: bool | None = None
    if "overrides" in obj:
        overrides = _mapping(obj["overrides"], f"{where}.overrides")
        _check_keys(overrides, {"forced"}, f"{where}.overrides")
        forced = _opt_bool(overrides.get("forced"), f"{where}.overrides.forced")
    status = obj.get("ImageSetWorkflowStatus")
    return Version(
        version_id=version_id,
        state=_enum(obj.get("imageSetState", "ACTIVE"), IMAGE_SET_STATES, f"{where}.imageSetState"),
        workflow_status=None
        if status is None
        else _enum(status, WORKFLOW_STATUSES, f"{where}.ImageSetWorkflowStatus"),
        created_at=_opt_time(obj.get("createdAt"), f"{where}.createdAt"),
        updated_at=_opt_time(obj.get("updatedAt"), f"{where}.updatedAt"),
        deleted_at=_opt_time(obj.get("deletedAt"), f"{where}.deletedAt"),
        message=None if obj.get("message") is None else _str(obj["message"], f"{where}.message"),
        forced=forced,
        is_primary=_opt_bool(obj.get("isPrimary"), f"{where}.isPrimary"),
    )


def dicom_tags(raw: Any, where: str) -> dict[str, Any]:
    """Validate a DICOMTags mapping against the model's member names and types."""
    obj = _mapping(raw, where)
    _check_keys(obj, set(DICOM_TAGS), where)
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if DICOM_TAGS[key]:
            if isinstance(value, bool) or not isinstance(value, int):
                raise DatasetError(f"{where}.{key}: expected an integer, got {value!r}")
        elif not isinstance(value, str):
            raise DatasetError(f"{where}.{key}: expected a string, got {value!r}")
        out[key] = value
    return out


def _check_keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise DatasetError(
            f"{where}.{unknown[0]}: unknown field (expected one of {', '.join(sorted(allowed))})"
        )


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return raw


def _list(raw: Any, where: str) -> list[Any]:
    if not isinstance(raw, list):
        raise DatasetError(f"{where}: expected a list, got {type(raw).__name__}")
    return raw


def _str(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise DatasetError(f"{where}: expected a non-empty string, got {raw!r}")
    return raw


def _id(raw: Any, where: str) -> str:
    # YAML reads an all-digit id as an int, which would silently lose leading zeros: say so.
    if not isinstance(raw, str) or not _ID_RE.fullmatch(raw):
        hint = " (quote it in YAML)" if isinstance(raw, int) else ""
        raise DatasetError(f"{where}: expected 32 characters of [0-9a-z], got {raw!r}{hint}")
    return raw


def _enum(raw: Any, allowed: tuple[str, ...], where: str) -> str:
    if raw not in allowed:
        raise DatasetError(f"{where}: {raw!r} is not one of {', '.join(allowed)}")
    return str(raw)


def _opt_bool(raw: Any, where: str) -> bool | None:
    if raw is not None and not isinstance(raw, bool):
        raise DatasetError(f"{where}: expected true or false, got {raw!r}")
    return raw


def _time(raw: Any, where: str) -> float:
    value = _opt_time(raw, where)
    if value is None:
        raise DatasetError(f"{where}: expected a timestamp")
    return value


def _opt_time(raw: Any, where: str) -> float | None:
    """Epoch seconds as a number, or an ISO 8601 string/date (YAML parses bare ones itself)."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise DatasetError(f"{where}: expected epoch seconds or ISO 8601, got {raw!r}")
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            raw = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise DatasetError(
                f"{where}: expected epoch seconds or ISO 8601, got {raw!r}"
            ) from None
    if isinstance(raw, dt.datetime):
        if raw.tzinfo is None:
            raw = raw.replace(tzinfo=dt.UTC)
        return float(raw.timestamp())
    raise DatasetError(f"{where}: expected epoch seconds or ISO 8601, got {raw!r}")
