"""The Grafana dashboard is valid, and every panel queries documented metrics only."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.dashboard_queries import (
    DASHBOARD,
    ROOT,
    documented_metrics,
    family_of,
    iter_panels,
    load_dashboard,
    metric_names,
    panel_queries,
    substitute,
)

GRAFANA = ROOT / "deploy" / "grafana"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The parsed dashboard."""
    return load_dashboard()


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every non-row panel."""
    return [p for p in iter_panels(dashboard["panels"]) if p["type"] != "row"]


def test_dashboard_is_valid_json_with_a_schema_version() -> None:
    """dashboard.json parses and is a Grafana dashboard of schema version 39 or so."""
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    assert 36 <= data["schemaVersion"] <= 41
    assert data["title"] and data["uid"]
    assert data.get("id") is None, "an importable dashboard carries no database id"


def test_template_variables(dashboard: dict[str, Any]) -> None:
    """Data source, then cluster, job, instance and data store, each narrowing the next."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "cluster", "job", "instance", "datastore_id"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    chain = {
        "cluster": "label_values(healthimaging_exporter_build_info, cluster)",
        "job": 'label_values(healthimaging_exporter_build_info{cluster=~"$cluster"}, job)',
        "instance": (
            "label_values(healthimaging_exporter_build_info"
            '{cluster=~"$cluster",job=~"$job"}, instance)'
        ),
        "datastore_id": (
            'label_values(healthimaging_up{cluster=~"$cluster",job=~"$job",instance=~"$instance"}'
            ", datastore_id)"
        ),
    }
    for name, query in chain.items():
        variable = variables[name]
        assert variable["type"] == "query", name
        assert variable["definition"] == variable["query"]["query"] == query, name
        assert variable["multi"] is True and variable["includeAll"] is True, name
        assert variable["datasource"]["uid"] == "${datasource}", name
    # "All" of cluster must match series that have no cluster label at all.
    assert variables["cluster"]["allValue"] == ".*"
    assert variables["cluster"]["hide"] == 2, "shown only with _config.showMultiCluster"
    assert {variables[n]["allValue"] for n in ("job", "instance", "datastore_id")} == {".+"}


def test_every_panel_has_a_target_on_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    """Every panel has at least one PromQL target, all on the ${datasource} variable."""
    found = panels(dashboard)
    assert len(found) >= 15
    for panel in found:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_metric_is_documented(dashboard: dict[str, Any]) -> None:
    """Every metric name used in every panel expression exists in docs/metrics.md."""
    families = documented_metrics()
    assert "healthimaging_up" in families and len(families) >= 25
    used: set[str] = set()
    for title, expr in panel_queries():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        unknown = sorted(n for n in names if family_of(n, families) is None)
        assert not unknown, f"{title}: undocumented metric(s) {unknown} in {expr!r}"
        used |= {f for n in names if (f := family_of(n, families))}
    wanted = {
        "healthimaging_datastore_image_sets",
        "healthimaging_datastore_versions_by_workflow_status",
        "healthimaging_failed_versions_total",
        "healthimaging_forced_versions_total",
        "healthimaging_up",
        "healthimaging_exporter_last_successful_poll_timestamp_seconds",
        "healthimaging_exporter_poll_duration_seconds",
        "healthimaging_exporter_api_requests_total",
        "healthimaging_exporter_rate_budget_requests_per_second",
        "healthimaging_datastore_backfill_image_sets",
    }
    assert wanted <= used, f"not shown: {wanted - used}"


def test_datastore_metrics_follow_the_variable(dashboard: dict[str, Any]) -> None:
    """Every selector of a metric with a datastore_id label filters on $datastore_id."""
    raw = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    per_datastore = re.compile(r"\b(healthimaging_(?!exporter_(?!last_successful|poll_errors))\w+)")
    for expr in raw:
        for match in per_datastore.finditer(expr):
            name = match.group(1)
            if name in {"healthimaging_exporter_build_info"}:
                continue
            rest = expr[match.end() :]
            assert rest.startswith("{") and '$datastore_id"' in rest.split("}")[0], (
                f"{name} not filtered by $datastore_id in {expr!r}"
            )


def test_every_metric_follows_cluster_job_and_instance(dashboard: dict[str, Any]) -> None:
    """Every selector of an exporter metric filters on $cluster, $job and $instance."""
    wanted = ('cluster=~"$cluster"', 'job=~"$job"', 'instance=~"$instance"')
    selectors = 0
    for expr in (t["expr"] for p in panels(dashboard) for t in p["targets"]):
        for match in re.finditer(r"\bhealthimaging_\w+", expr):
            rest = expr[match.end() :]
            assert rest.startswith("{"), f"{match.group()} has no selector in {expr!r}"
            matchers = rest[1:].split("}")[0].split(",")
            assert all(w in matchers for w in wanted), f"{match.group()} in {expr!r}"
            selectors += 1
    assert selectors >= 40


def test_ids_are_unique(dashboard: dict[str, Any]) -> None:
    """Panel ids are unique, and so are the dashboard and provisioned data source uids."""
    ids = [p["id"] for p in iter_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    uids = [dashboard["uid"]]
    uids += [ds["uid"] for ds in provisioning("datasources/prometheus.yml")["datasources"]]
    assert len(uids) == len(set(uids))


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    """No two panels share a grid cell, and none is wider than the 24-column grid."""
    cells: dict[tuple[int, int], str] = {}
    for panel in iter_panels(dashboard["panels"]):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def provisioning(relative: str) -> dict[str, Any]:
    """A provisioning file under deploy/grafana/provisioning."""
    data: dict[str, Any] = yaml.safe_load((GRAFANA / "provisioning" / relative).read_text())
    return data


def test_provisioning_files() -> None:
    """The data source and dashboard provisioning files are well-formed."""
    datasources = provisioning("datasources/prometheus.yml")
    assert datasources["apiVersion"] == 1
    assert [ds["type"] for ds in datasources["datasources"]] == ["prometheus"]
    dashboards = provisioning("dashboards/healthimaging.yml")
    assert dashboards["apiVersion"] == 1
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_queries_are_fully_substituted() -> None:
    """Every query comes back without a template variable; unknown variables raise."""
    queries = panel_queries(variables={"datastore_id": "d1|d2"})
    assert all("$" not in expr for _, expr in queries)
    assert any('datastore_id=~"d1|d2"' in expr for _, expr in queries)
    assert (
        substitute(
            "rate(x[$__rate_interval]) ${datastore_id:regex}",
            {
                "__rate_interval": "1m",
                "datastore_id": "a",
            },
        )
        == "rate(x[1m]) a"
    )
    with pytest.raises(KeyError, match="nope"):
        substitute("x[$nope]", {})


def test_metric_names_parser() -> None:
    """metric_names skips functions, labels, strings, durations and grouping clauses."""
    expr = (
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{job="x",le!="1"}[5m]))) '
        "/ on (instance) group_left (version) b offset 1h and c unless time() > bool 1e3"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}
