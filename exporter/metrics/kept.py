"""The per-image-set families, kept compressed between publishes: a publish formats what changed.

Image sets are kept in id order, cut into small chunks (exporter.metrics.segments.SortedChunks);
each chunk holds, per family, its lines compressed on their own. A view names the image sets
whose lines changed since the view before it (FleetState.take_changes); only their chunks are
formatted and compressed again. A change of what every line depends on (a data store's mode,
the reasons a data store's info series may carry) formats everything again.

Views are noted as they are published and applied when an exposition is built: a view that is
never built (start-up publishes unbuilt, a scrape or the first poll builds) passes its changes
on to the next one, so start-up formats the fleet once.
"""

from __future__ import annotations

import threading

from exporter.metrics.collectors import (
    IMAGE_SET_FAMILIES,
    has_lines,
    image_set_keys,
    image_set_lines,
    info_reasons,
)
from exporter.metrics.segments import Body, Row, SortedChunks
from exporter.metrics.view import FleetView
from exporter.model import ImageSetKey

# Image sets per chunk. Changes land at random, so with 1 % of image sets changed a chunk of n
# is formatted again with probability ~n %; each segment also costs a fixed overhead (a full
# flush, a CRC combination, ~150 bytes of memory, a worse compression ratio). Small chunks while
# few image sets are shown; larger ones past LARGE, where memory is what runs out first
# (measured in docs/performance.md: publish, memory).
SMALL_CHUNK = 8
LARGE_CHUNK = 16
LARGE = 150_000


def chunk_size(shown: int) -> int:
    """Return the image sets per chunk for a fleet showing `shown` image sets."""
    return SMALL_CHUNK if shown <= LARGE else LARGE_CHUNK


class KeptImageSetLines:
    """Per-image-set lines kept as compressed chunks; `columns` brings them up to the last view."""

    def __init__(self, size: int | None = None) -> None:
        self._lock = threading.Lock()
        self._size = size  # None: chosen from how many image sets are shown (chunk_size)
        self._chunks: SortedChunks[ImageSetKey] = SortedChunks(
            len(IMAGE_SET_FAMILIES), size or SMALL_CHUNK
        )
        # The last noted view, until it is built: then let go, so that its image sets' facts
        # (the state's, lent until its next change) are not held a cycle longer.
        self._view: FleetView | None = None
        self._pending: set[ImageSetKey] | None = None  # None: format everything
        self._depends: object = None  # what every line depends on, as of the last build
        self._built = tuple(Body((), 0, 0) for _ in IMAGE_SET_FAMILIES)

    def note(self, view: FleetView) -> None:
        """Take a view as it is published; its changes are formatted by the next `columns`."""
        with self._lock:
            self._view = view
            if view.changed is None:
                self._pending = None
            elif self._pending is not None:
                self._pending.update(view.changed)

    def columns(self) -> tuple[Body, ...]:
        """Return, per family of IMAGE_SET_FAMILIES, its lines as of the last noted view."""
        with self._lock:
            view = self._view
            if view is None:
                return self._built  # nothing noted since the last build
            reasons = info_reasons(view)
            depends = (
                tuple(sorted((ds, d.per_image_set) for ds, d in view.datastores.items())),
                tuple(sorted(reasons.items())),
            )
            if self._pending is None or depends != self._depends:
                shown = [k for k in image_set_keys(view) if has_lines(view, k)]
                self._chunks.reset(shown, self._size or chunk_size(len(shown)))
            else:
                for key in self._pending:
                    if has_lines(view, key):
                        self._chunks.add(key)
                    else:
                        self._chunks.remove(key)
            self._pending = set()
            self._depends = depends

            def format_rows(keys: list[ImageSetKey]) -> list[Row]:
                return [image_set_lines(view, key, reasons) for key in keys]

            self._chunks.rebuild(format_rows)
            self._built = tuple(self._chunks.column_body(i) for i in range(len(IMAGE_SET_FAMILIES)))
            self._view = None
            return self._built
