"""Scenario 2: backfill throughput against an emulator enforcing a 25 requests/s quota."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from bench.common import Figure, use_fake_credentials
from bench.steady import exporter_config, state_path
from exporter.config import DEFAULT_RATE_LIMIT
from exporter.emulator import EmulatorServer, Faults
from exporter.service import ExporterService

QUOTA = 25.0  # the emulator's quota per operation, as AWS's default
OVER_QUOTA = 40.0  # a budget above the quota: the exporter must slow itself down
TARGET_SHARE = 0.9
PAGE = 50  # SearchImageSets page size the backfill asks for


@dataclass(frozen=True, slots=True)
class BackfillRun:
    """What one backfill did."""

    image_sets: int
    seconds: float
    sustained: float  # image sets per second between 10 % and 90 % of the inventory
    throttled: int  # attempts the exporter counted as throttled
    emulator_excess: int  # requests the emulator received beyond one per listing and page

    @property
    def overall(self) -> float:
        """Return image sets listed per second, from the backfill's start to its end."""
        return self.image_sets / self.seconds


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


def backfill(image_sets: int, budget: float, name: str) -> BackfillRun:
    """Backfill `image_sets` with `budget` requests/s per operation against the quota."""
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
            aws={"rate_limits": {"ListImageSetVersions": budget, "SearchImageSets": budget}},
        )
        service = ExporterService(config)
        try:
            backend.reset_request_counts()
            service.poll()  # the first cycle only records the start and plans the backfill
            start = time.monotonic()
            progress: list[tuple[float, int]] = [(0.0, 0)]
            deadline = start + 10 * image_sets / min(budget, QUOTA) + 60
            while True:
                view = service.poller.view().datastores[datastore]
                now = time.monotonic()
                if view.backfill_listed != progress[-1][1]:
                    progress.append((now - start, view.backfill_listed))
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
    excess = sum(counts.values()) - image_sets - pages
    return BackfillRun(image_sets, seconds, _rate_between(progress, image_sets), throttled, excess)


def run(quick: bool) -> list[Figure]:
    """Backfill 2,000 image sets (quick: 200) within the default budget, then above the quota."""
    image_sets = 200 if quick else 2_000
    under = backfill(image_sets, DEFAULT_RATE_LIMIT, "under")
    over = backfill(image_sets, OVER_QUOTA, "over")
    size = f"{image_sets:,}"
    floor = TARGET_SHARE * DEFAULT_RATE_LIMIT
    budget_what = f"configured budget aws.rate_limits {DEFAULT_RATE_LIMIT:g}/s (default)"
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
            "backfill_over_quota_rate_sustained",
            over.sustained,
            "image sets/s",
            QUOTA,
            f"the emulator's quota; budget {OVER_QUOTA:g}/s, between 10 % and 90 %",
            "",
            None,
        ),
        Figure(
            "backfill_over_quota_rate_overall",
            over.overall,
            "image sets/s",
            QUOTA,
            f"the emulator's quota; budget {OVER_QUOTA:g}/s, start to complete, "
            f"{over.seconds:.1f} s",
            "",
            None,
        ),
        Figure(
            "backfill_over_quota_throttles",
            float(over.throttled),
            "requests",
            None,
            "api_requests_total{outcome=throttled}; emulator's excess requests: "
            f"{over.emulator_excess}",
            "",
            None,
        ),
    ]
