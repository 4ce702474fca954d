"""Synthetic exporter state for the benchmarks: snapshots, a prefilled state file, a config."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import socket
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from exporter.facts import TotalsKey, contribution, facts_of
from exporter.model import (
    FAILED_VERSIONS,
    FAILURE_STATUSES,
    FORCED_VERSIONS,
    NEW_VERSIONS,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    Version,
)
from exporter.store import SnapshotStore, encode_facts, encode_snapshot

DATASTORE = "b0000000000000000000000000000001"
# Same mix as the emulator's synthetic data (exporter/emulator/synthetic.py).
_FIRST_STATUSES = ("IMPORTED", "COPIED", "IMPORT_FAILED")
_FIRST_WEIGHTS = (80.0, 17.0, 3.0)
_LATER_STATUSES = ("UPDATED", "COPIED", "UPDATE_FAILED", "COPY_FAILED")
_LATER_WEIGHTS = (70.0, 25.0, 3.0, 2.0)
_FORCED_RATIO = 0.03


def sizes(quick: bool) -> tuple[tuple[int, str], ...]:
    """Return the (image sets, per_image_set) pairs the memory and restart scenarios run."""
    if quick:
        return ((1_000, "all"), (2_000, "failures_only"))
    return ((100_000, "all"), (1_000_000, "failures_only"))


def size_name(image_sets: int) -> str:
    """Return 100k, 1M and the like."""
    if image_sets >= 1_000_000:
        return f"{image_sets // 1_000_000}M"
    return f"{image_sets // 1000}k"


def image_set_id(index: int) -> str:
    """Return the deterministic id of the index-th synthetic image set."""
    return hashlib.md5(f"bench-{index}".encode(), usedforsecurity=False).hexdigest()


def version_counts(image_sets: int, versions: int, seed: int = 0) -> list[int]:
    """Split `versions` over `image_sets` lists of 1 to 2·mean-1 versions, summing exactly."""
    if versions < image_sets:
        raise ValueError("every image set needs at least one version")
    rng = random.Random(seed)
    mean = versions / image_sets
    top = max(1, round(2 * mean - 1))
    counts = [rng.randint(1, top) for _ in range(image_sets)]
    excess = sum(counts) - versions
    index = 0
    while excess != 0:  # nudge round robin until the sum is exact
        if excess > 0 and counts[index] > 1:
            counts[index] -= 1
            excess -= 1
        elif excess < 0:
            counts[index] += 1
            excess += 1
        index = (index + 1) % image_sets
    return counts


def snapshots(image_sets: int, versions: int, seed: int = 0) -> Iterator[ImageSetSnapshot]:
    """Yield deterministic snapshots: the emulator's status mix, ~3 % forced versions."""
    rng = random.Random(seed)
    for index, count in enumerate(version_counts(image_sets, versions, seed)):
        history = []
        for number in range(1, count + 1):
            first = number == 1
            pool = _FIRST_STATUSES if first else _LATER_STATUSES
            weights = _FIRST_WEIGHTS if first else _LATER_WEIGHTS
            history.append(
                Version(
                    version_id=number,
                    workflow_status=rng.choices(pool, weights)[0],
                    image_set_state="ACTIVE",
                    forced=number > 1 and rng.random() < _FORCED_RATIO,
                    is_primary=True,
                )
            )
        yield ImageSetSnapshot(
            ImageSetKey(DATASTORE, image_set_id(index)), tuple(reversed(history))
        )


def increments(snapshot: ImageSetSnapshot) -> dict[CounterKey, int]:
    """Return counters as if every version after the first had been seen by a diff."""
    result: dict[CounterKey, int] = {}
    key = snapshot.key
    for version in snapshot.versions:
        if version.version_id == 1:
            continue
        new = CounterKey(NEW_VERSIONS, key.datastore_id, workflow_status=version.workflow_status)
        result[new] = result.get(new, 0) + 1
        if version.workflow_status in FAILURE_STATUSES:
            failed = CounterKey(FAILED_VERSIONS, *key, version.workflow_status)
            result[failed] = result.get(failed, 0) + 1
        if version.forced:
            forced = CounterKey(FORCED_VERSIONS, *key)
            result[forced] = result.get(forced, 0) + 1
    return result


