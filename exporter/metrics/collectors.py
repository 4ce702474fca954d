"""Collectors that turn the published fleet view into metric families; no I/O, no AWS calls."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Protocol

from exporter.facts import DatastoreTotals, ImageSetFacts
from exporter.metrics.families import Family, escape_label_value, format_value, label_pairs
from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import (
    DATASTORE_STATUSES,
    FAILED_VERSIONS,
    FAILURES,
    FORCED_VERSIONS,
    IMAGE_SETS_DELETED,
    IN_PROGRESS_STATUSES,
    LAST_FAILURE,
    LAST_FORCED,
    NEW_VERSIONS,
    NO_OWN_COUNTERS,
    CounterKey,
    ImageSetKey,
)
from exporter.reasons import known_reasons, label_reasons, shown_reason

NO_TOTALS = DatastoreTotals()


class FleetCollector(Protocol):
    """Yields metric families from a fleet view."""

    def collect(self, view: FleetView) -> Iterator[Family]:
        """Yield the families."""


def _bool_label(value: bool | None) -> str:
    return "unknown" if value is None else ("true" if value else "false")


def shows_image_set(facts: ImageSetFacts, datastore: DatastoreView | None) -> bool:
    """Tell whether an image set's own families show it under its data store's mode."""
    mode = _mode(datastore)
    if facts.deleted or mode == "none":
        return False
    return mode == "all" or facts.failing


def _mode(datastore: DatastoreView | None) -> str:
    return datastore.per_image_set if datastore is not None else "all"


def info_reasons(view: FleetView) -> dict[str, frozenset[str]]:
    """Per data store, the reasons a last-failure info series may carry (bounded as counted)."""
    counter_keys: list[CounterKey] = [k for k in view.counters if k.family == FAILURES]
    return {
        ds: label_reasons(known_reasons(counter_keys, ds), view.failure_codes.get(ds, ()))
        for ds in view.datastores
    }


def image_set_families() -> tuple[Family, ...]:
    """Return the per-image-set families, empty, in exposition order (`image_set_lines`)."""
    return (
        Family(
            "healthimaging_image_set_versions",
            "gauge",
            "Versions in the image set's version list.",
        ),
        Family(
            "healthimaging_image_set_versions_by_workflow_status",
            "gauge",
            "Versions in the image set's version list, by workflow status.",
        ),
        Family(
            "healthimaging_image_set_forced_versions",
            "gauge",
            "Versions created with a forced override of the Patient/Study/Series checks.",
        ),
        Family(
            "healthimaging_image_set_latest_version",
            "gauge",
            "The image set's highest version id.",
        ),
        Family(
            "healthimaging_image_set_info",
            "gauge",
            "The latest version's state, workflow status and primary flag (always 1).",
        ),
        Family(
            "healthimaging_image_set_last_failure_info",
            "gauge",
            "The image set's latest version in a failed status, with its bounded reason "
            "(the message's leading code, or other); always 1.",
        ),
        # Shown in failures_only too: a stuck copy is a failure in waiting, and few versions are
        # in progress at any time.
        Family(
            "healthimaging_image_set_in_progress_since_timestamp_seconds",
            "gauge",
            "Unix time the image set's oldest version in an in-progress workflow status entered "
            "it (updatedAt, else createdAt).",
        ),
        Family(
            "healthimaging_failed_versions",
            "counter",
            "Versions seen entering COPY_FAILED, UPDATE_FAILED or IMPORT_FAILED.",
        ),
        Family(
            "healthimaging_forced_versions",
            "counter",
            "New versions created with a forced override of the Patient/Study/Series checks.",
        ),
        Family(
            "healthimaging_image_set_last_failure_timestamp_seconds",
            "gauge",
            "Unix time at which the exporter last counted a version entering this failed status.",
        ),
        Family(
            "healthimaging_image_set_last_forced_version_timestamp_seconds",
            "gauge",
            "Unix time at which the exporter last counted a new version with a forced override.",
        ),
    )


IMAGE_SET_FAMILIES = image_set_families()
# The families before this one have lines for every image set shown (its versions, statuses,
# latest version, info); those from it on only for some (failures, forced, in progress).
SHOWN = 5


def image_set_keys(view: FleetView) -> list[ImageSetKey]:
    """Return the image sets that may have lines: those with facts or counters of their own.

    In the state's order (loaded in key order), so that sorting them costs little.
    """
    facts = view.image_sets
    return [*facts, *(key for key in view.own_counters if key not in facts)]


def has_lines(
    view: FleetView, key: ImageSetKey, start: int = 0, stop: int = len(IMAGE_SET_FAMILIES)
) -> bool:
    """Tell whether `image_set_lines(..., start, stop)` gives an image set any line (unformatted).

    May say yes for an image set without lines, never no for one with lines.
    """
    facts = view.image_sets.get(key)
    datastore = view.datastores.get(key.datastore_id)
    if facts is not None and not facts.deleted:
        failure = stop > SHOWN and facts.last_failure is not None
        if shows_image_set(facts, datastore) and (start < SHOWN or failure):
            return True
        if stop <= SHOWN:
            return False
        if facts.in_progress and _mode(datastore) != "none":
            return True
    return stop > SHOWN and key in view.own_counters


def _prefixes() -> tuple[str, ...]:
    return tuple(f"{family.sample_name}{{" for family in IMAGE_SET_FAMILIES)


(
    _VERSIONS,
    _BY_STATUS,
    _FORCED,
    _LATEST,
    _INFO,
    _LAST_FAILURE,
    _IN_PROGRESS,
    _FAILED_TOTAL,
    _FORCED_TOTAL,
    _FAILURE_STAMP,
    _FORCED_STAMP,
) = _prefixes()


def _count(value: int) -> str:
    """Format a count as format_value does (repr of a float), without the float for most."""
    return f"{value}.0" if -(10**15) < value < 10**15 else format_value(value)


# The counts most image sets have, formatted once: a lookup instead of a call per line.
_SMALL_COUNTS = tuple(_count(n) for n in range(4096))


@lru_cache(maxsize=4096)
def _status_label(status: str) -> str:
    return f',workflow_status="{escape_label_value(status)}"}} '


@lru_cache(maxsize=4096)
def _info_label(state: str, status: str, primary: bool | None) -> str:
    pairs = label_pairs(
        image_set_state=state, workflow_status=status, is_primary=_bool_label(primary)
    )
    return f",{pairs}}} 1.0\n"


def image_set_lines(
    view: FleetView,
    key: ImageSetKey,
    reasons: Mapping[str, frozenset[str]],
    start: int = 0,
    stop: int = len(IMAGE_SET_FAMILIES),
) -> tuple[str, ...] | None:
    """Return an image set's lines, a text per family of IMAGE_SET_FAMILIES[start:stop]; None: none.

    Formatted straight into strings (this runs for every image set a publish formats again).
    `start` SHOWN or `stop` SHOWN formats only the families after or before those every shown
    image set has.
    """
    ds_id, image_set_id = key
    labels = (
        f'datastore_id="{escape_label_value(ds_id)}",'
        f'image_set_id="{escape_label_value(image_set_id)}"'
    )
    facts = view.image_sets.get(key)
    datastore = view.datastores.get(ds_id)
    shown = facts if facts is not None and shows_image_set(facts, datastore) else None
    dense = _dense_lines(shown, labels) if shown is not None and start < SHOWN else _NO_DENSE
    if stop <= SHOWN:
        texts = dense[start:stop] if start or stop < SHOWN else dense
        return texts if any(texts) else None
    rest = ["", "", "", "", "", ""]
    if shown is not None and shown.last_failure is not None:
        status, reason = shown.last_failure
        label = shown_reason(reason, reasons.get(ds_id, frozenset()))
        rest[0] = (
            f"{_LAST_FAILURE}{labels},{label_pairs(workflow_status=status, reason=label)}}} 1.0\n"
        )
    if facts is not None and facts.in_progress and not facts.deleted and _mode(datastore) != "none":
        rest[1] = "".join(
            [
                f"{_IN_PROGRESS}{labels}{_status_label(status)}{format_value(at)}\n"
                for status, at in facts.in_progress
            ]
        )
    for family, status, value in view.own_counters.get(key, NO_OWN_COUNTERS).items():
        if family == FAILED_VERSIONS:
            rest[2] += f"{_FAILED_TOTAL}{labels}{_status_label(status)}{format_value(value)}\n"
        elif family == FORCED_VERSIONS:
            rest[3] += f"{_FORCED_TOTAL}{labels}}} {format_value(value)}\n"
        elif family == LAST_FAILURE:
            rest[4] += f"{_FAILURE_STAMP}{labels}{_status_label(status)}{format_value(value)}\n"
        elif family == LAST_FORCED:
            rest[5] += f"{_FORCED_STAMP}{labels}}} {format_value(value)}\n"
    texts = (*dense, *rest)[start:stop]
    return texts if any(texts) else None


_NO_DENSE = ("",) * SHOWN


def _dense_lines(facts: ImageSetFacts, labels: str) -> tuple[str, ...]:
    """The lines of the families every shown image set has (IMAGE_SET_FAMILIES[:SHOWN])."""
    counts, small = _SMALL_COUNTS, len(_SMALL_COUNTS)
    versions, forced = facts.versions, facts.forced
    by_status = "".join(
        [
            f"{_BY_STATUS}{labels}{_status_label(status)}{counts[n] if n < small else _count(n)}\n"
            for status, n in facts.by_status
        ]
    )
    top = facts.latest
    if top is None:
        latest = info = ""
    else:
        version = top.version_id
        latest = f"{_LATEST}{labels}}} {counts[version] if version < small else _count(version)}\n"
        info = _info_label(top.image_set_state, top.workflow_status, top.is_primary)
        info = f"{_INFO}{labels}{info}"
    return (
        f"{_VERSIONS}{labels}}} {counts[versions] if versions < small else _count(versions)}\n",
        by_status,
        f"{_FORCED}{labels}}} {counts[forced] if forced < small else _count(forced)}\n",
        latest,
        info,
    )


class ImageSetCollector:
    """Per-image-set gauges (limited by each data store's `per_image_set` mode) and counters.

    The exporter keeps these lines between polls instead (exporter.metrics.kept); this
    collector formats them all at once, for tests and the benchmarks' full render.
    """

    def collect(self, view: FleetView) -> Iterator[Family]:
        """Yield the image set families."""
        reasons = info_reasons(view)
        rows = [image_set_lines(view, key, reasons) for key in sorted(image_set_keys(view))]
        for index, template in enumerate(image_set_families()):
            template.lines = [row[index] for row in rows if row is not None and row[index]]
            yield template


class EventCollector:
    """The persisted counters of data stores (an image set's own are ImageSetCollector's)."""

    def collect(self, view: FleetView) -> Iterator[Family]:
        """Yield the counter families."""
        new = Family(
            "healthimaging_new_versions",
            "counter",
            "Versions first seen by a diff after the image set's baseline.",
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
        for key, value in sorted(i for i in view.counters.items() if not i[0].image_set_id):
            if key.family == NEW_VERSIONS:
                new.add(
                    label_pairs(datastore_id=key.datastore_id, workflow_status=key.workflow_status),
                    value,
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
        yield from (new, deleted, failures)


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
        for key, started_by_status in view.in_progress.items():
            if key.datastore_id not in oldest_started:
                continue
            for status, started in started_by_status:
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
            totals = view.totals.get(ds_id, NO_TOTALS)
            image_sets.add(ds_label, totals.tracked)
            for status, count in totals.by_status.items():
                by_status.add(f'{ds_label},workflow_status="{escape_label_value(status)}"', count)
            forced.add(ds_label, totals.forced)
            # Every in-progress status, 0 included: few series, and a stuck count reads as such.
            for status in sorted(IN_PROGRESS_STATUSES):
                status_label = f'{ds_label},workflow_status="{status}"'
                in_progress.add(status_label, totals.by_status.get(status, 0))
                oldest_at = oldest_started[ds_id].get(status)
                if oldest_at is not None:
                    oldest.add(status_label, oldest_at)
            if ds.discovers_all:
                backfill_listed.add(ds_label, ds.backfill_listed)
                backfill_complete.add(ds_label, 1.0 if ds.backfill_complete else 0.0)
        yield from (up, last_success, image_sets, by_status, forced, info, lifecycle, in_progress)
        yield oldest
        yield from (backfill_listed, backfill_complete)
