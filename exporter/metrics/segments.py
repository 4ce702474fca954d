"""Compressed pieces of an exposition, kept between polls and joined into one gzip body.

A segment is the raw deflate output for a run of lines, cut by a full flush: it refers to
nothing before it and ends on a byte boundary, so segments compressed at different times can be
concatenated in any order into one valid deflate stream. The gzip body around them is built at
publish time: its CRC-32 is combined from the segments' own (zlib has crc32_combine, Python's
zlib module does not expose it; see `combine_crc`). One gzip member, so every client inflates it.

Kept segments are what makes a publish cost follow changes: an unchanged run of lines is neither
formatted nor compressed again.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

# Fast compression: the exposition is large and repetitive, so level 1 already shrinks it
# about twentyfold, at a fraction of the default level's time.
GZIP_LEVEL = 1
_ZEROS = bytes(64 * 1024)


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
        # memLevel 5: a full flush clears the match hash table, which at the default level (8)
        # is 64 KiB for every segment of a few KiB; this halves its cost at the same size.
        self._deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 5)

    def segment(self, data: bytes) -> Segment:
        """Compress `data` into a segment that stands on its own."""
        if not data:
            return EMPTY
        deflated = self._deflate.compress(data) + self._deflate.flush(zlib.Z_FULL_FLUSH)
        return Segment(deflated, zlib.crc32(data), len(data))

    def segments_of(self, parts: Iterable[bytes]) -> Segment:
        """Compress a run of parts as they come into one segment (no whole copy of them)."""
        out: list[bytes] = []
        crc = size = 0
        for part in parts:
            out.append(self._deflate.compress(part))
            crc = zlib.crc32(part, crc)
            size += len(part)
        if not size:
            return EMPTY
        out.append(self._deflate.flush(zlib.Z_FULL_FLUSH))
        return Segment(b"".join(out), crc, size)


def _crc_of_zeros(length: int, crc: int) -> int:
    while length > 0:
        piece = min(length, len(_ZEROS))
        crc = zlib.crc32(_ZEROS[:piece] if piece < len(_ZEROS) else _ZEROS, crc)
        length -= piece
    return crc


def _libz_crc32combine_crcs() -> Callable[[int, int, int], int] | None:
    """Return libz's crc32_combine, which Python's zlib module does not expose, if loadable."""
    try:
        name = ctypes.util.find_library("z")
        if name is None:
            return None
        function = ctypes.CDLL(name).crc32_combine
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_ulong
    function.argtypes = (ctypes.c_ulong, ctypes.c_ulong, ctypes.c_long)
    return cast(Callable[[int, int, int], int], function)


# Read once at import: a pure function of the library, the same for every body.
LIBZ_CRC32_COMBINE = _libz_crc32combine_crcs()


def combine_crc(crc_a: int, crc_b: int, length_b: int, zeros_crc: dict[int, int]) -> int:
    """Return the CRC-32 of A+B from those of A and B, as zlib's crc32_combine does.

    Without libz at hand: the CRC is affine in its input, so crc(B, start=a) =
    crc(0^n, start=a) ^ crc(0^n) ^ crc(B), the zeros run through zlib.crc32 at C speed (a cost
    that grows with the length, where crc32_combine's does not); `zeros_crc` caches crc(0^n).
    """
    if length_b == 0:
        return crc_a
    plain = zeros_crc.get(length_b)
    if plain is None:
        plain = zeros_crc[length_b] = _crc_of_zeros(length_b, 0)
    return _crc_of_zeros(length_b, crc_a) ^ plain ^ crc_b


@dataclass(frozen=True, slots=True)
class Body:
    """Segments in order, as one deflate stream: their data (not joined), CRC and size."""

    parts: tuple[bytes, ...]
    crc: int
    size: int
    length: int = -1  # compressed; -1: summed from the parts when made

    def __post_init__(self) -> None:
        if self.length < 0:  # once, not per scrape
            object.__setattr__(self, "length", sum(len(part) for part in self.parts))


def gather(pieces: Iterable[Segment | Body]) -> Body:
    """Return segments and bodies in order as one body: CRC combined, sizes summed.

    The parts are the pieces' own bytes, not a copy: a body costs no memory beyond them.
    """
    parts: list[bytes] = []
    crc = size = 0
    for piece in pieces:
        if not piece.size:
            continue
        if isinstance(piece, Body):
            parts.extend(piece.parts)
        else:
            parts.append(piece.deflated)
        crc = combine_crcs(crc, piece.crc, piece.size) if size else piece.crc
        size += piece.size
    return Body(tuple(parts), crc, size)


def inflate(segment: Segment) -> bytes:
    """Return a segment's lines (for tests and the collectors' `collect`)."""
    if not segment.size:
        return b""
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(segment.deflated)


# Keys kept in order: named tuples of strings (image set keys, counter keys).
K = TypeVar("K", bound=tuple[str, ...])


def combine_crcs(crc_a: int, crc_b: int, length_b: int) -> int:
    """Return the CRC-32 of A+B from those of A and B and B's length."""
    if LIBZ_CRC32_COMBINE is not None:
        return LIBZ_CRC32_COMBINE(crc_a, crc_b, length_b)
    return combine_crc(crc_a, crc_b, length_b, {})


