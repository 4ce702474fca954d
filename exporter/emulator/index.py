"""A sorted (timestamp, imageSetId) index so time-range search bisects instead of scanning."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

Key = tuple[float, str]

# Image set ids are [0-9a-z]; these bracket every id, so (t, LOW)..(t, HIGH) spans all keys at t.
_LOW_ID = ""
_HIGH_ID = "\U0010ffff"


class SortedIndex:
    """Keys kept sorted in a plain list: O(log n) seek, cheap bulk load, memmove on update."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        """Start empty."""
        self._keys: list[Key] = []

    def __len__(self) -> int:
        """How many keys the index holds."""
        return len(self._keys)

    def add(self, key: Key) -> None:
        """Insert one key in order."""
        bisect.insort(self._keys, key)

    def extend(self, keys: Iterable[Key]) -> None:
        """Insert many keys at once; one sort beats many inserts for bulk loads."""
        self._keys.extend(keys)
        self._keys.sort()

    def remove(self, key: Key) -> None:
        """Remove one key, which must be present."""
        i = bisect.bisect_left(self._keys, key)
        if i >= len(self._keys) or self._keys[i] != key:
            raise KeyError(key)
        del self._keys[i]

    def walk(
        self,
        low: float | None,
        high: float | None,
        *,
        descending: bool,
        after: Key | None = None,
    ) -> Iterator[Key]:
        """Keys with low <= time <= high in order, starting strictly past the cursor `after`."""
        keys = self._keys
        start = 0 if low is None else bisect.bisect_left(keys, (low, _LOW_ID))
        stop = len(keys) if high is None else bisect.bisect_right(keys, (high, _HIGH_ID))
        if after is not None:
            if descending:
                stop = min(stop, bisect.bisect_left(keys, after))
            else:
                start = max(start, bisect.bisect_right(keys, after))
        if descending:
            for i in range(stop - 1, start - 1, -1):
                yield keys[i]
        else:
            for i in range(start, stop):
                yield keys[i]
