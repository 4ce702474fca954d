"""Collectors that turn the published fleet view into metric families; no I/O, no AWS calls."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import (
    FAILED_VERSIONS,
    FAILURE_STATUSES,
    FORCED_VERSIONS,
    IMAGE_SETS_DELETED,
    NEW_VERSIONS,
    ImageSetSnapshot,
)

ViewSource = Callable[[], FleetView]
IMAGE_SET_LABELS = ["datastore_id", "image_set_id"]


def _bool_label(value: bool | None) -> str:
    return "unknown" if value is None else ("true" if value else "false")


def _shows_image_set(snapshot: ImageSetSnapshot, datastore: DatastoreView | None) -> bool:
    if snapshot.is_deleted:
        return False
    mode = datastore.per_image_set if datastore is not None else "all"
    if mode == "all":
        return True
    if mode == "none":
        return False
    return any(v.forced or v.workflow_status in FAILURE_STATUSES for v in snapshot.versions)


class ImageSetCollector(Collector):
    """Per-image-set gauges, limited by each data store's `per_image_set` mode."""

    def __init__(self, view: ViewSource) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """Yield the image set families."""
        view = self._view()
        versions = GaugeMetricFamily(
            "healthimaging_image_set_versions",
            "Versions in the image set's version list.",
            labels=IMAGE_SET_LABELS,
        )
        by_status = GaugeMetricFamily(
            "healthimaging_image_set_versions_by_workflow_status",
            "Versions in the image set's version list, by workflow status.",
            labels=[*IMAGE_SET_LABELS, "workflow_status"],
        )
        forced = GaugeMetricFamily(
            "healthimaging_image_set_forced_versions",
            "Versions created with a forced override of the Patient/Study/Series checks.",
            labels=IMAGE_SET_LABELS,
        )
        latest = GaugeMetricFamily(
            "healthimaging_image_set_latest_version",
            "The image set's highest version id.",
            labels=IMAGE_SET_LABELS,
        )
        info = GaugeMetricFamily(
            "healthimaging_image_set_info",
            "The latest version's state, workflow status and primary flag (always 1).",
            labels=[*IMAGE_SET_LABELS, "image_set_state", "workflow_status", "is_primary"],
        )
        for key, snapshot in sorted(view.image_sets.items()):
            if not _shows_image_set(snapshot, view.datastores.get(key.datastore_id)):
                continue
            labels = [key.datastore_id, key.image_set_id]
            versions.add_metric(labels, len(snapshot.versions))
            counts = Counter(v.workflow_status for v in snapshot.versions)
            for status in sorted(counts):
                by_status.add_metric([*labels, status], counts[status])
            forced.add_metric(labels, sum(1 for v in snapshot.versions if v.forced))
            top = snapshot.latest
            if top is not None:
                latest.add_metric(labels, top.version_id)
                info.add_metric(
                    [
                        *labels,
                        top.image_set_state,
                        top.workflow_status,
                        _bool_label(top.is_primary),
                    ],
                    1,
                )
        yield from (versions, by_status, forced, latest, info)


class EventCollector(Collector):
    """The persisted event counters: new, failed and forced versions, deleted image sets."""

    def __init__(self, view: ViewSource) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """Yield the counter families."""
        view = self._view()
        new = CounterMetricFamily(
            "healthimaging_new_versions",
            "Versions first seen by a diff after the image set's baseline.",
            labels=["datastore_id", "workflow_status"],
        )
        failed = CounterMetricFamily(
            "healthimaging_failed_versions",
            "Versions seen entering COPY_FAILED, UPDATE_FAILED or IMPORT_FAILED.",
            labels=[*IMAGE_SET_LABELS, "workflow_status"],
        )
        forced = CounterMetricFamily(
            "healthimaging_forced_versions",
            "New versions created with a forced override of the Patient/Study/Series checks.",
            labels=IMAGE_SET_LABELS,
        )
        deleted = CounterMetricFamily(
            "healthimaging_image_sets_deleted",
            "Tracked image sets that disappeared from their data store.",
            labels=["datastore_id"],
        )
        for key, value in sorted(view.counters.items()):
            if key.family == NEW_VERSIONS:
                new.add_metric([key.datastore_id, key.workflow_status], value)
            elif key.family == FAILED_VERSIONS:
                failed.add_metric([key.datastore_id, key.image_set_id, key.workflow_status], value)
            elif key.family == FORCED_VERSIONS:
                forced.add_metric([key.datastore_id, key.image_set_id], value)
            elif key.family == IMAGE_SETS_DELETED:
                deleted.add_metric([key.datastore_id], value)
        yield from (new, failed, forced, deleted)


class DatastoreCollector(Collector):
    """Per-data-store health and fleet aggregates, always present whatever `per_image_set` says."""

    def __init__(self, view: ViewSource) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        """Yield the data store families."""
        view = self._view()
        up = GaugeMetricFamily(
            "healthimaging_up",
            "1 when the last poll of the data store fully succeeded.",
            labels=["datastore_id"],
        )
        last_success = GaugeMetricFamily(
            "healthimaging_exporter_last_successful_poll_timestamp_seconds",
            "Unix time of the data store's last fully successful poll.",
            labels=["datastore_id"],
        )
        image_sets = GaugeMetricFamily(
            "healthimaging_datastore_image_sets",
            "Image sets tracked in the data store.",
            labels=["datastore_id"],
        )
        by_status = GaugeMetricFamily(
            "healthimaging_datastore_versions_by_workflow_status",
            "Versions of all tracked image sets, by workflow status.",
            labels=["datastore_id", "workflow_status"],
        )
        forced = GaugeMetricFamily(
            "healthimaging_datastore_forced_versions",
            "Versions of all tracked image sets created with a forced override.",
            labels=["datastore_id"],
        )
        backfill_listed = GaugeMetricFamily(
            "healthimaging_datastore_backfill_image_sets",
            "Image sets listed so far by the inventory backfill.",
            labels=["datastore_id"],
        )
        backfill_complete = GaugeMetricFamily(
            "healthimaging_datastore_backfill_complete",
            "1 once the inventory backfill of the data store finished.",
            labels=["datastore_id"],
        )
        tracked: Counter[str] = Counter()
        statuses: dict[str, Counter[str]] = {ds: Counter() for ds in view.datastores}
        forced_counts: Counter[str] = Counter()
        for key, snapshot in view.image_sets.items():
            if snapshot.is_deleted or key.datastore_id not in statuses:
                continue
            tracked[key.datastore_id] += 1
            for version in snapshot.versions:
                statuses[key.datastore_id][version.workflow_status] += 1
                forced_counts[key.datastore_id] += version.forced
        for ds_id, ds in sorted(view.datastores.items()):
            if ds.up is not None:
                up.add_metric([ds_id], 1.0 if ds.up else 0.0)
            if ds.last_success is not None:
                last_success.add_metric([ds_id], ds.last_success)
            image_sets.add_metric([ds_id], tracked[ds_id])
            for status, count in sorted(statuses[ds_id].items()):
                by_status.add_metric([ds_id, status], count)
            forced.add_metric([ds_id], forced_counts[ds_id])
            if ds.discovers_all:
                backfill_listed.add_metric([ds_id], ds.backfill_listed)
                backfill_complete.add_metric([ds_id], 1.0 if ds.backfill_complete else 0.0)
        yield from (up, last_success, image_sets, by_status, forced)
        yield from (backfill_listed, backfill_complete)
