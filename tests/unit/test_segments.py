"""Kept segments: one valid gzip, kept in order; an incremental render equals a fresh one."""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from array import array
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import PerImageSet
from exporter.metrics.collectors import (
    DatastoreCollector,
    EventCollector,
    ImageSetCollector,
)
from exporter.metrics.exposition import GZIP_HEADER, render
from exporter.metrics.kept import CHUNK, LARGEST_CHUNK, KeptImageSetLines, chunk_size
from exporter.metrics.segments import (
    MAX_CHUNK,
    Body,
    Compressor,
    CrcTree,
    Row,
    Segment,
    SortedChunks,
    combine_crcs,
    gather,
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


def inflate(piece: Segment | Body) -> bytes:
    """A segment's or body's lines (raw deflate, no dictionary)."""
    data = piece.deflated if isinstance(piece, Segment) else b"".join(piece.parts)
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)


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
    kept.rebuild(lambda keys: [(f"{k[0]}\n",) for k in keys])
    text = inflate(kept.column_body(0)).decode()
    assert text.split() == [k[0] for k in sorted(present)]


def _snapshot(rng: random.Random, key: ImageSetKey, failing: float) -> ImageSetSnapshot:
    """Versions of random statuses; with `failing` < 1, most image sets only succeed."""
    statuses: tuple[str, ...] = ("IMPORTED", "COPY_FAILED", "COPYING", "UPDATE_FAILED", "UPDATED")
    if rng.random() >= failing:
        statuses = ("IMPORTED", "UPDATED", "COPIED")
    versions = tuple(
        Version(
            n,
            status := rng.choice(statuses),
            "ACTIVE",
            forced=rng.random() < 0.2 * failing,
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


@pytest.mark.parametrize("failing", [1.0, 0.1])
def test_an_incremental_render_equals_a_fresh_one_after_every_change(failing: float) -> None:
    rng = random.Random(11)
    keys = [ImageSetKey(DS, f"{rng.getrandbits(128):032x}") for _ in range(300)]
    image_sets = {k: _snapshot(rng, k, failing) for k in keys[:200]}
    counters: dict[CounterKey, float] = {}
    kept = KeptImageSetLines(lambda _: 4)
    rest = (EventCollector(), DatastoreCollector())
    fresh = (ImageSetCollector(), *rest)
    modes: tuple[PerImageSet, ...] = ("all", "failures_only", "none")
    mode: PerImageSet = "all"
    changed: set[ImageSetKey] | None = None
    registry = CollectorRegistry()
    parts = set()
    for step in range(25):
        touched = set()
        for key in rng.sample(keys, 15):  # new, changed, and forgotten image sets
            touched.add(key)
            if rng.random() < 0.15:
                image_sets.pop(key, None)
                counters = {k: v for k, v in counters.items() if k.image_set_id != key[1]}
                continue
            image_sets[key] = _snapshot(rng, key, failing)
            if rng.random() >= failing:
                continue
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
        parts.add(kept.parts)
        assert incremental.openmetrics == render(registry, view, fresh).openmetrics
        if step % 5 == 0:  # the same view again changes nothing
            again = replace(view, changed=frozenset())
            kept.note(again)
            assert render(registry, again, rest, kept=kept).text == incremental.text
    # Mostly healthy image sets keep their failures' families apart, in chunks of their own.
    assert parts == ({1, 2} if failing < 1 else {1})


def test_crcs_combine_as_the_crc_of_the_joined_bytes() -> None:
    rng = random.Random(5)
    a, b = rng.randbytes(1000), rng.randbytes(70_000)
    assert combine_crcs(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_the_crc_tree_matches_the_crc_of_the_joined_text_through_updates() -> None:
    rng = random.Random(9)
    texts = [rng.randbytes(rng.choice((0, 1, 50, 3000))) for _ in range(37)]
    tree = CrcTree()
    tree.reset_arrays(array("Q", map(zlib.crc32, texts)), array("Q", map(len, texts)))
    assert tree.total() == (zlib.crc32(b"".join(texts)), sum(map(len, texts)))
    for _ in range(20):
        changes = {}
        for position in rng.sample(range(len(texts)), 5):
            texts[position] = rng.randbytes(rng.choice((0, 7, 900)))
            changes[position] = (zlib.crc32(texts[position]), len(texts[position]))
        tree.update(changes)
        assert tree.total() == (zlib.crc32(b"".join(texts)), sum(map(len, texts)))
    empty = CrcTree()
    empty.reset_arrays(array("Q"), array("Q"))
    assert empty.total() == (0, 0)


def test_chunks_are_as_large_as_a_publish_at_100k_allows_and_no_larger_than_64() -> None:
    # A publish after 1 % changed formats about shown / 100 * chunk image sets: at most
    # 100,000 / 100 * 16 from 25,000 to 100,000 shown (beyond, chunks stay at 16).
    assert chunk_size(0) == chunk_size(10_000) == chunk_size(25_000) == LARGEST_CHUNK == 64
    assert chunk_size(50_000) == 32
    assert chunk_size(100_000) == chunk_size(1_000_000) == CHUNK == 16
    for shown in (25_000, 40_000, 50_000, 70_000, 100_000):
        assert shown * chunk_size(shown) <= 100_000 * CHUNK


class Column:
    """Two columns of lines per key: every key has one in the first, a few in the second."""

    def __init__(self, keys: int, sparse: set[str]) -> None:
        self.values: dict[tuple[str, ...], int] = {(f"{n:02d}",): 1 for n in range(keys)}
        self.sparse = sparse
        self.formatted: list[str] = []

    def rows(self, keys: list[tuple[str, ...]]) -> list[Row]:
        self.formatted += [k[0] for k in keys]
        return [
            (
                f'some_metric{{datastore_id="{"d" * 32}",id="{k[0]}"}} {self.values[k]}\n',
                f'other_metric{{id="{k[0]}"}} {self.values[k]}\n' if k[0] in self.sparse else "",
            )
            for k in keys
        ]

    def text(self, column: int) -> bytes:
        return "".join(r[column] for r in self.rows(sorted(self.values)) if r).encode()


def test_a_segment_is_compressed_again_when_the_line_before_it_changes() -> None:
    lines = Column(12, {"02", "05"})
    kept: SortedChunks[tuple[str, ...]] = SortedChunks(2, 4)
    kept.reset(lines.values)
    kept.rebuild(lines.rows)
    before = [kept.column_body(i).parts for i in (0, 1)]

    def changed(column: int) -> list[int]:
        now = kept.column_body(column).parts
        return [i for i, (a, b) in enumerate(zip(before[column], now, strict=True)) if a is not b]

    def check() -> None:
        for column in (0, 1):
            body = kept.column_body(column)
            assert zlib.decompress(gzip_of(body), 16 + zlib.MAX_WBITS) == lines.text(column)

    lines.values[("01",)] = 2  # inside the first chunk: its segment alone
    kept.add(("01",))
    kept.rebuild(lines.rows)
    check()
    assert changed(0) == [0] and changed(1) == []  # "01" has no line in the second column
    before = [kept.column_body(i).parts for i in (0, 1)]
    lines.values[("03",)] = 3  # ends the first chunk's first column: the next one follows it
    kept.add(("03",))
    kept.rebuild(lines.rows)
    check()
    assert changed(0) == [0, 1] and changed(1) == []  # "03" has no line in the second column
    before = [kept.column_body(i).parts for i in (0, 1)]
    lines.values[("02",)] = 4  # ends the first chunk's second column, not its first
    kept.add(("02",))
    kept.rebuild(lines.rows)
    check()
    assert changed(0) == [0] and changed(1) == [0, 1]
    # Only the second chunk changes: the lines before it are formatted again from the keys
    # that end the first chunk's columns, not the whole first chunk.
    lines.formatted.clear()
    lines.values[("05",)] = 5
    kept.add(("05",))
    kept.rebuild(lines.rows)
    assert sorted(lines.formatted) == ["02", "03", "04", "05", "06", "07"]
    check()
    for key in ("04", "05", "06", "07"):  # a chunk gone: the one after it follows another
        kept.remove((key,))
        del lines.values[(key,)]
    kept.rebuild(lines.rows)
    check()


def test_segments_that_follow_each_other_compress_as_one_stream_would() -> None:
    lines = Column(400, set())
    kept: SortedChunks[tuple[str, ...]] = SortedChunks(2, 4)
    kept.reset(lines.values)
    kept.rebuild(lines.rows)
    apart = sum(
        len(Compressor().segment("".join(r[0] for r in lines.rows([k]) if r).encode()).deflated)
        for k in sorted(lines.values)
    )
    together = kept.column_body(0).length
    assert together < apart / 2


def test_a_fleet_that_grows_or_shrinks_past_twice_its_chunks_size_is_cut_again() -> None:
    rng = random.Random(3)
    keys = [ImageSetKey(DS, f"{rng.getrandbits(128):032x}") for _ in range(100)]
    kept = KeptImageSetLines(lambda shown: 8 if shown < 40 else 2)
    registry = CollectorRegistry()
    rest = (EventCollector(), DatastoreCollector())
    fresh = (ImageSetCollector(), *rest)
    image_sets: dict[ImageSetKey, ImageSetSnapshot] = {}
    sizes = []
    changed: set[ImageSetKey] | None = None
    for count in (10, 30, 39, 45, 100, 60, 39, 20):  # a backfill, then image sets deleted
        now = set(keys[:count])
        gone = set(image_sets) - now
        for key in gone:
            del image_sets[key]
        for key in now - set(image_sets):
            image_sets[key] = _snapshot(rng, key, 1.0)
        view = _view(image_sets, {}, "all", changed)
        kept.note(view)
        assert render(registry, view, rest, kept=kept).text == render(registry, view, fresh).text
        sizes.append(kept.chunk)
        changed = set(keys)
    # Cut for 8 while under 40, for 2 from there on, and for 8 again once under 40.
    assert sizes == [8, 8, 8, 2, 2, 2, 8, 8]


def test_hostile_label_values_render_the_same_incrementally() -> None:
    rng = random.Random(2)
    odd = ['a"b', "c\\d", "e\nf", "ü" * 40, "", " ", '"\\\n', "x" * 300, "#", "}{"]
    keys = [ImageSetKey(DS, f"{i:02d}{value}") for i, value in enumerate(odd)]
    image_sets = {k: _snapshot(rng, k, 1.0) for k in keys}
    kept = KeptImageSetLines(lambda _: 2)
    registry = CollectorRegistry()
    fresh = (ImageSetCollector(), EventCollector(), DatastoreCollector())
    changed: set[ImageSetKey] | None = None
    for step in range(6):
        view = _view(image_sets, {}, "all", changed)
        kept.note(view)
        text = render(registry, view, fresh[1:], kept=kept).text
        assert text == render(registry, view, fresh).text, f"step {step}"
        changed = set(rng.sample(keys, 3))
        for key in changed:  # changed lines: the chunks after them follow other bytes
            image_sets[key] = _snapshot(rng, key, 1.0)


def test_a_chunk_size_the_position_byte_cannot_hold_is_refused() -> None:
    chunks: SortedChunks[tuple[str, ...]] = SortedChunks(1, MAX_CHUNK + 1)
    with pytest.raises(ValueError, match="chunks hold 1 to"):
        chunks.reset([("a",)])
    chunks.reset([("a",)], size=MAX_CHUNK)  # the largest that fits
    assert list(chunks.keys()) == [("a",)]
