"""Data store lifecycle over real HTTP: GetDatastore against the emulator, status, name, `up`."""

from __future__ import annotations

from collections.abc import Callable

from exporter.config import Config
from exporter.daemon import Daemon
from exporter.emulator import EmulatorServer
from exporter.model import DATASTORE_STATUSES
from exporter.service import ExporterService
from tests.helpers import DEMO_DATASTORE, fetch, wait_for
from tests.integration.conftest import ConfigFactory
from tests.integration.test_poll import samples_of, value

ServiceFactory = Callable[[Config], ExporterService]
# Due every cycle: the test moves the emulator's data store between polls.
EVERY_CYCLE = {"datastore_status_seconds": 0.001}


def statuses(service: ExporterService, datastore_id: str = DEMO_DATASTORE) -> dict[str, float]:
    return {
        dict(labels)["datastore_status"]: v
        for (name, labels), v in samples_of(service).items()
        if name == "healthimaging_datastore_status" and dict(labels)["datastore_id"] == datastore_id
    }


def not_active_errors(service: ExporterService) -> float | None:
    return value(
        samples_of(service),
        "healthimaging_exporter_poll_errors_total",
        datastore_id=DEMO_DATASTORE,
        reason="datastore_not_active",
    )


def test_a_data_store_turning_deleting_is_down_with_its_reason_and_comes_back(
    emulator: EmulatorServer, make_config: ConfigFactory, service_for: ServiceFactory
) -> None:
    service = service_for(make_config(discovery=EVERY_CYCLE))
    assert service.poll().ok
    s = samples_of(service)
    assert value(s, "healthimaging_up", datastore_id=DEMO_DATASTORE) == 1
    assert statuses(service) == {status: status == "ACTIVE" for status in DATASTORE_STATUSES}
    assert (
        value(
            s,
            "healthimaging_datastore_info",
            datastore_id=DEMO_DATASTORE,
            region="us-east-1",
            datastore_name="demo-datastore",
        )
        == 1
    )
    assert not_active_errors(service) is None

    emulator.backend.set_datastore_status(DEMO_DATASTORE, "DELETING")
    emulator.backend.reset_request_counts()
    result = service.poll()
    assert result.polled == 0  # CycleResult counts image sets; the data store's reason is below
    assert value(samples_of(service), "healthimaging_up", datastore_id=DEMO_DATASTORE) == 0
    assert not_active_errors(service) == 1
    assert statuses(service)["DELETING"] == 1 and statuses(service)["ACTIVE"] == 0
    calls = emulator.backend.request_counts()
    assert calls.get("GetDatastore") == 1
    assert calls.get("ListImageSetVersions", 0) == 0  # a data store being deleted is not listed

    emulator.backend.set_datastore_status(DEMO_DATASTORE, "ACTIVE")
    assert service.poll().ok
    assert value(samples_of(service), "healthimaging_up", datastore_id=DEMO_DATASTORE) == 1
    assert not_active_errors(service) == 1
    assert statuses(service)["ACTIVE"] == 1


def test_a_creating_data_store_is_down_and_the_status_shows_on_metrics_over_http(
    emulator: EmulatorServer,
    make_config: ConfigFactory,
    daemon_for: Callable[..., Daemon],
) -> None:
    creating = emulator.backend.create_datastore(None, "imaging-next", "CREATING")
    config = make_config(
        datastores=[
            {"datastore_id": DEMO_DATASTORE, "image_sets": "all"},
            {"datastore_id": creating, "image_sets": "all"},
        ],
    )
    daemon = daemon_for(config)

    def body() -> str:
        return fetch(daemon.url + "/metrics")[2].decode()

    wait_for(lambda: f'healthimaging_up{{datastore_id="{creating}"}} 0.0' in body())
    text = body()
    assert f'healthimaging_up{{datastore_id="{DEMO_DATASTORE}"}} 1.0' in text
    assert (
        f'healthimaging_datastore_status{{datastore_id="{creating}",datastore_status="CREATING"}}'
        " 1.0" in text
    )
    assert (
        f'healthimaging_datastore_info{{datastore_id="{creating}",region="us-east-1",'
        'datastore_name="imaging-next"} 1.0' in text
    )
    assert (
        f'healthimaging_exporter_poll_errors_total{{datastore_id="{creating}",'
        'reason="datastore_not_active"} 1.0' in text
    )
