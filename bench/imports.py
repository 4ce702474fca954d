"""Scenario: the API cost of watching import jobs, 1,000 ended jobs in the window plus 10 active.

Calls per cycle by operation, counted by the exporter's own request counter over real HTTP to
the emulator, in the phases a data store goes through: the baseline (first sight), steady
cycles (a few jobs ending between cycles), and the daily reconciliation. The baseline figure
is the naive approach, counted in the same run with the same boto3 paginator: list every job
of the data store each cycle (the API has no time filter).
"""

from __future__ import annotations

import time

import boto3
import botocore.config

from bench.common import Figure, use_fake_credentials
from bench.steady import exporter_config, state_path
from exporter.emulator import EmulatorServer
from exporter.service import ExporterService

QUOTA_TPS = 10.0  # ListDICOMImportJobs' default quota per account
INTERVAL = 60.0  # poll.interval_seconds by default
RECONCILE = 86_400.0  # import_jobs.reconcile_seconds by default
OPERATIONS = ("ListDICOMImportJobs", "GetDICOMImportJob")
# Fast budgets: the bench counts calls, it does not wait for a realistic budget.
FAST = {"ListDICOMImportJobs": 1000.0, "GetDICOMImportJob": 1000.0, "ListImageSetVersions": 1000.0}


def _calls(service: ExporterService) -> dict[str, float]:
    counts = dict.fromkeys(OPERATIONS, 0.0)
    for metric in service.registry.collect():
        if metric.name != "healthimaging_exporter_api_requests":
            continue
        for sample in metric.samples:
            operation = sample.labels.get("operation", "")
            if sample.name.endswith("_total") and operation in counts:
                counts[operation] += sample.value
    return counts


def _cycle(service: ExporterService) -> dict[str, float]:
    before = _calls(service)
    if not service.poll().ok:
        raise RuntimeError("a bench poll cycle failed")
    after = _calls(service)
    return {op: after[op] - before[op] for op in OPERATIONS}


def _naive_calls(endpoint: str, datastore: str) -> int:
    """Pages of listing every job once (ListDICOMImportJobs without a filter)."""
    client = boto3.client(
        "medical-imaging",
        region_name="us-east-1",
        endpoint_url=endpoint,
        config=botocore.config.Config(inject_host_prefix=False),
    )
    pages = client.get_paginator("list_dicom_import_jobs").paginate(
        datastoreId=datastore, PaginationConfig={"PageSize": 50}
    )
    return sum(1 for _ in pages)


def run(quick: bool) -> list[Figure]:
    """Count the calls per cycle for 1,000 jobs in the window (quick: 200)."""
    use_fake_credentials()
    ended_jobs = 200 if quick else 1000
    active = 10
    steady_cycles = 3 if quick else 10
    ending_per_cycle = 1  # every cycle ends one of the active jobs
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    with EmulatorServer(port=0, dataset=None) as emulator:
        backend = emulator.backend
        datastore = backend.create_datastore(name="imports")
        image_set = backend.create_image_set(datastore)
        backend.set_import_job_timing(RECONCILE * 10, RECONCILE * 10)  # active until told
        ids = backend.generate_import_jobs(datastore, ended_jobs, seed=14, active=active)
        running = ids[ended_jobs:]
        config = exporter_config(
            emulator.url,
            datastore,
            state_path("imports.db"),
            image_sets=[image_set],
            aws={"rate_limits": FAST},
        )
        service = ExporterService(config, clock=clock)
        try:
            baseline = _cycle(service)
            steady: list[dict[str, float]] = []
            for cycle in range(steady_cycles):
                for job in running[cycle * ending_per_cycle : (cycle + 1) * ending_per_cycle]:
                    backend.set_import_job_outcome(datastore, job, "COMPLETED", now=True)
                steady.append(_cycle(service))
            offset[0] = RECONCILE + 1  # the next cycle is the daily reconciliation
            reconcile = _cycle(service)
            naive = _naive_calls(emulator.url, datastore)
        finally:
            service.stop()
            service.close()
    steady_list = sum(c["ListDICOMImportJobs"] for c in steady) / len(steady)
    steady_get = sum(c["GetDICOMImportJob"] for c in steady) / len(steady)
    cycles_per_day = RECONCILE / INTERVAL
    # Averaged over a day: steady cycles plus one reconciliation.
    daily_list = steady_list + (reconcile["ListDICOMImportJobs"] - steady_list) / cycles_per_day
    tps = daily_list / INTERVAL
    naive_tps = naive / INTERVAL
    size = f"{ended_jobs // 1000}k" if ended_jobs >= 1000 else str(ended_jobs)
    naive_what = f"naive: list all {ended_jobs + active} jobs every cycle (same paginator)"
    return [
        Figure(
            f"import_list_calls_steady_cycle_{size}",
            steady_list,
            "calls",
            float(naive),
            naive_what,
            "2 (SUBMITTED + IN_PROGRESS)",
            steady_list == 2,
        ),
        Figure(
            f"import_get_calls_steady_cycle_{size}",
            steady_get,
            "calls",
            None,
            f"jobs that left the active listings per cycle ({ending_per_cycle} here)",
            f"= jobs ended per cycle ({ending_per_cycle})",
            steady_get == ending_per_cycle,
        ),
        Figure(
            f"import_list_calls_baseline_cycle_{size}",
            baseline["ListDICOMImportJobs"],
            "calls",
            float(naive),
            naive_what,
            "once per data store (first sight)",
            None,
        ),
        Figure(
            f"import_list_calls_reconcile_cycle_{size}",
            reconcile["ListDICOMImportJobs"],
            "calls",
            float(naive),
            naive_what,
            f"once per import_jobs.reconcile_seconds ({RECONCILE:g} s)",
            None,
        ),
        Figure(
            f"import_list_tps_per_datastore_{size}",
            tps,
            "req/s",
            naive_tps,
            f"{naive_what}; at poll.interval_seconds {INTERVAL:g}",
            f"well under the {QUOTA_TPS:g} TPS quota",
            tps < QUOTA_TPS / 100,
        ),
        Figure(
            f"import_datastores_within_quota_{size}",
            QUOTA_TPS / tps,
            "data stores",
            QUOTA_TPS / naive_tps,
            f"{naive_what}: data stores one account's {QUOTA_TPS:g} TPS covers",
            "-",
            None,
        ),
    ]
