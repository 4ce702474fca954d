"""A background thread that runs the emulator's side effects (SQS sends, S3 writes) when due."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("exporter.emulator")


class Outbox:
    """Runs queued actions in due-time order on one thread it owns; `close()` stops and joins it.

    A queue of its own (rather than a timer per message) keeps the order of events that are
    due at the same moment and lets `flush()` tell tests when everything queued has been done.
    """

    def __init__(self, name: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        """Start the worker thread."""
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._running = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, delay: float, action: Callable[[], None]) -> None:
        """Run `action` on the worker thread `delay` seconds from now (after earlier ones)."""
        with self._cond:
            if self._closed:
                return
            due = self._monotonic() + max(0.0, delay)
            heapq.heappush(self._heap, (due, next(self._order), action))
            self._cond.notify_all()

    def pending(self) -> int:
        """Actions queued or running."""
        with self._cond:
            return len(self._heap) + self._running

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued action has run (delayed ones included); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread; actions not yet due are dropped. Safe to call twice."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._heap:
                        wait = self._heap[0][0] - self._monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(min(wait, 0.05))
                    else:
                        self._cond.wait(0.5)
                if self._closed:
                    return
                _, _, action = heapq.heappop(self._heap)
                self._running += 1
            try:
                action()
            except Exception as exc:  # an action's failure must never end the thread
                log.warning("emulator background action failed: %s: %s", type(exc).__name__, exc)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()
