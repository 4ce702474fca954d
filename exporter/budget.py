"""A client-side request budget per operation, shared by all workers, slowed by throttles."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    configured: float  # requests per second this process may use
    rate: float  # current rate: lowered by throttles, recovering towards `configured`
    tokens: float
    last: float


class RateBudget:
    """Token buckets per operation: callers reserve a slot and sleep until it comes."""

    # After a throttle the rate halves; each success wins back a little, so a shared quota
    # that others also use settles just under what AWS accepts (additive increase,
    # multiplicative decrease).
    DECREASE = 0.5
    FLOOR = 0.1
    RECOVERY = 0.02

    def __init__(
        self,
        rates: Mapping[str, float],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        now = clock()
        self._buckets = {
            op: _Bucket(configured=rate, rate=rate, tokens=min(rate, 1.0), last=now)
            for op, rate in rates.items()
        }
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self, operation: str) -> float:
        """Wait for the operation's next slot; return the seconds waited."""
        bucket = self._buckets.get(operation)
        if bucket is None:
            return 0.0
        with self._lock:
            now = self._clock()
            # A burst of at most one second's worth keeps us under a per-second quota.
            burst = max(1.0, bucket.rate)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.last) * bucket.rate)
            bucket.last = now
            bucket.tokens -= 1.0
            wait = 0.0 if bucket.tokens >= 0 else -bucket.tokens / bucket.rate
        if wait > 0:
            self._sleep(wait)
        return wait

    def record(self, operation: str, throttled: bool) -> None:
        """Adapt the rate to an attempt's outcome."""
        bucket = self._buckets.get(operation)
        if bucket is None:
            return
        with self._lock:
            if throttled:
                bucket.rate = max(bucket.configured * self.FLOOR, bucket.rate * self.DECREASE)
                bucket.tokens = min(bucket.tokens, 0.0)
            elif bucket.rate < bucket.configured:
                bucket.rate = min(
                    bucket.configured, bucket.rate + bucket.configured * self.RECOVERY
                )

    def rates(self) -> dict[str, float]:
        """Return the current rate of each operation."""
        with self._lock:
            return {op: b.rate for op, b in self._buckets.items()}

    def configured(self) -> dict[str, float]:
        """Return the configured rate of each operation."""
        return {op: b.configured for op, b in self._buckets.items()}
