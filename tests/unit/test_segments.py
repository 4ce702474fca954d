"""Kept segments: one valid gzip, kept in order; an incremental render equals a fresh one."""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from dataclasses import replace

from prometheus_client import CollectorRegistry

from exporter.config import PerImageSet
from exporter.metrics.collectors import (
    DatastoreCollector,
    EventCollector,
    ImageSetCollector,
)
from exporter.metrics.exposition import GZIP_HEADER, render
from exporter.metrics.kept import LARGE, LARGE_CHUNK, SMALL_CHUNK, KeptImageSetLines, chunk_size
from exporter.metrics.segments import (
    LIBZ_CRC32_COMBINE,
    Body,
    Compressor,
    CrcTree,
    SortedChunks,
    combine_crc,
    gather,
    inflate,
)
from exporter.metrics.view import DatastoreView, FleetView
from exporter.model import (
    FAILED_VERSIONS,
    FAILURES,
    LAST_FAILURE,
    CounterKey,
    ImageSetKey,
    ImageSetSnapshot,
    Version,
)
from tests.helpers import fleet_view

DS = "d" * 32


def gzip_of(body: Body) -> bytes:
    """One gzip member around a body, as the exposition writes it (without live lines)."""
    final = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS).flush()  # an empty last block
    trailer = struct.pack("<II", body.crc, body.size & 0xFFFFFFFF)
    return GZIP_HEADER + b"".join(body.parts) + final + trailer


def test_segments_compressed_apart_join_into_one_gzip_member() -> None:
    rng = random.Random(7)
    texts = [bytes(rng.choice(b"abc\n") for _ in range(rng.randint(0, 70_000))) for _ in range(9)]
    early = Compressor()
    late = Compressor()
    # Compressed by two streams, at different times, then joined in another order.
    segments = [early.segment(t) if i % 2 else late.segment(t) for i, t in enumerate(texts)]
    body = gzip_of(gather(segments))
    assert gzip.decompress(body) == b"".join(texts)
    assert zlib.decompress(body, 16 + zlib.MAX_WBITS) == b"".join(texts)  # CRC and size checked
    reordered = gzip_of(gather(segments[::-1]))
    assert gzip.decompress(reordered) == b"".join(texts[::-1])
    assert [inflate(s) for s in segments] == texts


def test_sorted_chunks_keep_order_through_inserts_splits_and_removals() -> None:
    rng = random.Random(3)
    kept: SortedChunks[tuple[str, ...]] = SortedChunks(1, 4)
    kept.reset([(f"{n:04d}",) for n in range(0, 100, 2)])
    present = {(f"{n:04d}",) for n in range(0, 100, 2)}
    for _ in range(500):
        key = (f"{rng.randrange(120):04d}",)
        if rng.random() < 0.5:
            kept.add(key)
            present.add(key)
        else:
            kept.remove(key)
            present.discard(key)
    assert list(kept.keys()) == sorted(present) and len(kept) == len(present)
    kept.rebuild(lambda keys: ["".join(f"{k[0]}\n" for k in keys).encode()])
    text = b"".join(inflate(s) for s in kept.column(0)).decode()
    assert text.split() == [k[0] for k in sorted(present)]


def _snapshot(rng: random.Random, key: ImageSetKey) -> ImageSetSnapshot:
    statuses = ("IMPORTED", "COPY_FAILED", "COPYING", "UPDATE_FAILED", "UPDATED")
    versions = tuple(
        Version(
            n,
            status := rng.choice(statuses),
            "ACTIVE",
            forced=rng.random() < 0.2,
            changed_at=float(n * 10) if status == "COPYING" else None,
            reason=rng.choice((None, "INVALID_REQUEST", "X_CODE")) if "FAILED" in status else None,
        )
        for n in range(rng.randint(1, 4), 0, -1)
    )
    deleted = 5.0 if rng.random() < 0.05 else None
    return ImageSetSnapshot(key, versions, deleted_at=deleted)


