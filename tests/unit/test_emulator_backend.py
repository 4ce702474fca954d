"""Backend logic without a network: versions paging, search index, mutations, generation."""

from __future__ import annotations

import pytest

from exporter.emulator import Backend
from exporter.emulator import operations as ops
from exporter.emulator.errors import ConflictError, NotFoundError, ValidationError
from exporter.emulator.testing import ManualClock
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET

DS = DEMO_DATASTORE
DEMO_SET = DEMO_IMAGE_SET


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def backend(clock: ManualClock) -> Backend:
    b = Backend(clock=clock)
    b.load_dataset({"datastores": [{"datastoreId": DS, "datastoreName": "unit"}]})
    return b


@pytest.fixture
def demo() -> Backend:
    from exporter.emulator.dataset import demo_path

    b = Backend()
    b.load_dataset(demo_path())
    return b


def all_versions(b: Backend, set_id: str, page: int) -> list[list[str]]:
    pages: list[list[str]] = []
    token = None
    while True:
        out = ops.list_image_set_versions(b, DS, set_id, page, token)
        pages.append([p["versionId"] for p in out["imageSetPropertiesList"]])
        token = out.get("nextToken")
        if token is None:
            return pages


def test_demo_versions_match_the_cli_documentation(demo: Backend) -> None:
    out = ops.list_image_set_versions(demo, DS, DEMO_SET)
    assert out == {
        "imageSetPropertiesList": [
            {
                "ImageSetWorkflowStatus": "UPDATED",
                "versionId": "4",
                "updatedAt": 1680029436.304,
                "imageSetId": DEMO_SET,
                "imageSetState": "ACTIVE",
                "createdAt": 1680027126.436,
            },
            {
                "ImageSetWorkflowStatus": "UPDATED",
                "versionId": "3",
                "updatedAt": 1680029163.325,
                "imageSetId": DEMO_SET,
                "imageSetState": "ACTIVE",
                "createdAt": 1680027126.436,
            },
            {
                "ImageSetWorkflowStatus": "COPY_FAILED",
                "versionId": "2",
                "updatedAt": 1680027455.944,
                "imageSetId": DEMO_SET,
                "imageSetState": "ACTIVE",
                "message": "INVALID_REQUEST:  Series of SourceImageSet and "
                "DestinationImageSet don't match.",
                "createdAt": 1680027126.436,
            },
            {
                "imageSetId": DEMO_SET,
                "imageSetState": "ACTIVE",
                "versionId": "1",
                "ImageSetWorkflowStatus": "COPIED",
                "createdAt": 1680027126.436,
            },
        ]
    }


def test_demo_covers_every_workflow_status_forced_and_deleted(demo: Backend) -> None:
    from exporter.emulator.model import WORKFLOW_STATUSES

    with demo.lock:
        versions = [v for s in demo.store(DS).image_sets.values() for v in s.versions]
    assert {v.workflow_status for v in versions} == set(WORKFLOW_STATUSES)
    assert any(v.forced for v in versions)
    deleted = [v for v in versions if v.state == "DELETED"]
    assert deleted and all(v.deleted_at is not None for v in deleted)


def test_versions_page_newest_first_with_opaque_tokens(backend: Backend) -> None:
    set_id = backend.create_image_set(DS)
    for _ in range(119):
        backend.add_version(DS, set_id)
    pages = all_versions(backend, set_id, 50)
    assert [len(p) for p in pages] == [50, 50, 20]
    flat = [int(v) for p in pages for v in p]
    assert flat == list(range(120, 0, -1))


def test_versions_page_stays_put_when_a_version_is_added_between_pages(backend: Backend) -> None:
    set_id = backend.create_image_set(DS)
    for _ in range(9):
        backend.add_version(DS, set_id)
    first = ops.list_image_set_versions(backend, DS, set_id, 4)
    backend.add_version(DS, set_id)
    second = ops.list_image_set_versions(backend, DS, set_id, 4, first["nextToken"])
    assert [p["versionId"] for p in second["imageSetPropertiesList"]] == ["6", "5", "4", "3"]


@pytest.mark.parametrize("token", ["garbage", "!!!", "YWJj", "a" * 200, ""])
def test_garbage_token_is_a_validation_error(demo: Backend, token: str) -> None:
    with pytest.raises(ValidationError):
        ops.list_image_set_versions(demo, DS, DEMO_SET, 1, token)


