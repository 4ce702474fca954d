"""Dataset files: the shipped demo loads, and each kind of mistake names its field in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exporter.emulator import Backend, DatasetError
from exporter.emulator import operations as ops
from tests.helpers import DEMO_DATASTORE

DS = DEMO_DATASTORE
SET = "a" * 32


def dataset(**version: Any) -> dict[str, Any]:
    v = {"imageSetState": "ACTIVE", **version}
    return {
        "datastores": [{"datastoreId": DS, "imageSets": [{"imageSetId": SET, "versions": [v]}]}]
    }


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"datastore": []}, "dataset.datastore: unknown field"),
        ({"datastores": {}}, "datastores: expected a list"),
        ({"datastores": [{"datastoreId": 12345678901234567890123456789012}]}, "quote it in YAML"),
        ({"datastores": [{"datastoreId": "UPPER" * 6 + "XX"}]}, "datastores[0].datastoreId"),
        (
            {"datastores": [{"datastoreId": DS, "datastoreStatus": "ON"}]},
            "datastores[0].datastoreStatus",
        ),
        (
            {"datastores": [{"datastoreId": DS}, {"datastoreId": DS}]},
            "datastores[1].datastoreId: duplicate",
        ),
        (
            {"datastores": [{"datastoreId": DS, "imageSets": [{"imageSetId": SET}]}]},
            "imageSets[0].versions",
        ),
        (
            {
                "datastores": [
                    {"datastoreId": DS, "imageSets": [{"imageSetId": SET, "versions": []}]}
                ]
            },
            "at least one",
        ),
        (dataset(ImageSetWorkflowStatus="DONE"), "versions[0].ImageSetWorkflowStatus: 'DONE'"),
        (
            dataset(imageSetWorkflowStatus="UPDATED"),
            "versions[0].imageSetWorkflowStatus: unknown field",
        ),
        (dataset(imageSetState="GONE"), "versions[0].imageSetState"),
        (dataset(createdAt="last tuesday"), "versions[0].createdAt"),
        (dataset(createdAt=True), "versions[0].createdAt"),
        (dataset(versionId="v1"), "versions[0].versionId"),
        (dataset(versionId="0"), "versions[0].versionId"),
        (dataset(overrides={"forced": "yes"}), "versions[0].overrides.forced"),
        (dataset(overrides={"force": True}), "versions[0].overrides.force: unknown"),
        (dataset(isPrimary=1), "versions[0].isPrimary"),
        (dataset(message=""), "versions[0].message"),
    ],
)
def test_errors_name_the_field(data: dict[str, Any], where: str) -> None:
    with pytest.raises(DatasetError) as info:
        Backend().load_dataset(data)
    message = str(info.value)
    assert where in message and "\n" not in message


def test_bad_dicom_tags_and_bad_files(tmp_path: Path) -> None:
    bad_tags = {
        "datastores": [
            {
                "datastoreId": DS,
                "imageSets": [
                    {"imageSetId": SET, "DICOMTags": {"DICOMSeriesNumber": "3"}, "versions": [{}]}
                ],
            }
        ]
    }
    with pytest.raises(DatasetError, match=r"imageSets\[0\]\.DICOMTags\.DICOMSeriesNumber"):
        Backend().load_dataset(bad_tags)
    broken = tmp_path / "broken.yaml"
    broken.write_text("datastores: [\n  {datastoreId: 'x'\n")
    with pytest.raises(DatasetError, match="not valid YAML or JSON at line"):
        Backend().load_dataset(broken)
    with pytest.raises(DatasetError, match="cannot read dataset"):
        Backend().load_dataset(tmp_path / "missing.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(DatasetError, match="expected a mapping"):
        Backend().load_dataset(scalar)


def test_json_file_with_iso_dates_and_explicit_version_ids(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(
        json.dumps(
            {
                "datastores": [
                    {
                        "datastoreId": DS,
                        "imageSets": [
                            {
                                "imageSetId": SET,
                                "versions": [
                                    {"versionId": "3", "createdAt": "2024-01-01T00:00:00Z"},
                                    {"versionId": "7", "updatedAt": "2024-01-02T00:00:00+00:00"},
                                ],
                            }
                        ],
                    }
                ]
            }
        )
    )
    b = Backend()
    b.load_dataset(path)
    listed = ops.list_image_set_versions(b, DS, SET)["imageSetPropertiesList"]
    assert [v["versionId"] for v in listed] == ["7", "3"]
    assert listed[1]["createdAt"] == 1704067200.0 and listed[0]["updatedAt"] == 1704153600.0
    assert b.add_version(DS, SET) == "8"


def test_load_replaces_everything() -> None:
    b = Backend()
    b.create_datastore("0" * 32)
    b.load_dataset({"datastores": []})
    assert ops.list_datastores(b)["datastoreSummaries"] == []
