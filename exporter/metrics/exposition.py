"""One poll's exposition: text and OpenMetrics, each built once and kept gzipped.

The process's own metrics (`process_*`, `python_*`) are rendered per scrape instead, as the
last lines: a cached rendering would show CPU and memory as of the last poll, a whole interval
old. The kept body is a raw deflate stream ended by a sync flush, so a scrape appends the fresh
lines as a few more deflate blocks and one gzip trailer (the CRC-32 continues from the kept
part's): no recompression of the fleet, and one gzip member, which every client decodes.
"""

from __future__ import annotations

import errno
import itertools
import logging
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics_format
from zlib_ng import zlib_ng

from exporter.metrics.collectors import IMAGE_SET_FAMILIES, FleetCollector
from exporter.metrics.families import chunks
from exporter.metrics.kept import KeptImageSetLines
from exporter.metrics.segments import (
    GZIP_LEVEL,
    Body,
    Compressor,
    Segment,
    combine_crcs,
    gather,
)
from exporter.metrics.view import FleetView
from exporter.store import StoredBody, StoreError

log = logging.getLogger(__name__)

# Our names are all legacy-valid, so the output is plain 0.0.4, which every scraper understands.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = openmetrics_format.CONTENT_TYPE_LATEST
EOF_LINE = b"# EOF\n"
GZIP_WBITS = 16 + zlib_ng.MAX_WBITS  # a gzip container, as gzip.compress writes
RAW_WBITS = -zlib_ng.MAX_WBITS  # a bare deflate stream, wrapped in a gzip header and trailer here
# RFC 1952: magic, deflate, no flags, no time, no extra flags, unknown OS.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


PROMETHEUS_DEFAULT = frozenset({True})  # Prometheus asks for OpenMetrics
STREAM_PIECE = 64 * 1024
JOIN_LIMIT = 32 * 1024 * 1024  # bodies up to this are also kept joined (see Exposition._get)


