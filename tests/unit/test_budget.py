"""The rate budget, on a fake clock: pacing, bursts, throttle back-off and recovery."""

from __future__ import annotations

from exporter.budget import RateBudget


class FakeTime:
    """A clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_paces_requests_at_the_configured_rate() -> None:
    t = FakeTime()
    budget = RateBudget({"ListImageSetVersions": 10.0}, clock=t.clock, sleep=t.sleep)
    start = t.now
    for _ in range(101):
        budget.acquire("ListImageSetVersions")
    # The first is free; the next 100 come at 10 per second.
    assert abs((t.now - start) - 10.0) < 0.01


def test_unbudgeted_operations_never_wait() -> None:
    t = FakeTime()
    budget = RateBudget({"ListImageSetVersions": 1.0}, clock=t.clock, sleep=t.sleep)
    assert budget.acquire("GetDatastore") == 0.0


def test_throttles_halve_the_rate_and_successes_restore_it() -> None:
    t = FakeTime()
    budget = RateBudget({"SearchImageSets": 20.0}, clock=t.clock, sleep=t.sleep)
    budget.record("SearchImageSets", throttled=True)
    assert budget.rates()["SearchImageSets"] == 10.0
    for _ in range(10):
        budget.record("SearchImageSets", throttled=True)
    assert budget.rates()["SearchImageSets"] == 2.0  # the floor: 10% of configured
    for _ in range(200):
        budget.record("SearchImageSets", throttled=False)
    assert budget.rates()["SearchImageSets"] == 20.0
