"""Compressed pieces of an exposition, kept between polls and joined into one gzip body.

A segment is the raw deflate output for a run of lines, ending on a byte boundary (a flush), so
segments compressed at different times can be concatenated into one valid deflate stream. The
gzip body around them is built at publish time: its CRC-32 is combined from the segments' own
(crc32_combine). One gzip member, so every client inflates it.

A segment compressed on its own restarts deflate's dictionary, and a chunk's lines open with the
same metric name and labels as the chunk's before it: compressed apart, the body grows by two
thirds. So a kept segment may be compressed against the lines that end the segment before it in
the body, those of its last key (a preset dictionary: deflate refers back into the bytes already
sent), and is compressed again whenever they change.

Kept segments are what makes a publish cost follow changes: an unchanged run of lines is neither
formatted nor compressed again. Their price is a deflate block per segment, whose Huffman tables
every reader builds before inflating it: zlib-ng (a zlib with the same format and interface)
inflates such a body in about three quarters of zlib's time and deflates segments faster, and
exposes crc32_combine, which Python's zlib module does not (docs/performance.md).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from zlib_ng import zlib_ng

# Fast compression: the exposition is large and repetitive. zlib-ng's level 1 writes fixed
# Huffman codes only (a third larger); 2 and 3 differ little (100k image sets: 12.19 and 12.14
# MiB) and 4 to 6 find 2 to 4 % more for more time per segment (docs/performance.md).
GZIP_LEVEL = 3


@dataclass(frozen=True, slots=True)
class Segment:
    """Lines compressed on their own: raw deflate ending in a full flush, their CRC and size."""

    deflated: bytes
    crc: int
    size: int


EMPTY = Segment(b"", 0, 0)


class Compressor:
    """Cuts one deflate stream into independent segments (one stream: no setup per segment)."""

    def __init__(self) -> None:
        # memLevel 5: buffers for 2,048 symbols per deflate block, more than a segment of a few
        # KiB of lines takes (zlib-ng's match table does not depend on it); less to allocate.
        self._deflate = zlib_ng.compressobj(GZIP_LEVEL, zlib_ng.DEFLATED, -zlib_ng.MAX_WBITS, 5)

    def segment(self, data: bytes, after: bytes = b"") -> Segment:
        """Compress `data` into a segment; `after`: the bytes that precede it in every body.

        Without `after` the segment stands on its own; with it, it refers back into them.
        """
        if not data:
            return EMPTY
        if after:
            deflate = zlib_ng.compressobj(
                GZIP_LEVEL, zlib_ng.DEFLATED, -zlib_ng.MAX_WBITS, 5, zdict=after
            )
            deflated = deflate.compress(data) + deflate.flush(zlib_ng.Z_SYNC_FLUSH)
        else:
            deflated = self._deflate.compress(data) + self._deflate.flush(zlib_ng.Z_FULL_FLUSH)
        return Segment(deflated, zlib_ng.crc32(data), len(data))

    def segments_of(self, parts: Iterable[bytes]) -> Segment:
        """Compress a run of parts as they come into one segment (no whole copy of them)."""
        out: list[bytes] = []
        crc = size = 0
        for part in parts:
            out.append(self._deflate.compress(part))
            crc = zlib_ng.crc32(part, crc)
            size += len(part)
        if not size:
            return EMPTY
        out.append(self._deflate.flush(zlib_ng.Z_FULL_FLUSH))
        return Segment(b"".join(out), crc, size)


@dataclass(frozen=True, slots=True)
class Body:
    """Segments in order, as one deflate stream: their data (not joined), CRC and size."""

    parts: tuple[bytes, ...]
    crc: int
    size: int
    length: int = -1  # compressed; -1: summed from the parts when made

    def __post_init__(self) -> None:
        if self.length < 0:  # once, not per scrape
            object.__setattr__(self, "length", sum(map(len, self.parts)))


def gather(pieces: Iterable[Segment | Body]) -> Body:
    """Return segments and bodies in order as one body: CRC combined, sizes summed.

    The parts are the pieces' own bytes, not a copy: a body costs no memory beyond them.
    """
    parts: list[bytes] = []
    crc = size = length = 0
    for piece in pieces:
        if not piece.size:
            continue
        if isinstance(piece, Body):
            parts.extend(piece.parts)
            length += piece.length
        else:
            parts.append(piece.deflated)
            length += len(piece.deflated)
        crc = combine_crcs(crc, piece.crc, piece.size) if size else piece.crc
        size += piece.size
    return Body(tuple(parts), crc, size, length)


# Keys kept in order: named tuples of strings (image set keys, counter keys).
K = TypeVar("K", bound=tuple[str, ...])


def combine_crcs(crc_a: int, crc_b: int, length_b: int) -> int:
    """Return the CRC-32 of A+B from those of A and B and B's length."""
    return zlib_ng.crc32_combine(crc_a, crc_b, length_b)


