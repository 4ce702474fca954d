"""Test helpers shared by every test module: the demo ids, free ports, HTTP, waiting, backfills."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from types import MappingProxyType

from exporter.facts import ImageSetFacts, facts_of, totals_of
from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import CounterKey, ImageSetKey, ImageSetSnapshot, OwnCounters
from exporter.service import ExporterService
from exporter.store import SnapshotStore, StoredState, StoreError

# The demo dataset's data store and the image set of the CLI reference's worked example.
DEMO_DATASTORE = "12345678901234567890123456789012"
DEMO_IMAGE_SET = "ea92b0d8838c72a3f25d00d13616f87e"


def fleet_view(
    snapshots: Mapping[ImageSetKey, ImageSetSnapshot],
    counters: Mapping[CounterKey, float],
    datastores: Mapping[str, DatastoreView],
) -> FleetView:
    """Return the view a poll would publish for these snapshots (facts and totals derived)."""
    facts = {key: facts_of(snapshot) for key, snapshot in snapshots.items()}
    totals = {
        ds: totals_of(f for key, f in facts.items() if key.datastore_id == ds)
        for ds in {key.datastore_id for key in facts}
    }
    own: dict[ImageSetKey, OwnCounters] = {}
    for counter, value in sorted(counters.items()):
        if counter.image_set_id:
            key = ImageSetKey(counter.datastore_id, counter.image_set_id)
            own[key] = own.get(key, OwnCounters()).with_value(
                counter.family, counter.workflow_status, value
            )
    return FleetView(
        MappingProxyType(facts),
        MappingProxyType({k: v for k, v in counters.items() if not k.image_set_id}),
        MappingProxyType(dict(datastores)),
        totals=MappingProxyType(totals),
        own_counters=MappingProxyType(own),
        in_progress=MappingProxyType(
            {k: f.in_progress for k, f in facts.items() if f.in_progress and not f.deleted}
        ),
        failure_codes=MappingProxyType(
            {
                ds: frozenset(
                    f.last_failure[1]
                    for k, f in facts.items()
                    if k.datastore_id == ds and f.last_failure and not f.deleted
                )
                for ds in {k.datastore_id for k in facts}
            }
        ),
    )


def flat_counters(stored: StoredState) -> dict[CounterKey, float]:
    """Return every counter a loaded state holds, data stores' and image sets' own, by key."""
    flat = dict(stored.counters)
    for key, own in stored.own.items():
        for family, status, value in own.items():
            flat[CounterKey(family, *key, status)] = value
    return flat


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """Return status, headers and body, whatever the status."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll a condition until it holds or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def run_backfill(
    service: ExporterService,
    datastore_id: str,
    timeout: float = 60,
    until: Callable[[], bool] | None = None,
) -> None:
    """Run backfill pages, as the runtime's backfill job would, until complete (or `until`)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        view = service.poller.view().datastores[datastore_id]
        if view.backfill_complete or (until is not None and until()):
            return
        service.run_backfills(slice_seconds=0.0)  # one page: the caller sees every page's end
        if not service.poller.backfilling:
            time.sleep(0.05)
    raise AssertionError("backfill did not complete")


def sample_value(body: bytes | str, name: str, **labels: str) -> float:
    """Return one sample of a text exposition (the sum over series matching `labels`; 0 if none).

    `name` is the sample's name as exposed (`..._total`, `..._count`).
    """
    from prometheus_client.parser import text_string_to_metric_families

    text = body.decode() if isinstance(body, bytes) else body
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


class FullDisk(SnapshotStore):
    """A real store whose snapshot writes fail while `full` is set, as SQLITE_FULL would."""

    full = False

    def apply(
        self,
        snapshot: ImageSetSnapshot,
        facts: ImageSetFacts,
        increments: Mapping[CounterKey, float],
        drop_counters: bool = False,
    ) -> ImageSetFacts | None:
        """Write, unless the disk is `full`."""
        if self.full:
            raise StoreError("state.path test: cannot write: database or disk is full")
        return super().apply(snapshot, facts, increments, drop_counters)
