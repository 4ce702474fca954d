"""One poll's exposition: text and OpenMetrics, plain and gzip, each built once on first request."""

from __future__ import annotations

import gzip
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


Variant = tuple[bool, bool]  # (OpenMetrics, gzip)
PROMETHEUS_DEFAULT: frozenset[Variant] = frozenset({(True, True)})


class Exposition:
    """A poll's metrics; a scrape is served bytes built at most once per format and encoding."""

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
        # Only what is asked for is kept: at 100,000 image sets a plain body is ~100 MB.
        self._bodies: dict[Variant, bytes] = {}
        self._prepared: frozenset[Variant] = frozenset()
        self._served: set[Variant] = set()

    def body(self, openmetrics: bool, gzipped: bool) -> bytes:
        """Return the bytes for a scrape's negotiated format and encoding."""
        with self._lock:
            self._served.add((openmetrics, gzipped))
        return self._get(openmetrics, gzipped)

    def _get(self, openmetrics: bool, gzipped: bool) -> bytes:
        key = (openmetrics, gzipped)
        with self._lock:  # concurrent first scrapes wait for one build instead of racing
            body = self._bodies.get(key)
            if body is None:
                body = self._build(openmetrics, gzipped)
                self._bodies[key] = body
            return body

    def prepare(self, variants: Iterable[Variant]) -> None:
        """Build variants now (in the poll's thread), so that scrapes only read bytes."""
        self._prepared = frozenset(variants)
        for openmetrics, gzipped in self._prepared:
            self._get(openmetrics, gzipped)

    def wanted(self) -> frozenset[Variant]:
        """Return what scrapers asked for; if none came, what was prepared for them."""
        with self._lock:
            return frozenset(self._served) or self._prepared

    def _build(self, openmetrics: bool, gzipped: bool) -> bytes:
        plain = self._bodies.get((openmetrics, False))
        if plain is not None:
            return gzip.compress(plain, GZIP_LEVEL, mtime=0) if gzipped else plain
        parts = self._chunks(openmetrics)
        if not gzipped:
            return b"".join(parts)
        # Compressed as it is formatted: the ~100 MB plain body of 100,000 image sets never
        # exists in memory when only the gzip is wanted, which is what Prometheus asks for.
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
        out = [compressor.compress(part) for part in parts]
        out.append(compressor.flush())
        return b"".join(out)

    def _chunks(self, openmetrics: bool) -> Iterator[bytes]:
        # The sample lines are the same in both formats; only metadata lines differ.
        yield self._own_openmetrics if openmetrics else self._own_text
        for collector in self._collectors:
            yield from chunks(collector.collect(self._view), openmetrics)
        if openmetrics:
            yield EOF_LINE

    @property
    def text(self) -> bytes:
        """Return the Prometheus text format (for --once and tests; not a scrape)."""
        return self._get(False, False)

    @property
    def openmetrics(self) -> bytes:
        """Return OpenMetrics (not a scrape)."""
        return self._get(True, False)


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
