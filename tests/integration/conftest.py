"""Fixtures for integration tests: the emulator and the exporter on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config, parse_config
from exporter.daemon import Daemon
from exporter.emulator import EmulatorServer
from exporter.service import ExporterService
from tests.helpers import DEMO_DATASTORE, DEMO_IMAGE_SET

__all__ = ["DEMO_DATASTORE", "DEMO_IMAGE_SET", "ConfigFactory"]

ConfigFactory = Callable[..., Config]


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fresh emulator with the demo data, on a free port."""
    with EmulatorServer(port=0, dataset="demo") as server:
        yield server


@pytest.fixture
def make_config(emulator: EmulatorServer, tmp_path: Path) -> ConfigFactory:
    """Build a config pointing at the emulator; keyword arguments override sections."""

    def build(
        image_sets: list[str] | str | None = None,
        datastore_id: str = DEMO_DATASTORE,
        **sections: Any,
    ) -> Config:
        raw: dict[str, Any] = {
            "aws": {"endpoint_url": emulator.url, "max_attempts": 5},
            # A deadline far above the interval: a loaded CI machine must not time a listing out
            # (tests of the deadline set their own).
            "poll": {"interval_seconds": 1, "concurrency": 4, "timeout_seconds": 30},
            "datastores": [
                {"datastore_id": datastore_id, "image_sets": image_sets or [DEMO_IMAGE_SET]}
            ],
            "state": {"path": str(tmp_path / "state.db")},
            "web": {"listen_address": "127.0.0.1:0"},
        }
        for name, value in sections.items():
            if isinstance(value, dict) and isinstance(raw.get(name), dict):
                raw[name] = {**raw[name], **value}
            else:
                raw[name] = value
        return parse_config(raw, "test config")

    return build


@pytest.fixture
def service_for() -> Iterator[Callable[[Config], ExporterService]]:
    """Build ExporterServices that are closed after the test."""
    services: list[ExporterService] = []

    def build(config: Config) -> ExporterService:
        service = ExporterService(config)
        services.append(service)
        return service

    yield build
    for service in services:
        service.close()


@pytest.fixture
def daemon_for() -> Iterator[Callable[..., Daemon]]:
    """Start Daemons on free ports; each is stopped after the test."""
    daemons: list[Daemon] = []

    def start(config: Config, **kwargs: Any) -> Daemon:
        daemon = Daemon(config, **kwargs).start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()