@dataclass(frozen=True, slots=True)
class StateFile:
    """A prefilled state file and what it holds."""

    path: str
    image_sets: int
    versions: int
    first_image_set: str
    # The first image set that `per_image_set: failures_only` shows (a failed or forced version).
    first_shown_image_set: str


_WORKDIR = tempfile.mkdtemp(prefix="hie-bench-")


def workdir() -> str:
    """Return this run's scratch directory (removed by `cleanup`)."""
    return _WORKDIR


def cleanup() -> None:
    """Remove the scratch directory."""
    shutil.rmtree(_WORKDIR, ignore_errors=True)


@cache
def state_file(image_sets: int, versions: int) -> StateFile:
    """Build (once per run) a state file holding what polls would have written.

    The rows are those `SnapshotStore.apply` writes (its own `encode_snapshot` and
    `encode_facts`, the totals and counters summed), inserted in one transaction: a million image
    sets take seconds, not minutes.
    """
    path = os.path.join(_WORKDIR, f"state-{image_sets}-{versions}.db")
    SnapshotStore(path).close()  # the schema, migrated as the exporter does
    rows: list[tuple[str, str, str, None, str, int]] = []
    counters: dict[CounterKey, float] = {}
    totals: Counter[TotalsKey] = Counter()
    shown: str | None = None
    for snapshot in snapshots(image_sets, versions):
        facts = facts_of(snapshot)
        if shown is None and facts.failing:
            shown = snapshot.key.image_set_id
        totals.update(contribution(facts))
        rows.append(
            (
                *snapshot.key,
                encode_snapshot(snapshot),
                None,
                encode_facts(facts),
                int(facts.notable),
            )
        )
        for counter, amount in increments(snapshot).items():
            counters[counter] = counters.get(counter, 0.0) + amount
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO image_sets (datastore_id, image_set_id, versions, deleted_at, facts, "
            "notable) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            "INSERT INTO datastore_totals (datastore_id, name, label, value) VALUES (?, ?, ?, ?)",
            [(DATASTORE, name, label, value) for (name, label), value in totals.items() if value],
        )
        db.executemany(
            "INSERT INTO counters (family, datastore_id, image_set_id, workflow_status, reason, "
            "value) VALUES (?, ?, ?, ?, ?, ?)",
            [(*k, v) for k, v in counters.items()],
        )
        db.execute("COMMIT")
    finally:
        db.close()
    return StateFile(path, image_sets, versions, image_set_id(0), shown or image_set_id(0))


def copy_state(state: StateFile, name: str) -> str:
    """Copy a state file so a run may write to it without touching the shared one."""
    target = os.path.join(_WORKDIR, name)
    shutil.copyfile(state.path, target)
    return target


def empty_state(name: str) -> str:
    """Return the path of a fresh, empty state file."""
    path = os.path.join(_WORKDIR, name)
    SnapshotStore(path).close()
    return path


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config_dict(
    state_path: str, endpoint_url: str, port: int = 0, per_image_set: str = "all"
) -> dict[str, Any]:
    """Return an exporter config: one data store, `image_sets: all`, per-image-set series."""
    return {
        "aws": {"region": "us-east-1", "endpoint_url": endpoint_url, "max_attempts": 1},
        "poll": {"interval_seconds": 86_400},
        "datastores": [{"datastore_id": DATASTORE, "image_sets": "all"}],
        "metrics": {"per_image_set": per_image_set},
        "state": {"path": state_path},
        "web": {"listen_address": f"127.0.0.1:{port}"},
    }


def write_config(
    state_path: str, endpoint_url: str, port: int, name: str, per_image_set: str = "all"
) -> str:
    """Write `config_dict` as YAML; return its path."""
    path = os.path.join(_WORKDIR, name)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config_dict(state_path, endpoint_url, port, per_image_set), handle)
    return path