class Exposition:
    """A poll's metrics, kept gzipped; plain requests are decompressed as they are sent."""

    def __init__(
        self,
        own_text: bytes,
        own_openmetrics: bytes,
        view: FleetView,
        collectors: Sequence[FleetCollector],
        live: CollectorRegistry | None = None,
        kept: KeptImageSetLines | None = None,
        restored: Mapping[bool, Restored] | None = None,
    ) -> None:
        self._own_text = own_text
        self._own_openmetrics = own_openmetrics.removesuffix(EOF_LINE)
        # With kept lines, the image sets' facts are the kept lines' business: holding them
        # here too would keep a cycle-old copy of them alive as long as this exposition.
        self._view = (
            view
            if kept is None
            else replace(view, image_sets=MappingProxyType({}), own_counters=MappingProxyType({}))
        )
        self._collectors = collectors
        self._live = live
        self._kept_lines = kept  # the per-image-set families, kept between publishes
        self._lock = threading.Lock()
        # Only gzip bodies are kept: at 100,000 image sets a plain body is ~100 MB, its gzip ~12.
        self._kept: dict[bool, Body] = {}
        # The fleet's lines without the own metrics, per built format (what a stop saves).
        self._fleet: dict[bool, Body] = {}
        self._restored = dict(restored or {})
        self._prepared: frozenset[bool] = frozenset()
        self._served: set[bool] = set()

    def gzipped_parts(self, openmetrics: bool) -> tuple[int, Iterable[bytes]]:
        """Return a scrape's gzipped body: its length, and its pieces to send one by one."""
        with self._lock:
            self._served.add(openmetrics)
        return self._parts(openmetrics)

    def _parts(self, openmetrics: bool) -> tuple[int, Iterable[bytes]]:
        length, crc, size, pieces = self._body(openmetrics)
        tail = self._tail(openmetrics)
        compressor = zlib_ng.compressobj(GZIP_LEVEL, zlib_ng.DEFLATED, RAW_WBITS)
        last = compressor.compress(tail) + compressor.flush()
        crc = zlib_ng.crc32(tail, crc)
        size = (size + len(tail)) & 0xFFFFFFFF
        trailer = last + struct.pack("<II", crc, size)
        total = len(GZIP_HEADER) + length + len(trailer)
        return total, itertools.chain((GZIP_HEADER,), pieces, (trailer,))

    def _body(self, openmetrics: bool) -> tuple[int, int, int, Iterable[bytes]]:
        """Return (compressed length, CRC, size, pieces) of the body without the live lines."""
        with self._lock:
            kept = self._kept.get(openmetrics)
            restored = self._restored.get(openmetrics) if kept is None else None
        if restored is None:
            kept = self._joined(openmetrics)
            return kept.length, kept.crc, kept.size, kept.parts
        # Saved by the last process at a stop, for this state: read from the file as it goes out.
        own = Compressor().segment(self._own_openmetrics if openmetrics else self._own_text)
        stored = restored.body
        crc = combine_crcs(own.crc, stored.crc, stored.size)
        pieces = itertools.chain((own.deflated,), self._read_saved(openmetrics, restored))
        return len(own.deflated) + stored.length, crc, own.size + stored.size, pieces

    def _read_saved(self, openmetrics: bool, restored: Restored) -> Iterator[bytes]:
        """Yield the saved body; if the file fails under it, say so once and stop serving it.

        The response is already under way and is cut short, as by an I/O error (the client
        sees an incomplete body, never a wrong one); the next scrape formats the fleet instead.
        """
        try:
            yield from restored.read()
        except StoreError as exc:
            with self._lock:
                dropped = self._restored.pop(openmetrics, None) is not None
            if dropped:
                log.error("the saved exposition cannot be read (%s); formatting the fleet", exc)
            raise OSError(errno.EIO, str(exc)) from exc

    def gzipped(self, openmetrics: bool) -> bytes:
        """Return a scrape's body in the negotiated format, gzipped."""
        return b"".join(self.gzipped_parts(openmetrics)[1])

    @property
    def generation(self) -> int:
        """Return the snapshot store's generation the fleet view showed."""
        return self._view.generation

    def fleet(self, openmetrics: bool) -> Body | None:
        """Return a built format's fleet lines (all but the own metrics and live lines)."""
        with self._lock:
            return self._fleet.get(openmetrics)

    def plain_parts(self, openmetrics: bool) -> tuple[int, Iterator[bytes]]:
        """Return a scrape's body uncompressed: its length, and its pieces, inflated as sent.

        The length is known before anything is inflated (the kept size and the live lines), so
        a client can read the body into one buffer instead of decoding chunks.
        """
        with self._lock:
            self._served.add(openmetrics)
        size, pieces = self._body(openmetrics)[2:]
        tail = self._tail(openmetrics)
        return size + len(tail), _inflated(pieces, tail)

    def _tail(self, openmetrics: bool) -> bytes:
        """The lines rendered per scrape: the process's own metrics, then OpenMetrics' end."""
        if self._live is None:
            return EOF_LINE if openmetrics else b""
        if openmetrics:
            live: bytes = openmetrics_format.generate_latest(self._live)  # type: ignore[no-untyped-call]
            return live  # it ends with "# EOF"
        return bytes(text_format.generate_latest(self._live))

    def _get(self, openmetrics: bool) -> Body:
        with self._lock:  # concurrent first scrapes wait for one build instead of racing
            kept = self._kept.get(openmetrics)
            if kept is None:
                kept = self._build(openmetrics)
                self._kept[openmetrics] = kept
            return kept

    def _joined(self, openmetrics: bool) -> Body:
        """Return a format's body for a scrape: joined into one buffer the first time, if small.

        Tens of thousands of small segments cost a scrape ~10x more to send (and inflate) than
        one buffer; up to JOIN_LIMIT a joined copy is worth its memory. `prepare` joins the
        formats scrapers ask for in the poll's thread (a copy, ~3 ms at 100,000 image sets),
        so that their first scrape after a poll only sends.
        """
        kept = self._get(openmetrics)
        if len(kept.parts) <= 1 or kept.length > JOIN_LIMIT:
            return kept
        with self._lock:
            kept = self._kept[openmetrics]
            if len(kept.parts) > 1:
                kept = Body((b"".join(kept.parts),), kept.crc, kept.size, kept.length)
                self._kept[openmetrics] = kept
            return kept

    def _build(self, openmetrics: bool) -> Body:
        # Compressed as it is formatted: the plain body never exists in memory whole. The
        # per-image-set families come compressed already, formatted again only where changed.
        compressor = Compressor()
        pieces: list[Segment | Body] = [
            compressor.segment(self._own_openmetrics if openmetrics else self._own_text)
        ]
        if self._kept_lines is not None:
            for family, column in zip(IMAGE_SET_FAMILIES, self._kept_lines.columns(), strict=True):
                header = family.openmetrics_header() if openmetrics else family.text_header()
                pieces.append(compressor.segment(header.encode()))
                pieces.append(column)
        for collector in self._collectors:
            pieces.append(
                compressor.segments_of(chunks(collector.collect(self._view), openmetrics))
            )
        self._fleet[openmetrics] = gather(pieces[1:])
        return gather(pieces)

    def prepare(self, formats: Iterable[bool]) -> None:
        """Build formats now (in the poll's thread), so that scrapes only read bytes."""
        self._prepared = frozenset(formats)
        for openmetrics in self._prepared:
            self._joined(openmetrics)

    def built(self) -> frozenset[bool]:
        """Return the formats whose body exists already."""
        with self._lock:
            return frozenset(self._kept)

    def expect(self, formats: Iterable[bool]) -> None:
        """Note the formats scrapers will likely ask for, without building them yet."""
        self._prepared = frozenset(formats)

    def wanted(self) -> frozenset[bool]:
        """Return the formats scrapers asked for; if none came, those prepared for them."""
        with self._lock:
            return frozenset(self._served) or self._prepared

    @property
    def text(self) -> bytes:
        """Return the whole Prometheus text format (for --once and tests; not a scrape)."""
        return zlib_ng.decompress(b"".join(self._parts(False)[1]), GZIP_WBITS)

    @property
    def openmetrics(self) -> bytes:
        """Return the whole OpenMetrics body (not a scrape)."""
        return zlib_ng.decompress(b"".join(self._parts(True)[1]), GZIP_WBITS)