def _view(
    image_sets: dict[ImageSetKey, ImageSetSnapshot],
    counters: dict[CounterKey, float],
    mode: PerImageSet,
    changed: set[ImageSetKey] | None,
) -> FleetView:
    view = fleet_view(image_sets, counters, {DS: DatastoreView(DS, mode, True, 1.0)})
    # What the state layer keeps: facts of image sets some mode shows (all, here: a superset).
    return replace(view, changed=None if changed is None else frozenset(changed))


def test_an_incremental_render_equals_a_fresh_one_after_every_change() -> None:
    rng = random.Random(11)
    keys = [ImageSetKey(DS, f"{rng.getrandbits(128):032x}") for _ in range(300)]
    image_sets = {k: _snapshot(rng, k) for k in keys[:200]}
    counters: dict[CounterKey, float] = {}
    kept = KeptImageSetLines(size=4)
    rest = (EventCollector(), DatastoreCollector())
    fresh = (ImageSetCollector(), *rest)
    modes: tuple[PerImageSet, ...] = ("all", "failures_only", "none")
    mode: PerImageSet = "all"
    changed: set[ImageSetKey] | None = None
    registry = CollectorRegistry()
    for step in range(25):
        touched = set()
        for key in rng.sample(keys, 15):  # new, changed, and forgotten image sets
            touched.add(key)
            if rng.random() < 0.15:
                image_sets.pop(key, None)
                counters = {k: v for k, v in counters.items() if k.image_set_id != key[1]}
                continue
            image_sets[key] = _snapshot(rng, key)
            counter = CounterKey(FAILED_VERSIONS, *key, "COPY_FAILED")
            counters[counter] = counters.get(counter, 0.0) + 1
            counters[counter._replace(family=LAST_FAILURE)] = float(step)
        reason = f"CODE_{rng.randrange(30)}"
        counters[CounterKey(FAILURES, DS, "", "COPY_FAILED", reason)] = 1.0
        if step % 6 == 5:
            mode = modes[(modes.index(mode) + 1) % 3]
        changed = None if step == 0 else touched
        view = _view(image_sets, counters, mode, changed)
        kept.note(view)
        if step % 7 == 3:
            continue  # published but never built: its changes pass on to the next build
        incremental = render(registry, view, rest, kept=kept)
        assert incremental.text == render(registry, view, fresh).text, f"step {step}"
        assert incremental.openmetrics == render(registry, view, fresh).openmetrics
        if step % 5 == 0:  # the same view again changes nothing
            again = replace(view, changed=frozenset())
            kept.note(again)
            assert render(registry, again, rest, kept=kept).text == incremental.text


def test_the_crc_is_combined_the_same_with_and_without_libz() -> None:
    rng = random.Random(5)
    a, b = rng.randbytes(1000), rng.randbytes(70_000)
    expected = zlib.crc32(a + b)
    assert combine_crc(zlib.crc32(a), zlib.crc32(b), len(b), {}) == expected
    if LIBZ_CRC32_COMBINE is not None:
        assert LIBZ_CRC32_COMBINE(zlib.crc32(a), zlib.crc32(b), len(b)) == expected


def test_the_crc_tree_matches_the_crc_of_the_joined_text_through_updates() -> None:
    rng = random.Random(9)
    texts = [rng.randbytes(rng.choice((0, 1, 50, 3000))) for _ in range(37)]
    tree = CrcTree()
    tree.reset([(zlib.crc32(t), len(t)) for t in texts])
    assert tree.total() == (zlib.crc32(b"".join(texts)), sum(map(len, texts)))
    for _ in range(20):
        changes = {}
        for position in rng.sample(range(len(texts)), 5):
            texts[position] = rng.randbytes(rng.choice((0, 7, 900)))
            changes[position] = (zlib.crc32(texts[position]), len(texts[position]))
        tree.update(changes)
        assert tree.total() == (zlib.crc32(b"".join(texts)), sum(map(len, texts)))
    empty = CrcTree()
    empty.reset([])
    assert empty.total() == (0, 0)


def test_chunks_are_small_for_small_fleets_and_larger_where_memory_runs_out() -> None:
    assert chunk_size(10_000) == SMALL_CHUNK < LARGE_CHUNK == chunk_size(LARGE + 1)
