"""Scenario 2: backfill throughput against an emulator enforcing a 25 requests/s quota."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from bench.common import Figure, use_fake_credentials
from bench.steady import exporter_config, state_path
from exporter.config import DEFAULT_RATE_LIMIT
from exporter.emulator import EmulatorServer, Faults
from exporter.service import ExporterService

QUOTA = 25.0  # the emulator's quota per operation, as AWS's default
AT_QUOTA = QUOTA  # a budget equal to the quota: the exporter must never be throttled
OVER_QUOTA = 40.0  # a budget above the quota: the exporter must slow itself down
TARGET_SHARE = 0.9
QUOTA_SHARE = 0.97  # of the quota, sustained, with a budget above it
THROTTLE_SHARE = 0.01  # of all requests, at most, with a budget above the quota
PAGE = 50  # SearchImageSets page size the backfill asks for
OPERATIONS = ("ListImageSetVersions", "SearchImageSets")


@dataclass(frozen=True, slots=True)
class BackfillRun:
    """What one backfill did."""

    image_sets: int
    seconds: float
    sustained: float  # image sets per second between 10 % and 90 % of the inventory
    throttled: int  # attempts the exporter counted as throttled
    requests: int  # requests the emulator received, throttled ones included
    emulator_excess: int  # requests the emulator received beyond one per listing and page
    episodes: int  # times the budget's rate dropped between two samples (20 ms apart)

    @property
    def overall(self) -> float:
        """Return image sets listed per second, from the backfill's start to its end."""
        return self.image_sets / self.seconds

    @property
    def throttle_share(self) -> float:
        """Return the share of requests that were throttled."""
        return self.throttled / self.requests if self.requests else 0.0


def _throttled(service: ExporterService) -> int:
    """Sum `healthimaging_exporter_api_requests_total{outcome="throttled"}` of the exposition."""
    service.poller.publish_view()
    total = 0.0
    for family in text_string_to_metric_families(service.exposition().text.decode()):
        for sample in family.samples:
            if (
                sample.name == "healthimaging_exporter_api_requests_total"
                and sample.labels.get("outcome") == "throttled"
            ):
                total += sample.value
    return round(total)


def _rate_between(progress: list[tuple[float, int]], total: int) -> float:
    """Return the listing rate between the samples at 10 % and at 90 % of the inventory."""
    low = next(p for p in progress if p[1] >= 0.1 * total)
    high = next(p for p in progress if p[1] >= 0.9 * total)
    if high[0] <= low[0]:
        return float("nan")
    return (high[1] - low[1]) / (high[0] - low[0])


