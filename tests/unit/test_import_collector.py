"""Import-job families render as valid Prometheus text and OpenMetrics (histogram included)."""

from __future__ import annotations

from types import MappingProxyType

from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from exporter.imports.watcher import ImportJobsView
from exporter.metrics.exposition import render
from exporter.metrics.imports import ImportJobCollector
from exporter.metrics.view import FleetView

DS = "d" * 32


def view(baselined: bool = True, read_manifests: bool = True) -> FleetView:
    counters = {
        ("ended", "FAILED"): 2.0,
        ("failures", "INVALID_REQUEST"): 2.0,
        ("duration_bucket", "FAILED|300"): 1.0,
        ("duration_bucket", "FAILED|900"): 2.0,
        ("duration_count", "FAILED"): 2.0,
        ("duration_sum", "FAILED"): 900.0,
        ("files", "failed"): 3.0,
    }
    for le in ("900", "1800", "3600", "7200", "14400", "43200", "86400"):
        counters[("duration_bucket", f"FAILED|{le}")] = 2.0
    imports = ImportJobsView(
        DS,
        baselined,
        read_manifests,
        MappingProxyType({"SUBMITTED": 1, "IN_PROGRESS": 0, "COMPLETED": 0, "FAILED": 2}),
        MappingProxyType({"SUBMITTED": 1_700_000_000.0}),
        MappingProxyType(counters),
        MappingProxyType({"malformed_response": 1}),
    )
    return FleetView(import_jobs=MappingProxyType({DS: imports}))


def test_both_formats_parse_and_carry_every_family() -> None:
    exposition = render(CollectorRegistry(), view(), [ImportJobCollector()])
    text = {f.name: f for f in text_string_to_metric_families(exposition.text.decode())}
    om = {f.name: f for f in om_families(exposition.openmetrics.decode())}  # type: ignore[no-untyped-call]
    for families in (text, om):
        duration = families["healthimaging_import_job_duration_seconds"]
        assert duration.type == "histogram"
        samples = {
            (s.name, s.labels.get("job_status"), s.labels.get("le")): s.value
            for s in duration.samples
        }
        assert samples[("healthimaging_import_job_duration_seconds_bucket", "FAILED", "60.0")] == 0
        assert samples[("healthimaging_import_job_duration_seconds_bucket", "FAILED", "300.0")] == 1
        assert samples[("healthimaging_import_job_duration_seconds_bucket", "FAILED", "+Inf")] == 2
        assert samples[("healthimaging_import_job_duration_seconds_count", "COMPLETED", None)] == 0
        assert families["healthimaging_import_jobs"].samples[0].labels["job_status"] == "SUBMITTED"
    names = set(om)
    assert {
        "healthimaging_import_jobs",
        "healthimaging_import_jobs_ended",
        "healthimaging_import_job_failures",
        "healthimaging_import_oldest_active_job_submitted_timestamp_seconds",
        "healthimaging_import_files",
        "healthimaging_import_jobs_with_failed_files",
        "healthimaging_exporter_manifest_read_errors",
    } <= names


def test_nothing_before_the_baseline_and_no_file_counters_unless_read() -> None:
    exposition = render(CollectorRegistry(), view(False, False), [ImportJobCollector()])
    samples = {
        s.name for f in text_string_to_metric_families(exposition.text.decode()) for s in f.samples
    }
    assert "healthimaging_import_jobs" not in samples
    assert "healthimaging_import_jobs_ended_total" not in samples
    assert "healthimaging_import_files_total" not in samples
    assert "healthimaging_import_job_failures_total" in samples  # counted before: still shown
