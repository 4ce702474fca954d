"""The immutable view of the fleet that a poll publishes and the collectors read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter.config import PerImageSet
from exporter.imports.watcher import ImportJobsView
from exporter.model import CounterKey, ImageSetKey, ImageSetSnapshot


@dataclass(frozen=True, slots=True)
class DatastoreView:
    """A data store's poll health and bookkeeping."""

    datastore_id: str
    per_image_set: PerImageSet = "all"
    up: bool | None = None  # None until its first poll finished
    last_success: float | None = None
    discovers_all: bool = False
    backfill_listed: int = 0
    backfill_complete: bool = False
    region: str = ""  # from the configuration; the alerts' console links use it
    name: str | None = None  # from GetDatastore; None until it answered
    status: str | None = None  # likewise


@dataclass(frozen=True, slots=True)
class FleetView:
    """Everything a render needs; built once per poll and never mutated."""

    image_sets: Mapping[ImageSetKey, ImageSetSnapshot] = field(
        default_factory=lambda: MappingProxyType({})
    )
    counters: Mapping[CounterKey, float] = field(default_factory=lambda: MappingProxyType({}))
    datastores: Mapping[str, DatastoreView] = field(default_factory=lambda: MappingProxyType({}))
    # Per data store whose import jobs are watched (exporter/imports).
    import_jobs: Mapping[str, ImportJobsView] = field(default_factory=lambda: MappingProxyType({}))
