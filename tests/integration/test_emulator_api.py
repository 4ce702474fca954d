"""The emulator driven over HTTP by boto3 and by raw requests, as real clients see it."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest

from exporter.emulator import EmulatorServer, Faults
from exporter.emulator.testing import client_for
from exporter.emulator.testing import raw_request as raw
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET

DS = DEMO_DATASTORE
SET = DEMO_IMAGE_SET
CREATING_DS = "98765432109876543210987654321098"


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(port=0, dataset="demo") as server:
        yield server


@pytest.fixture
def client(emu: EmulatorServer) -> Any:
    return client_for(emu.url)


def utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def test_list_image_set_versions_demo(client: Any) -> None:
    out = client.list_image_set_versions(datastoreId=DS, imageSetId=SET)
    versions = out["imageSetPropertiesList"]
    assert [v["versionId"] for v in versions] == ["4", "3", "2", "1"]
    assert versions[0]["updatedAt"] == utc(1680029436.304)
    assert versions[2]["ImageSetWorkflowStatus"] == "COPY_FAILED"
    assert "updatedAt" not in versions[3] and "nextToken" not in out


def test_get_image_set_with_and_without_version(client: Any) -> None:
    latest = client.get_image_set(datastoreId=DS, imageSetId=SET)
    assert latest["versionId"] == "4" and latest["imageSetWorkflowStatus"] == "UPDATED"
    v2 = client.get_image_set(datastoreId=DS, imageSetId=SET, versionId="2")
    assert v2["imageSetWorkflowStatus"] == "COPY_FAILED" and v2["message"].startswith("INVALID")
    forced = client.get_image_set(
        datastoreId=DS, imageSetId="b7d2c4e6f8a0b2c4d6e8f0a2b4c6d8e0", versionId="2"
    )
    assert forced["overrides"] == {"forced": True} and forced["isPrimary"] is True
    deleted = client.get_image_set(datastoreId=DS, imageSetId="deadbeefdeadbeefdeadbeefdeadbeef")
    assert deleted["imageSetState"] == "DELETED" and deleted["deletedAt"] == utc(1680786460.0)


def test_datastores(client: Any) -> None:
    summaries = client.list_datastores()["datastoreSummaries"]
    assert [d["datastoreId"] for d in summaries] == [DS, CREATING_DS]
    active = client.list_datastores(datastoreStatus="ACTIVE")["datastoreSummaries"]
    assert [d["datastoreId"] for d in active] == [DS]
    props = client.get_datastore(datastoreId=DS)["datastoreProperties"]
    assert props["datastoreName"] == "demo-datastore" and props["datastoreArn"].endswith(DS)


def test_search_with_filter_and_sort(client: Any) -> None:
    out = client.search_image_sets(
        datastoreId=DS,
        searchCriteria={
            "filters": [
                {
                    "operator": "BETWEEN",
                    "values": [{"updatedAt": utc(1680027000)}, {"updatedAt": utc(1680200000)}],
                }
            ],
            "sort": {"sortField": "updatedAt", "sortOrder": "ASC"},
        },
    )
    assert out["sort"] == {"sortField": "updatedAt", "sortOrder": "ASC"}
    found = out["imageSetsMetadataSummaries"]
    assert [s["imageSetId"] for s in found] == [
        SET,
        "b7d2c4e6f8a0b2c4d6e8f0a2b4c6d8e0",
        "c0ffee00c0ffee00c0ffee00c0ffee00",
    ]
    assert (
        found[0]["version"] == 4 and found[0]["DICOMTags"]["DICOMPatientName"] == "DEMO^PATIENT^ONE"
    )
    equal = client.search_image_sets(
        datastoreId=DS,
        searchCriteria={
            "filters": [{"operator": "EQUAL", "values": [{"updatedAt": utc(1680029436.304)}]}]
        },
    )
    assert [s["imageSetId"] for s in equal["imageSetsMetadataSummaries"]] == [SET]


def test_paginators(emu: EmulatorServer, client: Any) -> None:
    b = emu.backend
    ds = b.create_datastore(name="paging")
    set_id = b.create_image_set(ds)
    for _ in range(119):
        b.add_version(ds, set_id)
    pages = list(
        client.get_paginator("list_image_set_versions").paginate(
            datastoreId=ds, imageSetId=set_id, PaginationConfig={"PageSize": 50}
        )
    )
    assert [len(p["imageSetPropertiesList"]) for p in pages] == [50, 50, 20]
    flat = [int(v["versionId"]) for p in pages for v in p["imageSetPropertiesList"]]
    assert flat == list(range(120, 0, -1))

    b.generate(ds, 129, seed=5)
    search = list(
        client.get_paginator("search_image_sets").paginate(
            datastoreId=ds, PaginationConfig={"PageSize": 50}
        )
    )
    assert [len(p["imageSetsMetadataSummaries"]) for p in search] == [50, 50, 30]
    updated = [s["updatedAt"] for p in search for s in p["imageSetsMetadataSummaries"]]
    assert updated == sorted(updated, reverse=True)

    for _ in range(4):
        b.create_datastore()
    stores = list(
        client.get_paginator("list_datastores").paginate(PaginationConfig={"PageSize": 3})
    )
    assert [len(p["datastoreSummaries"]) for p in stores] == [3, 3, 1]


def error_code(call: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    return str(info.value.response["Error"]["Code"])


def test_errors_map_to_modelled_exceptions(emu: EmulatorServer, client: Any) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_image_set(datastoreId=DS, imageSetId="0" * 32)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_image_set(datastoreId=DS, imageSetId=SET, versionId="99")
    with pytest.raises(client.exceptions.ValidationException, match="regular expression"):
        client.list_image_set_versions(datastoreId=DS, imageSetId="NOT-AN-ID")
    with pytest.raises(client.exceptions.ValidationException, match="between 1 and 50"):
        client.list_image_set_versions(datastoreId=DS, imageSetId=SET, maxResults=51)
    with pytest.raises(client.exceptions.ValidationException, match="nextToken"):
        client.list_image_set_versions(datastoreId=DS, imageSetId=SET, nextToken="garbage")
    with pytest.raises(client.exceptions.ConflictException):
        client.search_image_sets(datastoreId=CREATING_DS)
    emu.backend.set_faults(Faults(throttle_ratio=1.0))
    with pytest.raises(client.exceptions.ThrottlingException):
        client.list_image_set_versions(datastoreId=DS, imageSetId=SET)
    emu.backend.set_faults(Faults(error_ratio=1.0))
    with pytest.raises(client.exceptions.InternalServerException):
        client.get_datastore(datastoreId=DS)
    emu.backend.set_faults(Faults(access_denied_datastores=frozenset({DS})))
    with pytest.raises(client.exceptions.AccessDeniedException):
        client.search_image_sets(datastoreId=DS)
    assert client.list_datastores()["datastoreSummaries"]


def test_malformed_response_is_not_data(emu: EmulatorServer, client: Any) -> None:
    emu.backend.set_faults(Faults(malformed_responses=1))
    broken = client.list_image_set_versions(datastoreId=DS, imageSetId=SET)
    assert "imageSetPropertiesList" not in broken
    assert client.list_image_set_versions(datastoreId=DS, imageSetId=SET)["imageSetPropertiesList"]


def test_latency_fault(emu: EmulatorServer, client: Any) -> None:
    emu.backend.set_faults(Faults(latency_seconds=0.2))
    start = time.perf_counter()
    client.get_datastore(datastoreId=DS)
    assert time.perf_counter() - start >= 0.2


def test_quota_throttles_a_burst(emu: EmulatorServer, client: Any) -> None:
    emu.backend.set_faults(Faults(quota_per_second=3))
    codes = []
    for _ in range(6):
        try:
            client.get_datastore(datastoreId=DS)
            codes.append("ok")
        except client.exceptions.ThrottlingException:
            codes.append("throttled")
    assert codes[:3] == ["ok"] * 3 and "throttled" in codes[3:]


def test_unsigned_request_is_refused(emu: EmulatorServer) -> None:
    status, headers, body = raw(emu.port, "GET", "/datastore", signed=False)
    assert status == 403 and headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert body == {"message": "Missing Authentication Token"}


def test_bad_json_unknown_route_and_bad_request_line(emu: EmulatorServer) -> None:
    status, headers, body = raw(emu.port, "POST", f"/datastore/{DS}/searchImageSets", "{oops")
    assert status == 400 and headers["x-amzn-ErrorType"] == "ValidationException"
    status, headers, body = raw(emu.port, "GET", "/no/such/thing")
    assert status == 404 and headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert "message" in body
    status, headers, body = raw(emu.port, "BREW", "/coffee")
    assert status in (404, 501) and headers["Content-Type"] == "application/json"
    assert "message" in body


def test_absolute_form_target_and_keep_alive(emu: EmulatorServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        for _ in range(3):
            target = f"http://runtime-localhost:{emu.port}/datastore/{DS}/imageSet/{SET}/getImageSet?version=1"
            conn.request("POST", target, headers={"Authorization": "AWS4-HMAC-SHA256 Credential=x"})
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("Content-Length")
            assert json.loads(response.read())["versionId"] == "1"
            assert not response.will_close
    finally:
        conn.close()


def test_admin_api(emu: EmulatorServer) -> None:
    port = emu.port
    assert raw(port, "GET", "/_emulator/health", signed=False)[2]["imageSets"] == 8
    status, _, body = raw(
        port, "POST", "/_emulator/datastores", '{"datastoreName": "adm"}', signed=False
    )
    ds = body["datastoreId"]
    assert status == 201 and len(ds) == 32
    tags = {"DICOMPatientName": "DEMO^ADMIN"}
    _, _, body = raw(
        port, "POST", f"/_emulator/datastores/{ds}/imagesets", json.dumps({"DICOMTags": tags})
    )
    set_id = body["imageSetId"]
    _, _, body = raw(
        port,
        "POST",
        f"/_emulator/datastores/{ds}/imagesets/{set_id}/versions",
        '{"workflowStatus": "UPDATE_FAILED", "forced": true, "message": "no"}',
    )
    assert body == {"versionId": "2"}
    status, _, _ = raw(
        port,
        "PUT",
        f"/_emulator/datastores/{ds}/imagesets/{set_id}/versions/2",
        '{"workflowStatus": "UPDATED"}',
    )
    assert status == 200
    client = client_for(emu.url)
    assert (
        client.get_image_set(datastoreId=ds, imageSetId=set_id)["imageSetWorkflowStatus"]
        == "UPDATED"
    )
    _, _, body = raw(
        port, "POST", f"/_emulator/datastores/{ds}/generate", '{"count": 10, "seed": 1}'
    )
    assert body["count"] == 10 and len(body["imageSetIds"]) == 10
    assert raw(port, "DELETE", f"/_emulator/datastores/{ds}/imagesets/{set_id}")[0] == 200
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_image_set(datastoreId=ds, imageSetId=set_id)
    status, _, body = raw(port, "PUT", "/_emulator/faults", '{"throttle_ratio": 1, "seed": 1}')
    assert status == 200 and body["throttle_ratio"] == 1
    assert raw(port, "GET", "/_emulator/faults")[2]["seed"] == 1
    with pytest.raises(client.exceptions.ThrottlingException):
        client.get_datastore(datastoreId=ds)
    raw(port, "PUT", "/_emulator/faults", "{}")
    counts = raw(port, "GET", "/_emulator/requests")[2]
    assert counts == {"GetImageSet": 2, "GetDatastore": 1}
    raw(port, "DELETE", "/_emulator/requests")
    assert raw(port, "GET", "/_emulator/requests")[2] == {}
    status, headers, body = raw(
        port, "POST", "/_emulator/dataset", "datastores:\n  - datastoreId: 42\n"
    )
    assert status == 400 and "datastores[0].datastoreId" in body["message"]
    yaml_doc = f"datastores:\n  - datastoreId: '{ds}'\n"
    assert raw(port, "POST", "/_emulator/dataset", yaml_doc)[2]["datastores"] == 1
    status, headers, _ = raw(port, "POST", "/_emulator/datastores", "[]")
    assert status == 400 and headers["x-amzn-ErrorType"] == "ValidationException"


def test_request_counts_include_refused_requests(emu: EmulatorServer, client: Any) -> None:
    emu.backend.reset_request_counts()
    client.list_image_set_versions(datastoreId=DS, imageSetId=SET)
    raw(emu.port, "POST", f"/datastore/{DS}/imageSet/{SET}/listImageSetVersions", signed=False)
    emu.backend.set_faults(Faults(throttle_ratio=1.0))
    with pytest.raises(client.exceptions.ThrottlingException):
        client.search_image_sets(datastoreId=DS)
    assert emu.backend.request_counts() == {"ListImageSetVersions": 2, "SearchImageSets": 1}


def test_stop_is_idempotent_and_closes_keep_alive_connections() -> None:
    server = EmulatorServer(dataset=None).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/_emulator/health")
    assert conn.getresponse().read()
    start = time.perf_counter()
    server.stop()
    server.stop()
    assert time.perf_counter() - start < 2
    conn.close()
    with pytest.raises(OSError):
        raw(server.port, "GET", "/_emulator/health")


def test_chunked_request_body(emu: EmulatorServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        body = iter([b'{"sort": {"sortField": "createdAt",', b' "sortOrder": "ASC"}}'])
        conn.request(
            "POST",
            f"/datastore/{DS}/searchImageSets?maxResults=1",
            body=body,
            headers={"Authorization": "AWS4-HMAC-SHA256 Credential=x"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["imageSetsMetadataSummaries"][0]["imageSetId"] == SET
        conn.request("GET", "/_emulator/health")
        assert conn.getresponse().status == 200, "the connection is still in step"
    finally:
        conn.close()
