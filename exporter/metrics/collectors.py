"""Collectors that turn the published fleet view into metric families; no I/O, no AWS calls."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from exporter.metrics.families import Family, escape_label_value, label_pairs
from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import (
    DATASTORE_STATUSES,
    FAILED_VERSIONS,
    FAILURE_STATUSES,
    FAILURES,
    FORCED_VERSIONS,
    IMAGE_SETS_DELETED,
    IN_PROGRESS_STATUSES,
    LAST_FAILURE,
    LAST_FORCED,
    NEW_VERSIONS,
    CounterKey,
    ImageSetSnapshot,
    Version,
)
from exporter.reasons import known_reasons, label_reasons, shown_reason


class FleetCollector(Protocol):
    """Yields metric families from a fleet view."""

    def collect(self, view: FleetView) -> Iterator[Family]:
        """Yield the families."""


def _bool_label(value: bool | None) -> str:
    return "unknown" if value is None else ("true" if value else "false")


def _shows_image_set(snapshot: ImageSetSnapshot, datastore: DatastoreView | None) -> bool:
    if snapshot.is_deleted:
        return False
    mode = _mode(datastore)
    if mode == "all":
        return True
    if mode == "none":
        return False
    return any(v.forced or v.workflow_status in FAILURE_STATUSES for v in snapshot.versions)


def _mode(datastore: DatastoreView | None) -> str:
    return datastore.per_image_set if datastore is not None else "all"


def _last_failure(snapshot: ImageSetSnapshot) -> Version | None:
    return max(
        (v for v in snapshot.versions if v.workflow_status in FAILURE_STATUSES),
        key=lambda v: v.version_id,
        default=None,
    )


def _oldest_in_progress(snapshot: ImageSetSnapshot) -> dict[str, float]:
    """Return, per in-progress status with a known start, the oldest start."""
    oldest: dict[str, float] = {}
    if snapshot.is_deleted:
        return oldest
    for v in snapshot.versions:
        if v.started_at is not None:
            known = oldest.get(v.workflow_status)
            oldest[v.workflow_status] = v.started_at if known is None else min(known, v.started_at)
    return oldest


def _info_reasons(view: FleetView) -> dict[str, frozenset[str]]:
    """Per data store, the reasons a last-failure info series may carry (bounded as counted)."""
    counter_keys: list[CounterKey] = [k for k in view.counters if k.family == FAILURES]
    candidates: dict[str, set[str | None]] = {ds: set() for ds in view.datastores}
    for key, snapshot in view.image_sets.items():
        if key.datastore_id in candidates and not snapshot.is_deleted:
            last = _last_failure(snapshot)
            if last is not None:
                candidates[key.datastore_id].add(last.reason)
    return {
        ds: label_reasons(known_reasons(counter_keys, ds), codes)
        for ds, codes in candidates.items()
    }


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
        last_failure = Family(
            "healthimaging_image_set_last_failure_info",
            "gauge",
            "The image set's latest version in a failed status, with its bounded reason "
            "(the message's leading code, or other); always 1.",
        )
        reasons = _info_reasons(view)
        failures = ((labels, s.key.datastore_id, _last_failure(s)) for labels, s in shown)
        last_failure.lines = (
            last_failure.sample(
                labels
                + ","
                + label_pairs(
                    workflow_status=top.workflow_status,
                    reason=shown_reason(top.reason, reasons.get(ds_id, frozenset())),
                ),
                1,
            )
            for labels, ds_id, top in failures
            if top
        )
        yield last_failure
        in_progress = Family(
            "healthimaging_image_set_in_progress_since_timestamp_seconds",
            "gauge",
            "Unix time the image set's oldest version in an in-progress workflow status entered "
            "it (updatedAt, else createdAt).",
        )
        # Shown in failures_only too: a stuck copy is a failure in waiting, and few versions are
        # in progress at any time.
        in_progress.lines = (
            in_progress.sample(
                f'datastore_id="{escape_label_value(key.datastore_id)}",'
                f'image_set_id="{escape_label_value(key.image_set_id)}",'
                f'workflow_status="{escape_label_value(status)}"',
                started,
            )
            for key in sorted(view.image_sets)
            if _mode(view.datastores.get(key.datastore_id)) != "none"
            for status, started in sorted(_oldest_in_progress(view.image_sets[key]).items())
        )
        yield in_progress


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
        failures = Family(
            "healthimaging_failures",
            "counter",
            "Versions seen entering a failed status, by the bounded reason of their message "
            "(its leading code, or other).",
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
            elif key.family == FAILURES:
                failures.add(
                    label_pairs(
                        datastore_id=key.datastore_id,
                        workflow_status=key.workflow_status,
                        reason=key.reason,
                    ),
                    value,
                )
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
        yield from (new, failed, forced, deleted, failures, last_failure, last_forced)


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
        in_progress = Family(
            "healthimaging_datastore_in_progress_versions",
            "gauge",
            "Versions of all tracked image sets in an in-progress workflow status.",
        )
        oldest = Family(
            "healthimaging_datastore_oldest_in_progress_version_timestamp_seconds",
            "gauge",
            "Unix time the oldest version in an in-progress workflow status entered it "
            "(updatedAt, else createdAt); absent when none is in progress.",
        )
        oldest_started: dict[str, dict[str, float]] = {ds: {} for ds in view.datastores}
        info = Family(
            "healthimaging_datastore_info",
            "gauge",
            "The data store's AWS region from the configuration and, once GetDatastore "
            "answered, its name (always 1).",
        )
        lifecycle = Family(
            "healthimaging_datastore_status",
            "gauge",
            "1 for the data store's status as GetDatastore last gave it, 0 for the model's other "
            "statuses; absent until it answered.",
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
            for status, started in _oldest_in_progress(snapshot).items():
                known = oldest_started[key.datastore_id].get(status)
                oldest_started[key.datastore_id][status] = (
                    started if known is None else min(known, started)
                )
        for ds_id, ds in sorted(view.datastores.items()):
            ds_label = label_pairs(datastore_id=ds_id)
            if ds.region:
                labels = label_pairs(datastore_id=ds_id, region=ds.region)
                if ds.name is not None:
                    labels += "," + label_pairs(datastore_name=ds.name)
                info.add(labels, 1)
            if ds.status is not None:
                for each in sorted({*DATASTORE_STATUSES, ds.status}):
                    lifecycle.add(
                        f'{ds_label},datastore_status="{escape_label_value(each)}"',
                        1.0 if each == ds.status else 0.0,
                    )
            if ds.up is not None:
                up.add(ds_label, 1.0 if ds.up else 0.0)
            if ds.last_success is not None:
                last_success.add(ds_label, ds.last_success)
            image_sets.add(ds_label, tracked[ds_id])
            for status, count in sorted(statuses[ds_id].items()):
                by_status.add(f'{ds_label},workflow_status="{escape_label_value(status)}"', count)
            forced.add(ds_label, forced_counts[ds_id])
            # Every in-progress status, 0 included: few series, and a stuck count reads as such.
            for status in sorted(IN_PROGRESS_STATUSES):
                status_label = f'{ds_label},workflow_status="{status}"'
                in_progress.add(status_label, statuses[ds_id][status])
                oldest_at = oldest_started[ds_id].get(status)
                if oldest_at is not None:
                    oldest.add(status_label, oldest_at)
            if ds.discovers_all:
                backfill_listed.add(ds_label, ds.backfill_listed)
                backfill_complete.add(ds_label, 1.0 if ds.backfill_complete else 0.0)
        yield from (up, last_success, image_sets, by_status, forced, info, lifecycle, in_progress)
        yield oldest
        yield from (backfill_listed, backfill_complete)
