"""A client-side request budget per operation, shared by all workers, slowed by throttles.

Why our own and not botocore's adaptive retry mode: its rate limiter is per client, while the
quota is per account and operation and shared by every worker thread's client; and it cuts
on every throttle, while a congestion episode throttles several attempts already in flight.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    configured: float  # requests per second this process may use: never exceeded
    # The last slot handed out: the next is 1/rate after it, at the rate of that moment, so
    # workers never send two at once; idle time lets slots lag up to a second's worth
    # behind the clock, a burst that a per-second quota also allows.
    last_slot: float
    # The last congestion episode: when it cut the rate (-inf: never), the rate it cut to,
    # and the rate the recovery heads for (CUBIC's W_max: the quota as last measured).
    cut_at: float = -math.inf
    cut_to: float = math.inf
    target: float = math.inf
    measured: bool = False  # whether `target` was measured over a whole recovery
    # The last slot handed out before the cut: throttles of attempts sent until then
    # answer the rate the cut already lowered, so they belong to its episode.
    episode_end: float = -math.inf
    admitted: int = 0  # attempts not throttled since the last cut


class RateBudget:
    """Paced slots per operation: callers reserve the next slot and sleep until it comes.

    Congestion control as TCP CUBIC does it, in requests per second instead of a window.
    A throttle halves the rate once per congestion episode: throttles of attempts sent
    before the cut are the same episode (TCP's once per window). The rate then grows back
    with time, not per success: along a cubic curve, quickly at first, flattening as it
    nears the target. The target is the quota measured between two throttles: the quota's
    burst allowance went from empty to empty, so what it admitted meanwhile is what it
    allows. Past the target the rate probes upwards slowly (10 % over it after 40 s, more
    later), so the rate sits at the quota and meets it again about once a minute, with one
    or two throttles each time; a quota that grows is found within a minute or two.
    """

    DECREASE = 0.5  # the share of the rate kept after a throttle
    FLOOR = 0.1  # never below this share of the configured rate
    RECOVERY_SECONDS = 8.0  # from a cut back up to the target
    # Probing above a measured target: PROBE_GAIN over it after PROBE_SECONDS (cubic).
    PROBE_SECONDS = 40.0
    PROBE_GAIN = 0.1
    # After a slow probe, the throttled rate overshoots the quota by about PROBE_GAIN, so
    # at least this share of it is the quota.
    MEASURED_SHARE = 0.9

    def __init__(
        self,
        rates: Mapping[str, float],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        now = clock()
        self._buckets = {
            op: _Bucket(configured=rate, last_slot=now - 1.0 / rate) for op, rate in rates.items()
        }
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        # When this thread's last attempt per operation was sent: botocore sends an attempt
        # and reads its answer on the thread that waited for the slot, so record() finds it.
        self._sent = threading.local()

    def _curve(self, bucket: _Bucket, now: float) -> tuple[float, bool]:
        """Return the rate at `now` and whether it has grown back to the target."""
        if bucket.cut_at == -math.inf:
            return bucket.configured, True
        target = bucket.target
        # The curve's scale follows the target; k is when it is back there (sooner when
        # the floor cut less than DECREASE).
        scale = target * (1.0 - self.DECREASE) / self.RECOVERY_SECONDS**3
        k = ((target - bucket.cut_to) / scale) ** (1.0 / 3.0)
        since = now - bucket.cut_at - k
        if since < 0:
            rate = target - (target - bucket.cut_to) * (-since / k) ** 3
        elif not bucket.measured:
            rate = target + scale * since**3  # past a target that was a guess, as CUBIC does
        else:
            rate = target * (1.0 + self.PROBE_GAIN * (since / self.PROBE_SECONDS) ** 3)
        return max(bucket.configured * self.FLOOR, min(bucket.configured, rate)), since >= 0

    def acquire(self, operation: str) -> float:
        """Wait for the operation's next slot; return the seconds waited."""
        bucket = self._buckets.get(operation)
        if bucket is None:
            return 0.0
        with self._lock:
            now = self._clock()
            rate = self._curve(bucket, now)[0]
            burst = max(1.0, rate)
            slot = max(bucket.last_slot + 1.0 / rate, now - (burst - 1.0) / rate)
            bucket.last_slot = slot
            wait = max(0.0, slot - now)
        vars(self._sent)[operation] = now + wait
        if wait > 0:
            self._sleep(wait)
        return wait

    def record(self, operation: str, throttled: bool, sent_at: float | None = None) -> None:
        """Adapt the rate to an attempt's outcome.

        `sent_at` is the clock reading when the attempt was sent; without it, the end of
        the wait of this thread's last acquire() for the operation (or now, if none).
        """
        bucket = self._buckets.get(operation)
        if bucket is None:
            return
        with self._lock:
            if not throttled:
                bucket.admitted += 1
                return
            now = self._clock()
            sent = sent_at if sent_at is not None else vars(self._sent).get(operation, now)
            if sent <= bucket.episode_end:
                return  # sent before the last cut took effect: the same episode
            self._cut(bucket, now)

    def _cut(self, bucket: _Bucket, now: float) -> None:
        """Start a congestion episode: halve the rate and pick the target to recover to."""
        rate, recovered = self._curve(bucket, now)
        target = rate  # the first throttle: the configured rate was too high, by how much?
        if bucket.cut_at > -math.inf and recovered and now > bucket.cut_at:
            # The quota admitted this since the last throttle, less what its burst
            # allowance could not save up while we sent less (little if any after a cut
            # to half, with a second's worth): the throttled rate overshoots it by that.
            admitted = bucket.admitted / (now - bucket.cut_at)
            least = self.MEASURED_SHARE if bucket.measured else self.DECREASE
            target = min(rate, max(admitted, rate * least))
        elif bucket.cut_at > -math.inf:
            # Throttled before even reaching the target: it was too high, and so is this
            # rate (CUBIC's fast convergence).
            target = rate * (1.0 + self.DECREASE) / 2.0
        bucket.measured = bucket.cut_at > -math.inf and recovered
        bucket.cut_to = max(bucket.configured * self.FLOOR, rate * self.DECREASE)
        bucket.target = max(target, bucket.cut_to)
        bucket.cut_at = now
        bucket.admitted = 0
        # Slots already handed out go as planned; the next ones follow at the new rate.
        bucket.last_slot = max(bucket.last_slot, now)
        bucket.episode_end = bucket.last_slot

    def rates(self) -> dict[str, float]:
        """Return the current rate of each operation."""
        with self._lock:
            now = self._clock()
            return {op: self._curve(b, now)[0] for op, b in self._buckets.items()}

    def configured(self) -> dict[str, float]:
        """Return the configured rate of each operation."""
        return {op: b.configured for op, b in self._buckets.items()}
