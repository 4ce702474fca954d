"""docker-compose.yml: structure and wiring, checked without a container engine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from exporter.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"emulator", "exporter", "prometheus", "alertmanager", "grafana"}


def compose() -> dict[str, Any]:
    """The compose file, with YAML merge keys resolved."""
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    """One service."""
    result = compose()["services"][name]
    assert isinstance(result, dict)
    return result


def binds(name: str) -> dict[str, tuple[Path, str]]:
    """A service's bind mounts: container path -> (host path, options)."""
    result = {}
    for volume in service(name).get("volumes", []):
        source, target, *options = volume.split(":")
        if source.startswith("./"):
            result[target] = (ROOT / source, ",".join(options))
    return result


def exporter_config() -> Any:
    """The exporter's compose config, validated by the exporter's own parser."""
    (path, _) = binds("exporter")["/etc/healthimaging-exporter/config.yaml"]
    return parse_config(yaml.safe_load(path.read_text()), str(path))


def prometheus_config() -> dict[str, Any]:
    """The Prometheus config the compose file mounts."""
    (path, _) = binds("prometheus")["/etc/prometheus/prometheus.yml"]
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def test_top_level_structure() -> None:
    data = compose()
    assert set(data) <= {"name", "services", "volumes", "networks"} | {
        k for k in data if k.startswith("x-")
    }
    assert set(data["services"]) == SERVICES
    named = {
        v.split(":")[0]
        for s in data["services"].values()
        for v in s.get("volumes", [])
        if not v.startswith(("./", "/"))
    }
    assert named == set(data["volumes"])


def test_every_image_is_pinned() -> None:
    for name in SERVICES:
        image = service(name)["image"]
        assert ":" in image and not image.endswith(":latest"), image
        if "build" not in service(name):
            assert re.search(r":v?\d+\.\d+\.\d+$", image), image


def test_emulator_and_exporter_share_the_locally_built_image() -> None:
    emulator, exporter = service("emulator"), service("exporter")
    assert emulator["image"] == exporter["image"]
    assert emulator["build"] == exporter["build"] == "."
    assert emulator["entrypoint"] == ["healthimaging-emulator"]
    assert emulator["command"] == ["--host", "0.0.0.0", "--port", "4566"]
    assert "4566" in " ".join(emulator["healthcheck"]["test"])
    assert exporter["depends_on"]["emulator"]["condition"] == "service_healthy"


def test_exporter_polls_the_emulator_and_keeps_its_state_on_a_volume() -> None:
    config = exporter_config()
    endpoint = urlsplit(config.aws.endpoint_url)
    assert (endpoint.hostname, endpoint.port) == ("emulator", 4566)
    assert config.web.host == "0.0.0.0"
    exporter = service("exporter")
    assert exporter["command"] == ["--config", "/etc/healthimaging-exporter/config.yaml"]
    assert binds("exporter")["/etc/healthimaging-exporter/config.yaml"][1] == "ro"
    state_volume = next(v for v in exporter["volumes"] if v.startswith("exporter-state:"))
    assert Path(config.state.path).parent == Path(state_volume.split(":")[1])
    assert f"127.0.0.1:{config.web.port}:{config.web.port}" in exporter["ports"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(exporter["environment"])


def test_emulator_demo_data_holds_the_configured_datastore() -> None:
    demo = yaml.safe_load((ROOT / "exporter" / "emulator" / "data" / "demo.yaml").read_text())
    ids = {d["datastoreId"] for d in demo["datastores"]}
    assert {d.datastore_id for d in exporter_config().datastores} <= ids


def test_prometheus_scrapes_the_exporter_with_the_rules_and_alertmanager() -> None:
    config = prometheus_config()
    rules_target = "/etc/prometheus/rules.yml"
    assert config["rule_files"] == [rules_target]
    assert binds("prometheus")[rules_target] == (ROOT / "deploy/prometheus/rules.yml", "ro")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "healthimaging-exporter")
    port = exporter_config().web.port
    assert job["static_configs"][0]["targets"] == [f"exporter:{port}"]
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]
    assert 'job="healthimaging-exporter"' in (ROOT / "deploy/prometheus/rules.yml").read_text()


def test_alertmanager_uses_the_shipped_config() -> None:
    target = "/etc/alertmanager/alertmanager.yml"
    assert binds("alertmanager")[target] == (ROOT / "deploy/alertmanager/alertmanager.yml", "ro")
    assert f"--config.file={target}" in service("alertmanager")["command"]


def test_every_bind_mount_exists() -> None:
    for name in SERVICES:
        for target, (source, _) in binds(name).items():
            assert source.exists(), f"{name}: {source} (for {target}) does not exist"


def _provisioned(folder: Path, key: str) -> list[dict[str, Any]]:
    """The providers or datasources of every provisioning file in a folder."""
    return [
        item
        for f in sorted(folder.glob("*.y*ml"))
        for item in (yaml.safe_load(f.read_text()) or {}).get(key, [])
    ]


def test_grafana_provisions_the_dashboard_from_deploy_grafana() -> None:
    mounts = binds("grafana")
    provisioning = ROOT / "deploy/grafana/provisioning"
    assert mounts["/etc/grafana/provisioning/dashboards"] == (provisioning / "dashboards", "ro")
    providers = _provisioned(provisioning / "dashboards", "providers")
    assert providers, "deploy/grafana/provisioning/dashboards has no dashboard provider"
    folders = {Path(p["options"]["path"]) for p in providers}
    dashboards = [
        Path(t) for t, (s, _) in mounts.items() if s == ROOT / "deploy/grafana/dashboard.json"
    ]
    assert len(dashboards) == 1, "deploy/grafana/dashboard.json is not mounted"
    assert dashboards[0].parent in folders, (dashboards, folders)


def test_grafana_datasource_is_the_compose_prometheus_with_the_dashboards_uid() -> None:
    mounts = binds("grafana")
    folder, options = mounts["/etc/grafana/provisioning/datasources"]
    assert options == "ro"
    (compose_ds,) = _provisioned(folder, "datasources")
    assert compose_ds["type"] == "prometheus"
    assert compose_ds["url"] == "http://prometheus:9090"
    assert (
        compose_ds["jsonData"]["timeInterval"] == prometheus_config()["global"]["scrape_interval"]
    )
    shipped = _provisioned(ROOT / "deploy/grafana/provisioning/datasources", "datasources")
    shipped_prometheus = [d for d in shipped if d.get("type") == "prometheus"]
    assert shipped_prometheus, "deploy/grafana provisions no Prometheus data source"
    assert compose_ds["uid"] == shipped_prometheus[0]["uid"]
    assert compose_ds["name"] == shipped_prometheus[0]["name"]


def test_containers_are_hardened_and_ports_local() -> None:
    for name in SERVICES:
        s = service(name)
        assert s["read_only"] is True
        assert s["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in s["security_opt"]
        for port in s.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
