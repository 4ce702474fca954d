"""What the exposition and planning need of an image set, without its version history.

The full version lists live in the snapshot store and are read for the image sets a cycle lists;
memory holds, per image set, only what `/metrics` can show of it (`ImageSetFacts`, for the image
sets some mode shows), and per data store the aggregates of them all (`DatastoreTotals`, kept
up to date by adding each change's difference). Memory therefore follows what is exported, not
the size of the fleet (issue 16).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.model import FAILURE_STATUSES, ImageSetSnapshot, Version


@dataclass(frozen=True, slots=True)
class LatestVersion:
    """The highest version of an image set, as its info series shows it."""

    version_id: int
    image_set_state: str
    workflow_status: str
    is_primary: bool | None


@dataclass(frozen=True, slots=True)
class ImageSetFacts:
    """An image set's exported figures, derived from its snapshot (see `facts_of`)."""

    versions: int = 0
    by_status: tuple[tuple[str, int], ...] = ()  # sorted by status
    forced: int = 0
    latest: LatestVersion | None = None
    # The latest version in a failed status: (workflow_status, bounded reason or None).
    last_failure: tuple[str, str | None] | None = None
    # Per in-progress status with a known start, the oldest start; sorted by status.
    in_progress: tuple[tuple[str, float], ...] = ()
    deleted: bool = False

    @property
    def notable(self) -> bool:
        """Tell whether `failures_only` shows it: a failed or forced version, or one in progress."""
        return not self.deleted and (
            self.last_failure is not None or self.forced > 0 or bool(self.in_progress)
        )

    @property
    def failing(self) -> bool:
        """Tell whether it has a failed or forced version (what `failures_only` is named for)."""
        return not self.deleted and (self.last_failure is not None or self.forced > 0)


DELETED = ImageSetFacts(deleted=True)


def facts_of(snapshot: ImageSetSnapshot) -> ImageSetFacts:
    """Derive an image set's exported figures from its snapshot."""
    if snapshot.is_deleted:
        return DELETED
    versions = snapshot.versions
    statuses = Counter(v.workflow_status for v in versions)
    top = snapshot.latest
    failed = max(
        (v for v in versions if v.workflow_status in FAILURE_STATUSES),
        key=lambda v: v.version_id,
        default=None,
    )
    oldest: dict[str, float] = {}
    for v in versions:
        started = v.started_at
        if started is not None:
            known = oldest.get(v.workflow_status)
            oldest[v.workflow_status] = started if known is None else min(known, started)
    return ImageSetFacts(
        versions=len(versions),
        by_status=tuple(sorted(statuses.items())),
        forced=sum(1 for v in versions if v.forced),
        latest=None if top is None else _latest(top),
        last_failure=None if failed is None else (failed.workflow_status, failed.reason),
        in_progress=tuple(sorted(oldest.items())),
    )


TotalsKey = tuple[str, str]  # (name, label): ("rows", ""), ("versions", "COPIED"), ...
ROWS = "rows"
TRACKED = "tracked"
FORCED = "forced"
VERSIONS = "versions"


def contribution(facts: ImageSetFacts | None) -> dict[TotalsKey, int]:
    """Return what one image set adds to its data store's totals."""
    if facts is None:
        return {}
    added = {(ROWS, ""): 1}
    if facts.deleted:
        return added
    added[(TRACKED, "")] = 1
    added[(FORCED, "")] = facts.forced
    for status, count in facts.by_status:
        added[(VERSIONS, status)] = count
    return added


def totals_delta(old: ImageSetFacts | None, new: ImageSetFacts | None) -> dict[TotalsKey, int]:
    """Return how a data store's totals move when an image set's facts go from old to new."""
    delta = contribution(new)
    for key, amount in contribution(old).items():
        delta[key] = delta.get(key, 0) - amount
    return {key: amount for key, amount in delta.items() if amount}


def _latest(top: Version) -> LatestVersion:
    return LatestVersion(top.version_id, top.image_set_state, top.workflow_status, top.is_primary)


@dataclass(frozen=True, slots=True)
class DatastoreTotals:
    """A data store's aggregates over every image set it has a snapshot of."""

    rows: int = 0  # snapshots, deleted image sets included (the reconciliation walks them all)
    tracked: int = 0  # image sets not seen deleted
    forced: int = 0
    by_status: Mapping[str, int] = field(default_factory=dict)

    def plus(self, delta: Mapping[TotalsKey, int]) -> DatastoreTotals:
        """Return the totals moved by a `totals_delta`."""
        if not delta:
            return self
        return totals_from({**self.entries(), **{k: self.get(k) + v for k, v in delta.items()}})

    def get(self, key: TotalsKey) -> int:
        """Return one entry's value (0 when absent)."""
        name, label = key
        if name == VERSIONS:
            return self.by_status.get(label, 0)
        return {ROWS: self.rows, TRACKED: self.tracked, FORCED: self.forced}.get(name, 0)

    def entries(self) -> dict[TotalsKey, int]:
        """Return the totals as (name, label) -> value, as the store keeps them."""
        entries = {(ROWS, ""): self.rows, (TRACKED, ""): self.tracked, (FORCED, ""): self.forced}
        entries.update(((VERSIONS, status), n) for status, n in self.by_status.items())
        return entries


def totals_from(entries: Mapping[TotalsKey, int]) -> DatastoreTotals:
    """Return totals from (name, label) -> value entries; zero entries are dropped."""
    return DatastoreTotals(
        rows=entries.get((ROWS, ""), 0),
        tracked=entries.get((TRACKED, ""), 0),
        forced=entries.get((FORCED, ""), 0),
        by_status={
            label: n for (name, label), n in sorted(entries.items()) if name == VERSIONS and n
        },
    )


def totals_of(facts: Iterable[ImageSetFacts]) -> DatastoreTotals:
    """Return the totals of a data store from scratch (migrations and tests)."""
    entries: Counter[TotalsKey] = Counter()
    for each in facts:
        entries.update(contribution(each))
    return totals_from(entries)
