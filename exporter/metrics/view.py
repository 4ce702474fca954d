"""The immutable view of the fleet that a poll publishes and the collectors read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter.config import PerImageSet
from exporter.facts import DatastoreTotals, ImageSetFacts
from exporter.imports.watcher import ImportJobsView
from exporter.model import CounterKey, ImageSetKey, OwnCounters


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

    # The facts of the image sets some mode shows (exporter.state keeps no others).
    image_sets: Mapping[ImageSetKey, ImageSetFacts] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # The data stores' own counters (new versions, deletions, failures by reason).
    counters: Mapping[CounterKey, float] = field(default_factory=lambda: MappingProxyType({}))
    datastores: Mapping[str, DatastoreView] = field(default_factory=lambda: MappingProxyType({}))
    # Per data store whose import jobs are watched (exporter/imports).
    import_jobs: Mapping[str, ImportJobsView] = field(default_factory=lambda: MappingProxyType({}))
    # Per data store, the aggregates over all its image sets, shown or not.
    totals: Mapping[str, DatastoreTotals] = field(default_factory=lambda: MappingProxyType({}))
    # Image sets whose lines changed since the view before this one; None: not known (all).
    changed: frozenset[ImageSetKey] | None = None
    # Each image set's own counters (failed and forced versions, and their timestamps).
    own_counters: Mapping[ImageSetKey, OwnCounters] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # Indexes of `image_sets` (exporter.state keeps them): image sets with a version in
    # progress (per status, its oldest start), and per data store the latest failures' codes.
    in_progress: Mapping[ImageSetKey, tuple[tuple[str, float], ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    failure_codes: Mapping[str, frozenset[str | None]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # The snapshot store's generation this view shows (SnapshotStore.generation); -1: none.
    generation: int = -1