class CrcTree:
    """The CRC-32 and size of a run of segments, kept as a binary tree of partial sums.

    A publish changes a few segments of every column; the tree combines again only the nodes
    above them (O(changed · log n) combinations, not one per segment). Written here because
    zlib's crc32_combine joins two CRCs, and a column holds thousands of segments. Each level is
    two arrays of machine integers: at a million image sets a tree of tuples costs ~100 MB.
    """

    def __init__(self) -> None:
        self._crcs: list[array[int]] = [array("Q")]
        self._sizes: list[array[int]] = [array("Q")]

    def reset(self, leaves: list[tuple[int, int]]) -> None:
        """Build the tree over (crc, size) leaves."""
        self.reset_arrays(
            array("Q", (crc for crc, _ in leaves)), array("Q", (size for _, size in leaves))
        )

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
        positions = sorted(changes)
        pair = self._pair
        for level in range(1, len(self._crcs)):
            below_crcs, below_sizes = self._crcs[level - 1], self._sizes[level - 1]
            row_crcs, row_sizes = self._crcs[level], self._sizes[level]
            parents = sorted({p >> 1 for p in positions})
            for parent in parents:
                row_crcs[parent], row_sizes[parent] = pair(below_crcs, below_sizes, parent << 1)
            positions = parents

    def total(self) -> tuple[int, int]:
        """Return the (crc, size) of all leaves in order."""
        top_crcs, top_sizes = self._crcs[-1], self._sizes[-1]
        return (top_crcs[0], top_sizes[0]) if top_crcs else (0, 0)


class _Chunk(Generic[K]):
    # Per column, the segment's data, and its CRC and size in one array (crc0, size0, crc1, ...):
    # no Segment object per column, which at a million image sets is ~20 MB of object headers.
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

    def rebuild(self, format_chunk: Callable[[list[K]], Sequence[bytes]]) -> None:
        """Format and compress the dirty chunks; `format_chunk` returns one text per column.

        A column whose text came out as before (same CRC and size) keeps its segment: it is
        neither compressed again nor combined again into its column's CRC.
        """
        compressor: Compressor | None = None
        changed: list[dict[int, tuple[int, int]]] = [{} for _ in self._trees]
        for position, chunk in enumerate(self._chunks):
            if not chunk.dirty:
                continue
            if compressor is None:
                compressor = Compressor()
            old, sums = chunk.deflated, chunk.sums
            deflated: list[bytes] = []
            new_sums = array("Q")
            for index, text in enumerate(format_chunk(chunk.keys)):
                if old and sums[2 * index + 1] == len(text):
                    crc = zlib.crc32(text) if text else 0
                    if crc == sums[2 * index]:
                        deflated.append(old[index])
                        new_sums.extend((crc, len(text)))
                        continue
                segment = compressor.segment(text)
                deflated.append(segment.deflated)
                new_sums.extend((segment.crc, segment.size))
                changed[index][position] = (segment.crc, segment.size)
            chunk.deflated = tuple(deflated)
            chunk.sums = new_sums
            chunk.dirty = False
        for index, tree in enumerate(self._trees):
            if self._restructured:
                crcs = array("Q", (c.sums[2 * index] if c.deflated else 0 for c in self._chunks))
                sizes = array(
                    "Q", (c.sums[2 * index + 1] if c.deflated else 0 for c in self._chunks)
                )
                tree.reset_arrays(crcs, sizes)
                self._data[index] = [self._bytes(c, index) for c in self._chunks]
            elif changed[index]:
                tree.update(changed[index])
                data = self._data[index]
                for position in changed[index]:
                    data[position] = self._bytes(self._chunks[position], index)
        self._restructured = False

    @staticmethod
    def _bytes(chunk: _Chunk[K], index: int) -> bytes:
        return chunk.deflated[index] if chunk.deflated else b""

    @staticmethod
    def _leaf(chunk: _Chunk[K], index: int) -> tuple[int, int]:
        if not chunk.deflated:
            return 0, 0
        return chunk.sums[2 * index], chunk.sums[2 * index + 1]

    def column(self, index: int) -> list[Segment]:
        """Return one column's segments in key order (after `rebuild`)."""
        return [
            Segment(c.deflated[index], *self._leaf(c, index)) for c in self._chunks if c.deflated
        ]

    def column_body(self, index: int) -> Body:
        """Return one column as a body: its non-empty segments' data, CRC and size."""
        crc, size = self._trees[index].total()
        return Body(tuple(filter(None, self._data[index])), crc, size)
