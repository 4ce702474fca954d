"""Local emulator of the AWS HealthImaging image-set API, for tests, benchmarks and demos."""

from __future__ import annotations

from .backend import Backend
from .errors import ApiError, DatasetError
from .events import EventSettings
from .faults import Faults
from .server import EmulatorServer

__all__ = ["ApiError", "Backend", "DatasetError", "EmulatorServer", "EventSettings", "Faults"]