class CrcTree:
    """The CRC-32 and size of a run of segments, kept as a binary tree of partial sums.

    A publish changes a few segments of every column; the tree combines again only the nodes
    above them (O(changed · log n) combinations, not one per segment). Written here because
    crc32_combine joins two CRCs, and a column holds thousands of segments. Each level is
    two arrays of machine integers: at a million image sets a tree of tuples costs ~100 MB.
    """

    def __init__(self) -> None:
        self._crcs: list[array[int]] = [array("Q")]
        self._sizes: list[array[int]] = [array("Q")]

    def reset_arrays(self, crcs: array[int], sizes: array[int]) -> None:
        """Build the tree over leaves given as two arrays (no tuple per leaf)."""
        self._crcs = [crcs]
        self._sizes = [sizes]
        while len(self._crcs[-1]) > 1:
            crcs, sizes = self._crcs[-1], self._sizes[-1]
            up_crcs, up_sizes = array("Q"), array("Q")
            for index in range(0, len(crcs), 2):
                crc, size = self._pair(crcs, sizes, index)
                up_crcs.append(crc)
                up_sizes.append(size)
            self._crcs.append(up_crcs)
            self._sizes.append(up_sizes)

    @staticmethod
    def _pair(crcs: array[int], sizes: array[int], index: int) -> tuple[int, int]:
        if index + 1 >= len(crcs) or not sizes[index + 1]:
            return crcs[index], sizes[index]
        if not sizes[index]:
            return crcs[index + 1], sizes[index + 1]
        right = sizes[index + 1]
        return combine_crcs(crcs[index], crcs[index + 1], right), sizes[index] + right

    def update(self, changes: dict[int, tuple[int, int]]) -> None:
        """Set some leaves (position -> (crc, size)) and combine the nodes above them again."""
        crcs, sizes = self._crcs[0], self._sizes[0]
        for position, (crc, size) in changes.items():
            crcs[position] = crc
            sizes[position] = size
        positions: Iterable[int] = changes
        combine = combine_crcs
        for level in range(1, len(self._crcs)):
            below_crcs, below_sizes = self._crcs[level - 1], self._sizes[level - 1]
            row_crcs, row_sizes = self._crcs[level], self._sizes[level]
            parents = {p >> 1 for p in positions}
            last = len(below_crcs) - 1
            for parent in parents:  # as _pair, inlined: this runs for every changed segment
                left = parent << 1
                right_size = below_sizes[left + 1] if left < last else 0
                if not right_size:
                    row_crcs[parent], row_sizes[parent] = below_crcs[left], below_sizes[left]
                elif not below_sizes[left]:
                    row_crcs[parent], row_sizes[parent] = below_crcs[left + 1], right_size
                else:
                    row_crcs[parent] = combine(below_crcs[left], below_crcs[left + 1], right_size)
                    row_sizes[parent] = below_sizes[left] + right_size
            positions = parents

    def total(self) -> tuple[int, int]:
        """Return the (crc, size) of all leaves in order."""
        top_crcs, top_sizes = self._crcs[-1], self._sizes[-1]
        return (top_crcs[0], top_sizes[0]) if top_crcs else (0, 0)


# Per column and chunk, three numbers in the chunk's `sums` array: the CRC and size of its
# text, and in one the tag of the lines its segment was compressed against (high bits) and the
# position in the chunk of the key whose lines end the text (low byte; chunks hold < 256 keys).
_CRC, _SIZE, _AFTER = range(3)
_SUMS = 3
_POSITION = 0xFF
_TAG_MASK = (1 << 55) - 1
MAX_CHUNK = _POSITION // 2  # a chunk splits at twice its size

# One formatted key: its text per column (None: the key has no lines at all).
Row = Sequence[str] | None


def _tag(after: bytes) -> int:
    """Name the bytes a segment was compressed against in 56 bits; 0: against nothing."""
    return ((hash(after) & _TAG_MASK) << 1) | 1 if after else 0


