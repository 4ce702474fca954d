"""Collectors that turn the published fleet view into metric families; no I/O, no AWS calls."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from exporter.metrics.families import Family, escape_label_value, label_pairs
from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import (
    FAILED_VERSIONS,
    FAILURE_STATUSES,
    FORCED_VERSIONS,
    IMAGE_SETS_DELETED,
    LAST_FAILURE,
    LAST_FORCED,
    NEW_VERSIONS,
    ImageSetSnapshot,
)


class FleetCollector(Protocol):
    """Yields metric families from a fleet view."""

    def collect(self, view: FleetView) -> Iterator[Family]:
        """Yield the families."""


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


class ImageSetCollector:
    """Per-image-set gauges, limited by each data store's `per_image_set` mode."""

    def collect(self, view: FleetView) -> Iterator[Family]:
        """Yield the image set families."""
        versions = Family(
            "healthimaging_image_set_versions",
            "gauge",
            "Versions in the image set's version list.",
        )
        by_status = Family(
            "healthimaging_image_set_versions_by_workflow_status",
            "gauge",
            "Versions in the image set's version list, by workflow status.",
        )
        forced = Family(
            "healthimaging_image_set_forced_versions",
            "gauge",
            "Versions created with a forced override of the Patient/Study/Series checks.",
        )
        latest = Family(
            "healthimaging_image_set_latest_version",
            "gauge",
            "The image set's highest version id.",
        )
        info = Family(
            "healthimaging_image_set_info",
            "gauge",
            "The latest version's state, workflow status and primary flag (always 1).",
        )
        # Label prefixes built once; each family's lines are generated while they are encoded,
        # so a hundred thousand image sets never hold their lines in memory at once.
        shown = [
            (
                f'datastore_id="{escape_label_value(key.datastore_id)}",'
                f'image_set_id="{escape_label_value(key.image_set_id)}"',
                snapshot,
            )
            for key, snapshot in sorted(view.image_sets.items())
            if _shows_image_set(snapshot, view.datastores.get(key.datastore_id))
        ]
        versions.lines = (versions.sample(labels, len(s.versions)) for labels, s in shown)
        yield versions
        by_status.lines = (
            by_status.sample(f'{labels},workflow_status="{escape_label_value(status)}"', count)
            for labels, s in shown
            for status, count in sorted(Counter(v.workflow_status for v in s.versions).items())
        )
        yield by_status
        forced.lines = (
            forced.sample(labels, sum(1 for v in s.versions if v.forced)) for labels, s in shown
        )
        yield forced
        tops = [(labels, s.latest) for labels, s in shown]
        latest.lines = (latest.sample(labels, top.version_id) for labels, top in tops if top)
        yield latest
        info.lines = (
            info.sample(
                labels
                + ","
                + label_pairs(
                    image_set_state=top.image_set_state,
                    workflow_status=top.workflow_status,
                    is_primary=_bool_label(top.is_primary),
                ),
                1,
            )
            for labels, top in tops
            if top
        )
        yield info


