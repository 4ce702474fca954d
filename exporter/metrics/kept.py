"""The per-image-set families, kept compressed between publishes: a publish formats what changed.

Image sets are kept in id order, cut into small chunks (exporter.metrics.segments.SortedChunks);
each chunk holds, per family, its lines compressed on their own. A view names the image sets
whose lines changed since the view before it (FleetState.take_changes); only their chunks are
formatted and compressed again. A change of what every line depends on (a data store's mode,
the reasons a data store's info series may carry), or of the fleet's size past what its chunks
were cut for, formats everything again.

Views are noted as they are published and applied when an exposition is built: a view that is
never built (start-up publishes unbuilt, a scrape or the first poll builds) passes its changes
on to the next one, so start-up formats the fleet once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from exporter.metrics.collectors import (
    IMAGE_SET_FAMILIES,
    SHOWN,
    has_lines,
    image_set_keys,
    image_set_lines,
    info_reasons,
)
from exporter.metrics.segments import Body, Row, SortedChunks
from exporter.metrics.view import FleetView
from exporter.model import ImageSetKey

# Image sets per chunk. Changes land at random, so a publish formats and compresses again about
# one chunk per changed image set; each segment, on the other hand, is a deflate block that every
# reader of the body inflates (a table build each: docs/performance.md) and compresses worse
# than a longer one. So chunks are as large as keeps a publish after 1 % of the shown image sets
# changed formatting as many image sets as one at 100,000 with chunks of 16 (which meets the
# 0.2 s target), between 16 and 64: 64 up to 25,000 shown, 16 from 100,000.
CHUNK = 16
LARGEST_CHUNK = 64
_FORMATTED = 100_000 * CHUNK  # shown image sets times image sets per chunk


def chunk_size(shown: int) -> int:
    """Return the image sets per chunk for a fleet showing `shown` image sets."""
    return max(CHUNK, min(LARGEST_CHUNK, _FORMATTED // max(shown, 1)))


@dataclass(frozen=True, slots=True)
class _Part:
    """Families IMAGE_SET_FAMILIES[start:stop], kept as chunks of the image sets they show."""

    start: int
    stop: int
    chunks: SortedChunks[ImageSetKey]

    def has_lines(self, view: FleetView, key: ImageSetKey) -> bool:
        return has_lines(view, key, self.start, self.stop)

    def format_rows(
        self, view: FleetView, reasons: dict[str, frozenset[str]]
    ) -> Callable[[list[ImageSetKey]], list[Row]]:
        start, stop = self.start, self.stop
        return lambda keys: [image_set_lines(view, key, reasons, start, stop) for key in keys]


def _part(start: int, stop: int, keys: list[ImageSetKey], size: int) -> _Part:
    chunks: SortedChunks[ImageSetKey] = SortedChunks(stop - start, size)
    chunks.reset(keys)
    return _Part(start, stop, chunks)


class KeptImageSetLines:
    """Per-image-set lines kept as compressed chunks; `columns` brings them up to the last view.

    The families only some image sets have (failures, forced, in progress) are kept apart, in
    chunks of the image sets that have them, when fewer than half of those shown do: in chunks
    of all, most of their segments would hold one line or none, and a segment of a line or
    two compresses to a third of its size at best (deflate's tables alone cost about that).
    Decided whenever every image set is cut into chunks again (start-up, a change of mode).
    """

    def __init__(self, sizing: Callable[[int], int] = chunk_size) -> None:
        self._lock = threading.Lock()
        self._sizing = sizing  # image sets per chunk for a number shown
        self._size = 0  # as of the last cut
        self._parts: tuple[_Part, ...] = ()
        # The last noted view, until it is built: then let go, so that its image sets' facts
        # (the state's, lent until its next change) are not held a cycle longer.
        self._view: FleetView | None = None
        self._pending: set[ImageSetKey] | None = None  # None: format everything
        self._depends: object = None  # what every line depends on, as of the last build
        self._built = tuple(Body((), 0, 0) for _ in IMAGE_SET_FAMILIES)

    @property
    def chunk(self) -> int:
        """Return the image sets per chunk the fleet was last cut into (0: not yet)."""
        with self._lock:
            return self._size

    @property
    def parts(self) -> int:
        """Return in how many parts the families are kept (1, or 2 with failures apart)."""
        with self._lock:
            return len(self._parts)

    def note(self, view: FleetView) -> None:
        """Take a view as it is published; its changes are formatted by the next `columns`."""
        with self._lock:
            self._view = view
            if view.changed is None:
                self._pending = None
            elif self._pending is not None:
                self._pending.update(view.changed)

    def _reset(self, view: FleetView) -> None:
        """Cut every image set shown into chunks again, in one part or two."""
        shown = [k for k in image_set_keys(view) if has_lines(view, k)]
        some = [k for k in shown if has_lines(view, k, SHOWN)]
        every = len(IMAGE_SET_FAMILIES)
        # One size for both parts: changes to the image sets with failures land in both.
        size = self._size = self._sizing(len(shown))
        if 2 * len(some) > len(shown):
            self._parts = (_part(0, every, shown, size),)
            return
        self._parts = (
            _part(0, SHOWN, [k for k in shown if has_lines(view, k, 0, SHOWN)], size),
            _part(SHOWN, every, some, size),
        )

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
                self._reset(view)
            else:
                for part in self._parts:
                    for key in self._pending:
                        if part.has_lines(view, key):
                            part.chunks.add(key)
                        else:
                            part.chunks.remove(key)
                # A fleet that grew (a backfill) or shrank past twice or half the size its
                # chunks were cut for is cut again: one full format, for publishes that cost
                # what the fleet's size allows from then on. The first part holds every image
                # set the mode shows (a cut always makes one).
                wanted = self._sizing(len(self._parts[0].chunks))
                if not self._size // 2 < wanted < 2 * self._size:
                    self._reset(view)
            self._pending = set()
            self._depends = depends
            built: list[Body] = []
            for part in self._parts:
                part.chunks.rebuild(part.format_rows(view, reasons))
                built += (part.chunks.column_body(i) for i in range(part.stop - part.start))
            self._built = tuple(built)
            self._view = None
            return self._built
