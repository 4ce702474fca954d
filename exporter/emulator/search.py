"""SearchImageSets: parses the search criteria and pages through the sorted indexes."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ValidationError
from .index import Key
from .model import Datastore, ImageSet

TIME_FIELDS = ("createdAt", "updatedAt")
# Union members matched by equality against the image set's DICOM tags.
_TAG_FIELDS = (
    "DICOMPatientId",
    "DICOMAccessionNumber",
    "DICOMStudyId",
    "DICOMStudyInstanceUID",
    "DICOMSeriesInstanceUID",
)
_UNION_MEMBERS = (*TIME_FIELDS, *_TAG_FIELDS, "isPrimary", "DICOMStudyDateAndTime")


@dataclass(frozen=True)
class SearchQuery:
    """A validated query: inclusive time ranges, equality predicates and the sort."""

    ranges: tuple[tuple[str, float, float], ...]
    equals: tuple[tuple[str, str | bool], ...]
    sort_field: str = "updatedAt"
    sort_order: str = "DESC"

    def scope(self, datastore_id: str) -> str:
        """Binds page tokens to this exact query so they cannot be replayed on another."""
        return json.dumps(
            [
                "SearchImageSets",
                datastore_id,
                self.ranges,
                self.equals,
                self.sort_field,
                self.sort_order,
            ]
        )

    def range_of(self, field: str) -> tuple[float, float] | None:
        """The intersection of all ranges on `field`, or None when it is unfiltered."""
        bounds = [(lo, hi) for f, lo, hi in self.ranges if f == field]
        if not bounds:
            return None
        return max(lo for lo, _ in bounds), min(hi for _, hi in bounds)

    def matches(self, image_set: ImageSet) -> bool:
        """Whether the image set satisfies every filter."""
        for field, lo, hi in self.ranges:
            value = image_set.created_at if field == "createdAt" else image_set.updated_at
            if not lo <= value <= hi:
                return False
        for field, expected in self.equals:
            if field == "isPrimary":
                if image_set.latest.is_primary is not expected:
                    return False
            elif image_set.dicom_tags.get(field) != expected:
                return False
        return True


def parse_criteria(body: Mapping[str, Any]) -> SearchQuery:
    """Validate a SearchCriteria body; unsupported-but-modelled members are refused clearly."""
    ranges: list[tuple[str, float, float]] = []
    equals: list[tuple[str, str | bool]] = []
    filters = body.get("filters")
    if filters is not None:
        if not isinstance(filters, list) or not 1 <= len(filters) <= 2:
            raise ValidationError("searchCriteria.filters must be a list of 1 to 2 filters")
        for i, item in enumerate(filters):
            _parse_filter(item, f"searchCriteria.filters.{i + 1}", ranges, equals)
    sort = body.get("sort")
    if sort is None:
        return SearchQuery(tuple(ranges), tuple(equals))
    if not isinstance(sort, Mapping):
        raise ValidationError("searchCriteria.sort must be an object")
    order, field = sort.get("sortOrder"), sort.get("sortField")
    if order not in ("ASC", "DESC"):
        raise ValidationError(f"searchCriteria.sort.sortOrder must be ASC or DESC, got {order!r}")
    if field == "DICOMStudyDateAndTime":
        raise ValidationError("Sorting by DICOMStudyDateAndTime is not supported by the emulator")
    if field not in TIME_FIELDS:
        raise ValidationError(
            f"searchCriteria.sort.sortField must be updatedAt or createdAt, got {field!r}"
        )
    return SearchQuery(tuple(ranges), tuple(equals), str(field), str(order))


def _parse_filter(
    item: Any,
    where: str,
    ranges: list[tuple[str, float, float]],
    equals: list[tuple[str, str | bool]],
) -> None:
    if not isinstance(item, Mapping):
        raise ValidationError(f"{where} must be an object")
    operator, values = item.get("operator"), item.get("values")
    if operator not in ("EQUAL", "BETWEEN"):
        raise ValidationError(f"{where}.operator must be EQUAL or BETWEEN, got {operator!r}")
    want = 1 if operator == "EQUAL" else 2
    if not isinstance(values, list) or len(values) != want:
        raise ValidationError(f"{where}.values must hold {want} value(s) for {operator}")
    parsed = [_union_value(v, f"{where}.values.{n + 1}") for n, v in enumerate(values)]
    fields = {f for f, _ in parsed}
    if len(fields) != 1:
        raise ValidationError(f"{where}.values must all name the same attribute")
    field = fields.pop()
    if field == "DICOMStudyDateAndTime":
        raise ValidationError("Filtering on DICOMStudyDateAndTime is not supported by the emulator")
    if field in TIME_FIELDS:
        times = [float(v) for _, v in parsed]
        if operator == "BETWEEN" and times[0] > times[1]:
            raise ValidationError(f"{where}: BETWEEN needs (lowerBound, upperBound)")
        ranges.append((field, times[0], times[-1]))
    elif operator == "BETWEEN":
        raise ValidationError(f"{where}: BETWEEN is only valid for createdAt and updatedAt")
    else:
        value = parsed[0][1]
        assert isinstance(value, str | bool)
        equals.append((field, value))


def _union_value(raw: Any, where: str) -> tuple[str, Any]:
    """A SearchByAttributeValue union: exactly one member, of the member's type."""
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ValidationError(f"{where} must set exactly one attribute")
    ((field, value),) = raw.items()
    if field not in _UNION_MEMBERS:
        raise ValidationError(f"{where}: unknown search attribute {field!r}")
    if field in TIME_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(f"{where}.{field} must be a timestamp in epoch seconds")
    elif field == "isPrimary":
        if not isinstance(value, bool):
            raise ValidationError(f"{where}.isPrimary must be a boolean")
    elif field in _TAG_FIELDS and not isinstance(value, str):
        raise ValidationError(f"{where}.{field} must be a string")
    return field, value


def run(
    store: Datastore, query: SearchQuery, limit: int, after: Key | None
) -> tuple[list[ImageSet], Key | None]:
    """One page of matches past the cursor `after`, and the cursor for the next page if any."""
    hits: list[ImageSet] = []
    for key in _candidates(store, query, after):
        image_set = store.image_sets[key[1]]
        if not query.matches(image_set):
            continue
        if len(hits) == limit:
            last = hits[-1]
            return hits, (_sort_value(last, query.sort_field), last.image_set_id)
        hits.append(image_set)
    return hits, None


def _sort_value(image_set: ImageSet, field: str) -> float:
    return image_set.created_at if field == "createdAt" else image_set.updated_at


def _candidates(store: Datastore, query: SearchQuery, after: Key | None) -> Iterator[Key]:
    """Keys in result order; bisects the sort index, or the filtered one when that differs."""
    descending = query.sort_order == "DESC"
    own = query.range_of(query.sort_field)
    other_field = next((f for f in TIME_FIELDS if f != query.sort_field), "")
    other = query.range_of(other_field)
    if own is None and other is not None:
        # Only the other time field is filtered: take its (bisected) range, then order it.
        keys = sorted(
            (
                (_sort_value(store.image_sets[i], query.sort_field), i)
                for _, i in store.index(other_field).walk(*other, descending=False)
            ),
            reverse=descending,
        )
        for key in keys:
            if after is None or (key < after if descending else key > after):
                yield key
        return
    low, high = own if own is not None else (None, None)
    yield from store.index(query.sort_field).walk(low, high, descending=descending, after=after)
