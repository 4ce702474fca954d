"""One poll's exposition: text and OpenMetrics, each built once and kept gzipped."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics_format

from exporter.metrics.collectors import FleetCollector
from exporter.metrics.families import chunks
from exporter.metrics.view import FleetView

# Our names are all legacy-valid, so the output is plain 0.0.4, which every scraper understands.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = openmetrics_format.CONTENT_TYPE_LATEST
EOF_LINE = b"# EOF\n"
# Fast compression: the exposition is large and repetitive, so level 1 already shrinks it
# about twentyfold, at a fraction of the default level's time.
GZIP_LEVEL = 1
GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip container, as gzip.compress writes


PROMETHEUS_DEFAULT = frozenset({True})  # Prometheus asks for OpenMetrics
STREAM_PIECE = 64 * 1024


class Exposition:
    """A poll's metrics, kept gzipped; plain requests are decompressed as they are sent."""

    def __init__(
        self,
        own_text: bytes,
        own_openmetrics: bytes,
        view: FleetView,
        collectors: Sequence[FleetCollector],
    ) -> None:
        self._own_text = own_text
        self._own_openmetrics = own_openmetrics.removesuffix(EOF_LINE)
        self._view = view
        self._collectors = collectors
        self._lock = threading.Lock()
        # Only gzip bodies are kept: at 100,000 image sets a plain body is ~100 MB, its gzip ~12.
        self._gzipped: dict[bool, bytes] = {}
        self._prepared: frozenset[bool] = frozenset()
        self._served: set[bool] = set()

    def gzipped(self, openmetrics: bool) -> bytes:
        """Return a scrape's body in the negotiated format, gzipped."""
        with self._lock:
            self._served.add(openmetrics)
        return self._get(openmetrics)

    def stream(self, openmetrics: bool) -> Iterator[bytes]:
        """Yield a scrape's body in the negotiated format, uncompressed, piece by piece."""
        body = self.gzipped(openmetrics)
        decompressor = zlib.decompressobj(GZIP_WBITS)
        for start in range(0, len(body), STREAM_PIECE):
            yield decompressor.decompress(body[start : start + STREAM_PIECE])
        yield decompressor.flush()

    def _get(self, openmetrics: bool) -> bytes:
        with self._lock:  # concurrent first scrapes wait for one build instead of racing
            body = self._gzipped.get(openmetrics)
            if body is None:
                body = self._build(openmetrics)
                self._gzipped[openmetrics] = body
            return body

    def _build(self, openmetrics: bool) -> bytes:
        # Compressed as it is formatted: the plain body never exists in memory whole.
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
        out = [compressor.compress(part) for part in self._chunks(openmetrics)]
        out.append(compressor.flush())
        return b"".join(out)

    def _chunks(self, openmetrics: bool) -> Iterator[bytes]:
        # The sample lines are the same in both formats; only metadata lines differ.
        yield self._own_openmetrics if openmetrics else self._own_text
        for collector in self._collectors:
            yield from chunks(collector.collect(self._view), openmetrics)
        if openmetrics:
            yield EOF_LINE

    def prepare(self, formats: Iterable[bool]) -> None:
        """Build formats now (in the poll's thread), so that scrapes only read bytes."""
        self._prepared = frozenset(formats)
        for openmetrics in self._prepared:
            self._get(openmetrics)

    def wanted(self) -> frozenset[bool]:
        """Return the formats scrapers asked for; if none came, those prepared for them."""
        with self._lock:
            return frozenset(self._served) or self._prepared

    @property
    def text(self) -> bytes:
        """Return the whole Prometheus text format (for --once and tests; not a scrape)."""
        return zlib.decompress(self._get(False), GZIP_WBITS)

    @property
    def openmetrics(self) -> bytes:
        """Return the whole OpenMetrics body (not a scrape)."""
        return zlib.decompress(self._get(True), GZIP_WBITS)


def render(
    registry: CollectorRegistry,
    view: FleetView | None = None,
    collectors: Sequence[FleetCollector] = (),
) -> Exposition:
    """Snapshot the registry now and the fleet view as given, to be formatted on demand."""
    own_text: bytes = text_format.generate_latest(registry)
    own_openmetrics: bytes = openmetrics_format.generate_latest(registry)  # type: ignore[no-untyped-call]
    return Exposition(own_text, own_openmetrics, view or FleetView(), collectors)


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