def backfill(image_sets: int, budget_rate: float, name: str) -> BackfillRun:
    """Backfill `image_sets` with `budget_rate` requests/s per operation against the quota."""
    use_fake_credentials()
    with EmulatorServer(port=0, dataset=None) as emulator:
        backend = emulator.backend
        datastore = backend.create_datastore(name="backfill")
        backend.generate(datastore, image_sets, seed=7)
        backend.set_faults(Faults(quota_per_second=QUOTA))
        config = exporter_config(
            emulator.url,
            datastore,
            state_path(f"backfill-{name}.db"),
            aws={"rate_limits": dict.fromkeys(OPERATIONS, budget_rate)},
        )
        service = ExporterService(config)
        # No metric counts congestion episodes; the budget's rate only drops at one, so
        # the bench samples the service's budget beside its progress.
        budget = service._budget
        try:
            backend.reset_request_counts()
            service.poll()  # the first cycle only records the start and plans the backfill
            start = time.monotonic()
            progress: list[tuple[float, int]] = [(0.0, 0)]
            rates = budget.rates()
            episodes = 0
            deadline = start + 10 * image_sets / min(budget_rate, QUOTA) + 60
            while True:
                view = service.poller.view().datastores[datastore]
                now = time.monotonic()
                if view.backfill_listed != progress[-1][1]:
                    progress.append((now - start, view.backfill_listed))
                sampled = budget.rates()
                episodes += sum(sampled[op] < rates[op] for op in OPERATIONS)
                rates = sampled
                if view.backfill_complete:
                    break
                if now > deadline:
                    raise RuntimeError(f"backfill {name}: not complete at {view.backfill_listed}")
                # A page at a time, as the runtime's backfill job runs them.
                service.run_backfills(slice_seconds=0.0)
                if not service.poller.backfilling:
                    time.sleep(0.02)
            seconds = progress[-1][0]
            throttled = _throttled(service)
            counts = backend.request_counts()
        finally:
            service.stop()
            service.close()
    pages = -(-image_sets // PAGE)
    requests = sum(counts.values())
    return BackfillRun(
        image_sets,
        seconds,
        _rate_between(progress, image_sets),
        throttled,
        requests,
        requests - image_sets - pages,
        episodes,
    )


def run(quick: bool) -> list[Figure]:
    """Backfill 2,000 image sets (quick: 200) within the default budget, at and above the quota."""
    image_sets = 200 if quick else 2_000
    under = backfill(image_sets, DEFAULT_RATE_LIMIT, "under")
    at = backfill(image_sets, AT_QUOTA, "at")
    over = backfill(image_sets, OVER_QUOTA, "over")
    size = f"{image_sets:,}"
    floor = TARGET_SHARE * DEFAULT_RATE_LIMIT
    budget_what = f"configured budget aws.rate_limits {DEFAULT_RATE_LIMIT:g}/s (default)"
    quota_floor = QUOTA_SHARE * QUOTA

    def baselines(value: Callable[[BackfillRun], float], unit: str) -> str:
        """Show a figure of the budget-20 and budget-25 runs."""
        return (
            f"budget {DEFAULT_RATE_LIMIT:g}/s: {value(under):.3g}{unit}, "
            f"budget {AT_QUOTA:g}/s: {value(at):.3g}{unit}"
        )

    return [
        Figure(
            "backfill_rate_sustained",
            under.sustained,
            "image sets/s",
            DEFAULT_RATE_LIMIT,
            f"{budget_what}; {size} image sets, between 10 % and 90 % of them",
            f">= {floor:g}/s (90 % of budget)",
            under.sustained >= floor,
        ),
        Figure(
            "backfill_rate_overall",
            under.overall,
            "image sets/s",
            DEFAULT_RATE_LIMIT,
            f"{budget_what}; start to complete, {under.seconds:.1f} s",
            f">= {floor:g}/s (90 % of budget)",
            under.overall >= floor,
        ),
        Figure(
            "backfill_throttles",
            float(under.throttled),
            "requests",
            None,
            "api_requests_total{outcome=throttled}; emulator's excess requests: "
            f"{under.emulator_excess}",
            "0 with the budget under the 25/s quota",
            under.throttled == 0,
        ),
        Figure(
            "backfill_at_quota_rate_sustained",
            at.sustained,
            "image sets/s",
            QUOTA,
            f"the emulator's quota; budget {AT_QUOTA:g}/s, between 10 % and 90 %",
            f">= {quota_floor:g}/s ({QUOTA_SHARE:.0%} of quota)",
            at.sustained >= quota_floor,
        ),
        Figure(
            "backfill_at_quota_throttles",
            float(at.throttled),
            "requests",
            None,
            f"budget {AT_QUOTA:g}/s = quota; emulator's excess requests: {at.emulator_excess}; "
            f"rate drops: {at.episodes}",
            "0 with the budget at the quota",
            at.throttled == 0,
        ),
        Figure(
            "backfill_over_quota_rate_sustained",
            over.sustained,
            "image sets/s",
            at.sustained,
            f"budget {AT_QUOTA:g}/s = quota, same run; budget {OVER_QUOTA:g}/s, between 10 % "
            f"and 90 %; {baselines(lambda r: r.sustained, '/s')}",
            f">= {quota_floor:g}/s ({QUOTA_SHARE:.0%} of quota)",
            over.sustained >= quota_floor,
        ),
        Figure(
            "backfill_over_quota_share_of_quota",
            100.0 * over.sustained / QUOTA,
            "%",
            100.0 * at.sustained / QUOTA,
            f"budget {AT_QUOTA:g}/s = quota; {baselines(_percent_of_quota, ' %')}",
            f">= {QUOTA_SHARE:.0%}",
            over.sustained >= quota_floor,
        ),
        Figure(
            "backfill_over_quota_rate_overall",
            over.overall,
            "image sets/s",
            at.overall,
            f"budget {AT_QUOTA:g}/s = quota; budget {OVER_QUOTA:g}/s, start to complete, "
            f"{over.seconds:.1f} s (at the quota: {at.seconds:.1f} s)",
            "",
            None,
        ),
        Figure(
            "backfill_over_quota_throttle_share",
            100.0 * over.throttle_share,
            "%",
            100.0 * at.throttle_share,
            f"budget {AT_QUOTA:g}/s = quota; {over.throttled} of {over.requests:,} requests "
            f"throttled; emulator's excess requests: {over.emulator_excess}; "
            f"{baselines(lambda r: 100.0 * r.throttle_share, ' %')}",
            f"< {THROTTLE_SHARE:.0%}",
            over.throttle_share < THROTTLE_SHARE,
        ),
        Figure(
            "backfill_over_quota_episodes",
            float(over.episodes),
            "episodes",
            float(at.episodes),
            f"budget {AT_QUOTA:g}/s = quota; drops of the budget's rate (sampled every 20 ms) "
            f"during the {over.seconds:.0f} s backfill",
            "",
            None,
        ),
    ]


def _percent_of_quota(run: BackfillRun) -> float:
    """Return the sustained rate as a percentage of the quota."""
    return 100.0 * run.sustained / QUOTA