def test_token_of_another_image_set_or_operation_is_refused(demo: Backend) -> None:
    token = ops.list_image_set_versions(demo, DS, DEMO_SET, 1)["nextToken"]
    other = "b7d2c4e6f8a0b2c4d6e8f0a2b4c6d8e0"
    with pytest.raises(ValidationError, match="does not belong"):
        ops.list_image_set_versions(demo, DS, other, 1, token)
    with pytest.raises(ValidationError):
        ops.search_image_sets(demo, DS, {}, 1, token)


@pytest.mark.parametrize("value", [0, 51, -1, 1000])
def test_max_results_out_of_range(demo: Backend, value: int) -> None:
    with pytest.raises(ValidationError, match="between 1 and 50"):
        ops.list_image_set_versions(demo, DS, DEMO_SET, value)
    with pytest.raises(ValidationError):
        ops.search_image_sets(demo, DS, {}, value)
    with pytest.raises(ValidationError):
        ops.list_datastores(demo, None, value)


@pytest.mark.parametrize("bad", ["short", "A" * 32, "g" * 31, "-" * 32, "0" * 33])
def test_malformed_ids_are_validation_errors(demo: Backend, bad: str) -> None:
    with pytest.raises(ValidationError, match=r"\[0-9a-z\]\{32\}"):
        ops.get_image_set(demo, DS, bad)
    with pytest.raises(ValidationError):
        ops.get_datastore(demo, bad)


def test_get_image_set_latest_and_by_version(demo: Backend) -> None:
    latest = ops.get_image_set(demo, DS, DEMO_SET)
    assert latest["versionId"] == "4" and latest["imageSetWorkflowStatus"] == "UPDATED"
    assert latest["imageSetArn"].endswith(f"datastore/{DS}/imageset/{DEMO_SET}")
    first = ops.get_image_set(demo, DS, DEMO_SET, "1")
    assert "updatedAt" not in first and first["imageSetWorkflowStatus"] == "COPIED"
    with pytest.raises(NotFoundError):
        ops.get_image_set(demo, DS, DEMO_SET, "9")
    with pytest.raises(ValidationError):
        ops.get_image_set(demo, DS, DEMO_SET, "v1")


def test_every_image_set_property_round_trips(backend: Backend) -> None:
    version = {
        "versionId": "7",
        "imageSetState": "DELETED",
        "ImageSetWorkflowStatus": "DELETED",
        "createdAt": 1.5,
        "updatedAt": 2.5,
        "deletedAt": 3.5,
        "message": "gone",
        "overrides": {"forced": False},
        "isPrimary": False,
    }
    backend.load_dataset(
        {
            "datastores": [
                {"datastoreId": DS, "imageSets": [{"imageSetId": "a" * 32, "versions": [version]}]}
            ]
        }
    )
    listed = ops.list_image_set_versions(backend, DS, "a" * 32)["imageSetPropertiesList"]
    assert listed == [{"imageSetId": "a" * 32, **version}]


def test_add_version_and_set_status_bump_updated_at(backend: Backend, clock: ManualClock) -> None:
    set_id = backend.create_image_set(DS, dicom_tags={"DICOMPatientName": "DEMO^X"})
    clock.now += 10
    vid = backend.add_version(DS, set_id, "UPDATE_FAILED", forced=True, message="bad")
    assert vid == "2"
    latest = ops.get_image_set(backend, DS, set_id)
    assert latest["overrides"] == {"forced": True} and latest["message"] == "bad"
    assert latest["updatedAt"] == clock.now
    clock.now += 5
    backend.set_workflow_status(DS, set_id, "2", "UPDATED")
    latest = ops.get_image_set(backend, DS, set_id)
    assert latest["imageSetWorkflowStatus"] == "UPDATED" and "message" not in latest
    summary = ops.search_image_sets(backend, DS, {})["imageSetsMetadataSummaries"][0]
    assert summary["updatedAt"] == clock.now and summary["version"] == 2
    with pytest.raises(NotFoundError):
        backend.set_workflow_status(DS, set_id, "3", "UPDATED")
    with pytest.raises(ValidationError):
        backend.add_version(DS, set_id, "NOT_A_STATUS")