class _Chunk(Generic[K]):
    # Per column, the segment's data, and in one array its CRC, size and the tag of the lines it
    # was compressed against (crc0, size0, after0, crc1, ...): no Segment object per column,
    # which at a million image sets is ~20 MB of object headers.
    __slots__ = ("deflated", "dirty", "keys", "sums")

    def __init__(self, keys: list[K]) -> None:
        self.keys = keys
        self.deflated: tuple[bytes, ...] = ()  # one per column, once formatted
        self.sums = array("Q")
        self.dirty = True  # to be formatted again


class SortedChunks(Generic[K]):
    """Keys in sorted order, cut into small chunks, each with its columns' segments.

    A column is one metric family; a chunk's segment in a column holds that family's lines for
    the chunk's keys. Changing a key marks its chunk only; `rebuild` formats dirty chunks again.
    Chunks are small because changes land at random: with a few keys per chunk, 1 % of keys
    changed dirties about `size` % of the chunks. A key is found by bisection (no per-key
    index: at a million image sets, one would cost tens of megabytes).
    """

    def __init__(self, columns: int, size: int) -> None:
        self._columns = columns
        self._size = size
        self._chunks: list[_Chunk[K]] = []
        self._firsts: list[K] = []  # each chunk's first key, for bisection
        self._count = 0
        # Per column, the CRCs of its segments, and their data in chunk order (b"" for an empty
        # one); both rebuilt whole only when chunks come or go.
        self._trees = [CrcTree() for _ in range(columns)]
        self._data: list[list[bytes]] = [[] for _ in range(columns)]
        self._lengths = [0] * columns  # of each column's data, compressed
        self._restructured = True

    def __len__(self) -> int:
        return self._count

    def _find(self, key: K) -> tuple[int, int, bool] | None:
        """Return (chunk index, position in it, present) for where `key` is or would go."""
        if not self._chunks:
            return None
        index = max(0, bisect.bisect_right(self._firsts, key) - 1)
        keys = self._chunks[index].keys
        position = bisect.bisect_left(keys, key)
        return index, position, position < len(keys) and keys[position] == key

    def keys(self) -> Iterator[K]:
        """Yield the keys in order."""
        for chunk in self._chunks:
            yield from chunk.keys

    def reset(self, keys: Iterable[K], size: int | None = None) -> None:
        """Replace every key at once (the first render, or a change of what is shown).

        `size`, if given, becomes the number of keys per chunk from now on.
        """
        if size is not None:
            self._size = size
        if not 0 < self._size <= MAX_CHUNK:
            raise ValueError(f"chunks hold 1 to {MAX_CHUNK} keys, not {self._size}")
        ordered = sorted(keys)
        self._chunks = [
            _Chunk(ordered[i : i + self._size]) for i in range(0, len(ordered), self._size)
        ]
        self._firsts = [c.keys[0] for c in self._chunks]
        self._count = len(ordered)
        self._restructured = True

    def add(self, key: K) -> None:
        """Insert a key (or mark it changed, if present)."""
        found = self._find(key)
        if found is None:
            self._chunks.append(_Chunk([key]))
            self._firsts.append(key)
            self._count += 1
            self._restructured = True
            return
        index, position, present = found
        chunk = self._chunks[index]
        chunk.dirty = True
        if present:
            return
        chunk.keys.insert(position, key)
        self._count += 1
        self._firsts[index] = chunk.keys[0]
        if len(chunk.keys) >= 2 * self._size:
            half = len(chunk.keys) // 2
            tail = _Chunk(chunk.keys[half:])
            del chunk.keys[half:]
            self._chunks.insert(index + 1, tail)
            self._firsts.insert(index + 1, tail.keys[0])
            self._restructured = True

    def remove(self, key: K) -> None:
        """Drop a key, if present."""
        found = self._find(key)
        if found is None or not found[2]:
            return
        index, position, _ = found
        chunk = self._chunks[index]
        del chunk.keys[position]
        chunk.dirty = True
        self._count -= 1
        if chunk.keys:
            self._firsts[index] = chunk.keys[0]
        else:
            del self._chunks[index]
            del self._firsts[index]
            self._restructured = True
            if index < len(self._chunks):  # it follows another chunk now
                self._chunks[index].dirty = True

    def _afters(
        self, position: int, tails: list[bytes] | None, format_rows: Callable[[list[K]], list[Row]]
    ) -> list[bytes]:
        """Return, per column, the lines that come right before the chunk's segment in a body.

        Those are the chunk before's last key's with lines in the column: from this pass if
        it was formatted in it, else from its keys that end a column, formatted again (usually
        its last key alone).
        """
        columns = self._columns
        if position == 0:
            return [b""] * columns
        if tails is not None:
            return tails
        before = self._chunks[position - 1].sums
        ends: dict[int, list[int]] = {}
        for index in range(columns):
            if before[_SUMS * index + _SIZE]:
                ends.setdefault(before[_SUMS * index + _AFTER] & _POSITION, []).append(index)
        afters = [b""] * columns
        keys = self._chunks[position - 1].keys
        at = sorted(ends)
        for end, row in zip(at, format_rows([keys[end] for end in at]), strict=True):
            for index in ends[end]:
                if row is not None and row[index]:
                    afters[index] = row[index].encode()
        return afters

    def rebuild(self, format_rows: Callable[[list[K]], list[Row]]) -> None:
        """Format and compress the dirty chunks; `format_rows` formats keys, one row each.

        A column whose text came out as before (same CRC and size) keeps its segment, unless
        the lines it was compressed against changed: it is neither compressed again nor combined
        again into its column's CRC. The chunk after a formatted one is checked for that.
        """
        compressor: Compressor | None = None
        columns = self._columns
        changed: list[dict[int, tuple[int, int]]] = [{} for _ in self._trees]
        tails: list[bytes] | None = None  # of the chunk before, if formatted in this pass
        for position, chunk in enumerate(self._chunks):
            if not chunk.dirty and tails is None:
                continue
            afters = self._afters(position, tails, format_rows)
            tags = [_tag(after) for after in afters]
            old, sums = chunk.deflated, chunk.sums
            if not chunk.dirty and all(
                sums[_SUMS * i + _AFTER] >> 8 in (0, tags[i]) for i in range(columns)
            ):  # the lines its segments were compressed against are unchanged
                tails = None
                continue
            if compressor is None:
                compressor = Compressor()
            rows = format_rows(chunk.keys)
            present = [row for row in rows if row is not None]
            texts = zip(*present, strict=True) if present else [()] * columns
            deflated: list[bytes] = []
            new_sums = array("Q")
            tails = [b""] * columns
            for index, lines in enumerate(texts):
                text = "".join(lines).encode()
                base = _SUMS * index
                tag = tags[index] if text else 0
                end = 0
                if text:  # the key whose line ends the text: a next chunk follows that line
                    for end in range(len(rows) - 1, -1, -1):
                        row = rows[end]
                        if row is not None and row[index]:
                            tails[index] = row[index].encode()
                            break
                if (
                    old
                    and sums[base + _SIZE] == len(text)
                    and sums[base + _AFTER] >> 8 == tag
                    and (zlib_ng.crc32(text) if text else 0) == sums[base + _CRC]
                ):
                    deflated.append(old[index])
                    new_sums.extend((sums[base + _CRC], len(text), tag << 8 | end))
                    continue
                segment = compressor.segment(text, afters[index])
                deflated.append(segment.deflated)
                new_sums.extend((segment.crc, segment.size, tag << 8 | end))
                changed[index][position] = (segment.crc, segment.size)
            chunk.deflated = tuple(deflated)
            chunk.sums = new_sums
            chunk.dirty = False
        for index, tree in enumerate(self._trees):
            if self._restructured:
                crcs = array("Q", (self._leaf(c, index)[0] for c in self._chunks))
                sizes = array("Q", (self._leaf(c, index)[1] for c in self._chunks))
                tree.reset_arrays(crcs, sizes)
                self._data[index] = [self._bytes(c, index) for c in self._chunks]
                self._lengths[index] = sum(map(len, self._data[index]))
            elif changed[index]:
                tree.update(changed[index])
                data = self._data[index]
                for position in changed[index]:
                    new = self._bytes(self._chunks[position], index)
                    self._lengths[index] += len(new) - len(data[position])
                    data[position] = new
        self._restructured = False

    @staticmethod
    def _bytes(chunk: _Chunk[K], index: int) -> bytes:
        return chunk.deflated[index] if chunk.deflated else b""

    @staticmethod
    def _leaf(chunk: _Chunk[K], index: int) -> tuple[int, int]:
        if not chunk.deflated:
            return 0, 0
        return chunk.sums[_SUMS * index + _CRC], chunk.sums[_SUMS * index + _SIZE]

    def column_body(self, index: int) -> Body:
        """Return one column as a body: its non-empty segments' data, CRC and size."""
        crc, size = self._trees[index].total()
        return Body(tuple(filter(None, self._data[index])), crc, size, self._lengths[index])