class EventCollector:
    """The persisted event counters, and the persisted times of the last counted events."""

    def collect(self, view: FleetView) -> Iterator[Family]:
        """Yield the counter families."""
        new = Family(
            "healthimaging_new_versions",
            "counter",
            "Versions first seen by a diff after the image set's baseline.",
        )
        failed = Family(
            "healthimaging_failed_versions",
            "counter",
            "Versions seen entering COPY_FAILED, UPDATE_FAILED or IMPORT_FAILED.",
        )
        forced = Family(
            "healthimaging_forced_versions",
            "counter",
            "New versions created with a forced override of the Patient/Study/Series checks.",
        )
        deleted = Family(
            "healthimaging_image_sets_deleted",
            "counter",
            "Tracked image sets that disappeared from their data store.",
        )
        last_failure = Family(
            "healthimaging_image_set_last_failure_timestamp_seconds",
            "gauge",
            "Unix time at which the exporter last counted a version entering this failed status.",
        )
        last_forced = Family(
            "healthimaging_image_set_last_forced_version_timestamp_seconds",
            "gauge",
            "Unix time at which the exporter last counted a new version with a forced override.",
        )
        for key, value in sorted(view.counters.items()):
            if key.family == NEW_VERSIONS:
                new.add(
                    label_pairs(datastore_id=key.datastore_id, workflow_status=key.workflow_status),
                    value,
                )
            elif key.family == FAILED_VERSIONS:
                failed.add(
                    label_pairs(
                        datastore_id=key.datastore_id,
                        image_set_id=key.image_set_id,
                        workflow_status=key.workflow_status,
                    ),
                    value,
                )
            elif key.family == FORCED_VERSIONS:
                forced.add(
                    label_pairs(datastore_id=key.datastore_id, image_set_id=key.image_set_id), value
                )
            elif key.family == IMAGE_SETS_DELETED:
                deleted.add(label_pairs(datastore_id=key.datastore_id), value)
            elif key.family == LAST_FAILURE:
                last_failure.add(
                    label_pairs(
                        datastore_id=key.datastore_id,
                        image_set_id=key.image_set_id,
                        workflow_status=key.workflow_status,
                    ),
                    value,
                )
            elif key.family == LAST_FORCED:
                last_forced.add(
                    label_pairs(datastore_id=key.datastore_id, image_set_id=key.image_set_id), value
                )
        yield from (new, failed, forced, deleted, last_failure, last_forced)


class DatastoreCollector:
    """Per-data-store health and fleet aggregates, always present whatever `per_image_set` says."""

    def collect(self, view: FleetView) -> Iterator[Family]:
        """Yield the data store families."""
        up = Family(
            "healthimaging_up",
            "gauge",
            "1 when the last poll of the data store fully succeeded.",
        )
        last_success = Family(
            "healthimaging_exporter_last_successful_poll_timestamp_seconds",
            "gauge",
            "Unix time of the data store's last fully successful poll.",
        )
        image_sets = Family(
            "healthimaging_datastore_image_sets",
            "gauge",
            "Image sets tracked in the data store.",
        )
        by_status = Family(
            "healthimaging_datastore_versions_by_workflow_status",
            "gauge",
            "Versions of all tracked image sets, by workflow status.",
        )
        forced = Family(
            "healthimaging_datastore_forced_versions",
            "gauge",
            "Versions of all tracked image sets created with a forced override.",
        )
        backfill_listed = Family(
            "healthimaging_datastore_backfill_image_sets",
            "gauge",
            "Image sets listed so far by the inventory backfill.",
        )
        backfill_complete = Family(
            "healthimaging_datastore_backfill_complete",
            "gauge",
            "1 once the inventory backfill of the data store finished.",
        )
        info = Family(
            "healthimaging_datastore_info",
            "gauge",
            "The data store's AWS region from the configuration (always 1).",
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
            ds_label = label_pairs(datastore_id=ds_id)
            if ds.region:
                info.add(label_pairs(datastore_id=ds_id, region=ds.region), 1)
            if ds.up is not None:
                up.add(ds_label, 1.0 if ds.up else 0.0)
            if ds.last_success is not None:
                last_success.add(ds_label, ds.last_success)
            image_sets.add(ds_label, tracked[ds_id])
            for status, count in sorted(statuses[ds_id].items()):
                by_status.add(f'{ds_label},workflow_status="{escape_label_value(status)}"', count)
            forced.add(ds_label, forced_counts[ds_id])
            if ds.discovers_all:
                backfill_listed.add(ds_label, ds.backfill_listed)
                backfill_complete.add(ds_label, 1.0 if ds.backfill_complete else 0.0)
        yield from (up, last_success, image_sets, by_status, forced, info)
        yield from (backfill_listed, backfill_complete)
