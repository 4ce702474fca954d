"""Scenario: the cost of a publish as the fleet changes, at 100k (`all`) and 1M (`failures_only`).

In process, on a state built by `bench/fleet.py` and loaded as the exporter loads it: the CPU
time of a poll's publish (the view taken from the state, `render(...)` and `prepare(...)`) for
the first render, after a cycle in which 1 % of the image sets changed (each given one more
version, drawn from the fleet's status mix and applied through the state as a cycle applies
it), and after a cycle with no change. The baseline is a full render of the same final view
(every per-image-set line formatted and compressed again), which is what every publish cost
before rendering followed changes. Reconciliation's batch, read from the store, is timed beside
sorting every key, which each cycle did before.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from types import MappingProxyType

from prometheus_client import CollectorRegistry

from bench import fleet
from bench.common import Figure, median
from exporter.config import PerImageSet
from exporter.diff import diff_versions
from exporter.discovery import reconcile_batch, reconcile_size
from exporter.metrics.collectors import DatastoreCollector, EventCollector, ImageSetCollector
from exporter.metrics.exposition import PROMETHEUS_DEFAULT, render
from exporter.metrics.kept import KeptImageSetLines
from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import ImageSetKey, Version
from exporter.service import load_state
from exporter.state import FleetState
from exporter.store import SnapshotStore

CHANGED_FRACTION = 0.01
TARGET_100K_SECONDS = 0.2
TARGET_1M_FRACTION = 0.10
# A new version's status, as the fleet's later versions are drawn (bench/fleet.py).
_STATUSES = ("UPDATED", "COPIED", "UPDATE_FAILED", "COPY_FAILED")
_WEIGHTS = (70.0, 25.0, 3.0, 2.0)


def _cpu(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def _view(state: FleetState, mode: PerImageSet) -> FleetView:
    """Take the view a poll publishes (as Poller.view does)."""
    with state.lock:
        facts, counters, own = state.copies()
        return FleetView(
            facts,
            counters,
            MappingProxyType({fleet.DATASTORE: DatastoreView(fleet.DATASTORE, mode, True, 1.0)}),
            totals=state.totals(),
            changed=state.take_changes(),
            own_counters=own,
            in_progress=state.in_progress(),
            failure_codes=state.failure_codes(),
        )


def _change(state: FleetState, keys: list[ImageSetKey], rng: random.Random) -> None:
    """Apply a cycle that gave each of `keys` one more version (not timed)."""
    for key in keys:
        old = state.get(key)
        assert old is not None
        top = old.latest
        number = 1 if top is None else top.version_id + 1
        status = rng.choices(_STATUSES, _WEIGHTS)[0]
        listed = (Version(number, status, "ACTIVE", is_primary=True), *old.versions)
        assert state.apply(diff_versions(key, old, listed))


def measure(image_sets: int, mode: PerImageSet, repeats: int) -> dict[str, list[float]]:
    """Return CPU seconds of the first, the 1 %-changed and the unchanged publishes."""
    state_file = fleet.state_file(image_sets, 5 * image_sets)
    store = SnapshotStore(fleet.copy_state(state_file, f"publish-{image_sets}.db"))
    state = load_state(store, full=[fleet.DATASTORE] if mode == "all" else ())
    figures: dict[str, list[float]] = {"first": [], "changed": [], "unchanged": [], "full": []}
    every = [key for key in state.image_set_keys(fleet.DATASTORE)]
    # Reconciliation's share of a cycle: a batch read from the store in id order, against
    # sorting every key as each cycle did before, in the order a backfill meets them.
    met_order = list(every)
    random.Random(0).shuffle(met_order)
    figures["reconcile_sort"] = [_cpu(partial(sorted, met_order))]
    del met_order
    count = reconcile_size(len(every), 60.0, 86_400.0)
    middle = every[len(every) // 2].image_set_id
    figures["reconcile_batch"] = [
        _cpu(
            lambda: reconcile_batch(
                lambda after, limit: state.keys_after(fleet.DATASTORE, after, limit),
                middle,
                count,
            )
        )
    ]
    registry = CollectorRegistry(auto_describe=False)
    kept = KeptImageSetLines()
    rest = (EventCollector(), DatastoreCollector())

    def publish() -> None:
        view = _view(state, mode)
        kept.note(view)
        render(registry, view, rest, kept=kept).prepare(PROMETHEUS_DEFAULT)

    state.take_changes()
    start = replace(_view(state, mode), changed=None)  # the start-up view: format everything
    kept.note(start)
    figures["first"].append(
        _cpu(partial(render(registry, start, rest, kept=kept).prepare, PROMETHEUS_DEFAULT))
    )
    rng = random.Random(1)
    for _ in range(repeats):
        _change(state, rng.sample(every, int(len(every) * CHANGED_FRACTION)), rng)
        gc.collect()
        figures["changed"].append(_cpu(publish))
        figures["unchanged"].append(_cpu(publish))
        final = _view(state, mode)
        everything = render(registry, final, (ImageSetCollector(), *rest))
        gc.collect()
        figures["full"].append(_cpu(partial(everything.prepare, PROMETHEUS_DEFAULT)))
    store.close()
    return figures


def run(quick: bool) -> list[Figure]:
    """Publish costs at 100k image sets (`all`) and 1M (`failures_only`); quick: 2k and 5k."""
    out: list[Figure] = []
    sizes: tuple[tuple[int, PerImageSet], ...] = (
        ((2_000, "all"), (5_000, "failures_only"))
        if quick
        else ((100_000, "all"), (1_000_000, "failures_only"))
    )
    repeats = 1 if quick else 5
    for image_sets, mode in sizes:
        got = measure(image_sets, mode, repeats)
        size = f"{image_sets // 1000}k" if image_sets < 1_000_000 else f"{image_sets // 1_000_000}M"
        full = median(got["full"])
        changed = median(got["changed"])
        if image_sets >= 1_000_000:
            target = f"<= {TARGET_1M_FRACTION:.0%} of the full render"
            met: bool | None = changed <= TARGET_1M_FRACTION * full
        elif image_sets >= 100_000:
            target = f"<= {TARGET_100K_SECONDS:g} s"
            met = changed <= TARGET_100K_SECONDS
        else:
            target, met = "", None
        baseline = f"a full render of the same view (median of {repeats})"
        out += [
            Figure(
                f"publish_1pct_changed_{size}_{mode}", changed, "s CPU", full, baseline, target, met
            ),
            Figure(
                f"publish_unchanged_{size}_{mode}",
                median(got["unchanged"]),
                "s CPU",
                full,
                baseline,
                "",
                None,
            ),
            Figure(
                f"reconcile_batch_{size}",
                median(got["reconcile_batch"]),
                "s CPU",
                median(got["reconcile_sort"]),
                "sorting every key in first-sight order, as each cycle did",
                "",
                None,
            ),
            Figure(
                f"publish_first_{size}_{mode}", got["first"][0], "s CPU", full, baseline, "", None
            ),
        ]
        print(size, mode, {k: [round(x, 3) for x in v] for k, v in got.items()}, flush=True)
    return out
