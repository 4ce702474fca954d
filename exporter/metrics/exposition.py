"""Render a registry once into the bytes scrapes get: text and OpenMetrics, plain and gzip."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics_format

# Our names are all legacy-valid, so the output is plain 0.0.4, which every scraper understands.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = openmetrics_format.CONTENT_TYPE_LATEST


@dataclass(frozen=True, slots=True)
class Exposition:
    """One rendering of the metrics in both formats, each also gzipped."""

    text: bytes
    text_gzip: bytes
    openmetrics: bytes
    openmetrics_gzip: bytes

    def body(self, openmetrics: bool, gzipped: bool) -> bytes:
        """Return the bytes for the negotiated format and encoding."""
        if openmetrics:
            return self.openmetrics_gzip if gzipped else self.openmetrics
        return self.text_gzip if gzipped else self.text


def render(registry: CollectorRegistry) -> Exposition:
    """Render a registry into an Exposition."""
    text: bytes = text_format.generate_latest(registry)
    openmetrics: bytes = openmetrics_format.generate_latest(registry)  # type: ignore[no-untyped-call]
    # Level 5: most of level 9's ratio on repetitive exposition text, a fraction of the time.
    return Exposition(
        text=text,
        text_gzip=gzip.compress(text, compresslevel=5, mtime=0),
        openmetrics=openmetrics,
        openmetrics_gzip=gzip.compress(openmetrics, compresslevel=5, mtime=0),
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
