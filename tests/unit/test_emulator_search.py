"""SearchImageSets: filters, sorting and key-cursor paging against a brute-force oracle."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.emulator import Backend
from exporter.emulator import operations as ops
from exporter.emulator.errors import ValidationError
from exporter.emulator.index import SortedIndex
from tests.helpers import DEMO_DATASTORE

DS = DEMO_DATASTORE
NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def big() -> Backend:
    b = Backend(clock=lambda: NOW)
    b.create_datastore(DS)
    b.generate(DS, 3000, seed=3)
    return b


def pages(b: Backend, criteria: dict[str, Any], size: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token = None
    while True:
        resp = ops.search_image_sets(b, DS, criteria, size, token)
        assert resp["sort"] == criteria.get("sort", {"sortOrder": "DESC", "sortField": "updatedAt"})
        assert len(resp["imageSetsMetadataSummaries"]) <= size
        out.extend(resp["imageSetsMetadataSummaries"])
        token = resp.get("nextToken")
        if token is None:
            return out


def oracle(b: Backend, field: str, order: str, ranges: dict[str, tuple[float, float]]) -> list[str]:
    with b.lock:
        sets = list(b.store(DS).image_sets.values())
    keep = [
        s
        for s in sets
        if all(
            lo <= (s.created_at if f == "createdAt" else s.updated_at) <= hi
            for f, (lo, hi) in ranges.items()
        )
    ]
    keep.sort(
        key=lambda s: (s.created_at if field == "createdAt" else s.updated_at, s.image_set_id),
        reverse=order == "DESC",
    )
    return [s.image_set_id for s in keep]


def between(field: str, lo: float, hi: float) -> dict[str, Any]:
    return {"operator": "BETWEEN", "values": [{field: lo}, {field: hi}]}


@pytest.mark.parametrize("sort_field", ["updatedAt", "createdAt"])
@pytest.mark.parametrize("order", ["ASC", "DESC"])
@pytest.mark.parametrize("filter_field", [None, "updatedAt", "createdAt"])
def test_search_matches_oracle(
    big: Backend, sort_field: str, order: str, filter_field: str | None
) -> None:
    criteria: dict[str, Any] = {"sort": {"sortField": sort_field, "sortOrder": order}}
    ranges: dict[str, tuple[float, float]] = {}
    if filter_field:
        lo, hi = NOW - 20 * 86400, NOW - 10 * 86400
        criteria["filters"] = [between(filter_field, lo, hi)]
        ranges[filter_field] = (lo, hi)
    got = [s["imageSetId"] for s in pages(big, criteria, 37)]
    assert got == oracle(big, sort_field, order, ranges)
    assert got


def test_two_filters_intersect(big: Backend) -> None:
    criteria = {
        "filters": [
            between("createdAt", NOW - 25 * 86400, NOW - 5 * 86400),
            between("updatedAt", NOW - 15 * 86400, NOW),
        ]
    }
    ranges = {
        "createdAt": (NOW - 25 * 86400, NOW - 5 * 86400),
        "updatedAt": (NOW - 15 * 86400, NOW),
    }
    got = [s["imageSetId"] for s in pages(big, criteria, 50)]
    assert got == oracle(big, "updatedAt", "DESC", ranges)


def test_equal_on_updated_at_and_on_dicom_tag(big: Backend) -> None:
    first = ops.search_image_sets(big, DS, {}, 1)["imageSetsMetadataSummaries"][0]
    eq = {"filters": [{"operator": "EQUAL", "values": [{"updatedAt": first["updatedAt"]}]}]}
    assert first["imageSetId"] in [s["imageSetId"] for s in pages(big, eq, 50)]
    patient = first["DICOMTags"]["DICOMPatientId"]
    by_tag = {"filters": [{"operator": "EQUAL", "values": [{"DICOMPatientId": patient}]}]}
    assert [s["imageSetId"] for s in pages(big, by_tag, 50)] == [first["imageSetId"]]


def test_summary_shape(big: Backend) -> None:
    s = ops.search_image_sets(big, DS, {}, 1)["imageSetsMetadataSummaries"][0]
    assert set(s) == {"imageSetId", "version", "createdAt", "updatedAt", "isPrimary", "DICOMTags"}
    assert isinstance(s["version"], int) and s["isPrimary"] is True


def test_paging_is_stable_while_data_changes() -> None:
    clock = [NOW]
    b = Backend(clock=lambda: clock[0])
    b.create_datastore(DS)
    ids = b.generate(DS, 200, seed=1)
    first = ops.search_image_sets(b, DS, {}, 50)
    seen = [s["imageSetId"] for s in first["imageSetsMetadataSummaries"]]
    unseen = [i for i in ids if i not in seen]
    # Between pages: one unseen set moves to the top, one is deleted, a new one appears.
    clock[0] += 60
    b.add_version(DS, unseen[0])
    b.delete_image_set(DS, unseen[1])
    b.create_image_set(DS)
    token = first["nextToken"]
    while token:
        resp = ops.search_image_sets(b, DS, {}, 50, token)
        seen += [s["imageSetId"] for s in resp["imageSetsMetadataSummaries"]]
        token = resp.get("nextToken")
    assert len(seen) == len(set(seen)), "no image set is returned twice"
    assert set(ids) - set(seen) == {unseen[0], unseen[1]}


@pytest.mark.parametrize(
    "criteria",
    [
        {"filters": []},
        {"filters": [{"operator": "LIKE", "values": [{"updatedAt": 1}]}]},
        {"filters": [{"operator": "BETWEEN", "values": [{"updatedAt": 1}]}]},
        {"filters": [{"operator": "BETWEEN", "values": [{"updatedAt": 5}, {"updatedAt": 1}]}]},
        {"filters": [{"operator": "BETWEEN", "values": [{"updatedAt": 1}, {"createdAt": 5}]}]},
        {"filters": [{"operator": "EQUAL", "values": [{"updatedAt": "yesterday"}]}]},
        {"filters": [{"operator": "EQUAL", "values": [{"nope": 1}]}]},
        {"filters": [{"operator": "EQUAL", "values": [{"updatedAt": 1, "createdAt": 1}]}]},
        {"sort": {"sortField": "updatedAt", "sortOrder": "UP"}},
        {"sort": {"sortField": "DICOMStudyDateAndTime", "sortOrder": "ASC"}},
        {"sort": "updatedAt"},
    ],
)
def test_bad_criteria_are_validation_errors(big: Backend, criteria: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ops.search_image_sets(big, DS, criteria)


def test_token_is_bound_to_the_criteria(big: Backend) -> None:
    token = ops.search_image_sets(big, DS, {}, 5)["nextToken"]
    asc = {"sort": {"sortField": "updatedAt", "sortOrder": "ASC"}}
    with pytest.raises(ValidationError):
        ops.search_image_sets(big, DS, asc, 5, token)


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.tuples(st.integers(0, 20).map(float), st.sampled_from("abcdef")), unique=True),
    low=st.none() | st.integers(0, 20).map(float),
    high=st.none() | st.integers(0, 20).map(float),
    descending=st.booleans(),
    cursor=st.none() | st.tuples(st.integers(0, 20).map(float), st.sampled_from("abcdef")),
)
def test_sorted_index_walk_matches_filtering(
    keys: list[tuple[float, str]],
    low: float | None,
    high: float | None,
    descending: bool,
    cursor: tuple[float, str] | None,
) -> None:
    index = SortedIndex()
    index.extend(keys[: len(keys) // 2])
    for key in keys[len(keys) // 2 :]:
        index.add(key)
    expected = sorted(
        (
            k
            for k in keys
            if (low is None or k[0] >= low)
            and (high is None or k[0] <= high)
            and (cursor is None or (k < cursor if descending else k > cursor))
        ),
        reverse=descending,
    )
    assert list(index.walk(low, high, descending=descending, after=cursor)) == expected