@dataclass(frozen=True, slots=True)
class Restored:
    """A format's fleet lines as the last process saved them at its stop, read as sent."""

    body: StoredBody
    read: Callable[[], Iterable[bytes]]


def _inflated(pieces: Iterable[bytes], tail: bytes) -> Iterator[bytes]:
    decompressor = zlib_ng.decompressobj(RAW_WBITS)
    for block in coalesce(pieces):
        yield decompressor.decompress(block)
    yield decompressor.flush()
    yield tail


def coalesce(parts: Iterable[bytes], size: int = STREAM_PIECE) -> Iterator[bytes | memoryview]:
    """Join small parts and cut large ones into blocks of about `size` bytes.

    A write or a decompress each: a block inflates to ~8x its size, so whole bodies are cut
    (one 100 MB inflated piece would be held at once, and nothing sent until it is done).
    """
    batch: list[bytes] = []
    held = 0
    for part in parts:
        if len(part) > size:
            if batch:
                yield b"".join(batch)
                batch, held = [], 0
            whole = memoryview(part)
            for start in range(0, len(part), size):
                yield whole[start : start + size]
            continue
        batch.append(part)
        held += len(part)
        if held >= size:
            yield b"".join(batch)
            batch, held = [], 0
    if batch:
        yield b"".join(batch)


def render(
    registry: CollectorRegistry,
    view: FleetView | None = None,
    collectors: Sequence[FleetCollector] = (),
    live: CollectorRegistry | None = None,
    kept: KeptImageSetLines | None = None,
    restored: Mapping[bool, Restored] | None = None,
) -> Exposition:
    """Snapshot the registry now and the fleet view as given, to be formatted on demand.

    `live` is collected again for every scrape (the process's own metrics); `kept`, if given,
    holds the per-image-set families, brought up to the view it last noted when built;
    `restored` serves formats as a stopped process saved them until they are built.
    """
    own_text: bytes = text_format.generate_latest(registry)
    own_openmetrics: bytes = openmetrics_format.generate_latest(registry)  # type: ignore[no-untyped-call]
    return Exposition(
        own_text, own_openmetrics, view or FleetView(), collectors, live, kept, restored
    )


class ExpositionCache:
    """Holds the latest rendering; a scrape reads it, a poll replaces it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Exposition | None = None

    def publish(self, exposition: Exposition) -> None:
        """Replace the served rendering."""
        with self._lock:
            self._current = exposition

    def current(self) -> Exposition | None:
        """Return the latest rendering, or None before the first."""
        with self._lock:
            return self._current