def test_back_dated_version_keeps_its_time_and_the_set_moves_now(
    backend: Backend, clock: ManualClock
) -> None:
    set_id = backend.create_image_set(DS)
    clock.now += 3_600
    backend.add_version(DS, set_id, "COPYING", updated_at=clock.now - 3_000.0004)
    listed = ops.list_image_set_versions(backend, DS, set_id, 50, None)["imageSetPropertiesList"]
    assert listed[0]["ImageSetWorkflowStatus"] == "COPYING"
    assert listed[0]["updatedAt"] == round(clock.now - 3_000.0004, 3)
    summary = ops.search_image_sets(backend, DS, {})["imageSetsMetadataSummaries"][0]
    assert summary["updatedAt"] == clock.now  # change detection sees the change now
    backend.set_workflow_status(DS, set_id, "2", "UPDATING", updated_at=1_000.0)
    listed = ops.list_image_set_versions(backend, DS, set_id, 50, None)["imageSetPropertiesList"]
    assert (listed[0]["ImageSetWorkflowStatus"], listed[0]["updatedAt"]) == ("UPDATING", 1_000.0)


def test_delete_image_set_removes_it_everywhere(demo: Backend) -> None:
    before = len(ops.search_image_sets(demo, DS, {})["imageSetsMetadataSummaries"])
    demo.delete_image_set(DS, DEMO_SET)
    with pytest.raises(NotFoundError):
        ops.list_image_set_versions(demo, DS, DEMO_SET)
    with pytest.raises(NotFoundError):
        ops.get_image_set(demo, DS, DEMO_SET)
    ids = [
        s["imageSetId"] for s in ops.search_image_sets(demo, DS, {})["imageSetsMetadataSummaries"]
    ]
    assert len(ids) == before - 1 and DEMO_SET not in ids
    with pytest.raises(NotFoundError):
        demo.delete_image_set(DS, DEMO_SET)


def test_duplicate_ids_conflict(backend: Backend) -> None:
    with pytest.raises(ConflictError):
        backend.create_datastore(DS)
    set_id = backend.create_image_set(DS)
    with pytest.raises(ConflictError):
        backend.create_image_set(DS, set_id)


def test_inactive_datastore_gives_conflict_but_get_datastore_works(demo: Backend) -> None:
    creating = "98765432109876543210987654321098"
    with pytest.raises(ConflictError):
        ops.search_image_sets(demo, creating, {})
    assert ops.get_datastore(demo, creating)["datastoreProperties"]["datastoreStatus"] == "CREATING"


def test_list_datastores_pages_and_filters(backend: Backend) -> None:
    for n in range(5):
        backend.create_datastore(f"{n:032d}", status="ACTIVE" if n % 2 else "DELETED")
    ids: list[str] = []
    token = None
    while True:
        out = ops.list_datastores(backend, None, 2, token)
        ids += [d["datastoreId"] for d in out["datastoreSummaries"]]
        token = out.get("nextToken")
        if token is None:
            break
    assert ids == sorted(ids) and len(ids) == 6
    active = ops.list_datastores(backend, "ACTIVE")["datastoreSummaries"]
    assert {d["datastoreId"] for d in active} == {DS, f"{1:032d}", f"{3:032d}"}
    with pytest.raises(ValidationError):
        ops.list_datastores(backend, "SLEEPING")


def generated(clock: ManualClock, seed: int) -> tuple[Backend, list[str]]:
    b = Backend(clock=clock)
    b.create_datastore(DS)
    return b, b.generate(DS, 2000, seed=seed)


def test_generate_is_deterministic_and_realistic(clock: ManualClock) -> None:
    b, ids = generated(clock, 7)
    assert generated(clock, 7)[1] == ids and len(set(ids)) == 2000
    assert generated(clock, 8)[1] != ids
    with b.lock:
        sets = list(b.store(DS).image_sets.values())
    counts = [len(s.versions) for s in sets]
    assert min(counts) == 1 and 8 <= max(counts) <= 10
    statuses = [v.workflow_status for s in sets for v in s.versions]
    failed = sum(1 for st in statuses if st and st.endswith("FAILED")) / len(statuses)
    assert 0.005 < failed < 0.08
    assert {"IMPORTED", "COPIED", "UPDATED"} <= set(statuses)
    assert any(v.forced for s in sets for v in s.versions)
    assert all(s.dicom_tags["DICOMPatientId"].startswith("FAKE-") for s in sets)
    assert all(s.updated_at <= clock.now for s in sets)
