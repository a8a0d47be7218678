"""deploy/k8s/: the Kustomize overlays render, validate against the Kubernetes API schemas,
pass checkov, and hold what docs/deploy.md promises (probes, drain, budgets, autoscaling,
isolation, TLS)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tests.deploy.conftest import OVERLAYS, is_exported, metric_names
from tests.deploy.tools import DEPLOY, run

pytestmark = pytest.mark.slow  # starts processes

Manifests = list[dict[str, Any]]
# Kinds of add-ons (KEDA, cert-manager) whose schemas kubernetes-validate does not ship: the
# tests below check what we rely on in them.
ADD_ON_KINDS = {"ScaledObject", "Certificate"}
# The oldest Kubernetes still commonly run, and the newest the validator knows.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Overlays without network policies of their own; tenant-example adds them (the
# tenant-isolation component), which needs to know your ingress controller's namespace.
NO_POLICIES = {"embedded": ["CKV2_K8S_6"], "scale-out": ["CKV2_K8S_6"], "tenant-example": []}


def of_kind(manifests: Manifests, kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def workloads(manifests: Manifests) -> list[dict[str, Any]]:
    return of_kind(manifests, "Deployment") + of_kind(manifests, "StatefulSet")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def config(manifests: Manifests) -> dict[str, str]:
    (config_map,) = of_kind(manifests, "ConfigMap")
    data: dict[str, str] = config_map["data"]
    return data


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", VERSIONS)
def test_the_overlay_validates_against_the_kubernetes_schemas(
    rendered: dict[str, Manifests], overlay: str, version: str
) -> None:
    for manifest in rendered[overlay]:
        if manifest["kind"] in ADD_ON_KINDS:
            continue
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_finds_nothing_unexplained(
    rendered: dict[str, Manifests], overlay: str, tmp_path: Path
) -> None:
    (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(rendered[overlay]))
    # A --skip-check given on the command line replaces the config file's list.
    explained = yaml.safe_load((DEPLOY / "checkov.yaml").read_text())["skip-check"]
    skips = [*explained, *NO_POLICIES[overlay]]
    result = run(
        str(Path(sys.executable).with_name("checkov")),
        "--config-file",
        str(DEPLOY / "checkov.yaml"),
        "--framework",
        "kubernetes",
        "-d",
        str(tmp_path),
        "--output",
        "json",
        "--skip-check",
        ",".join(skips),
    )
    report = json.loads(result.stdout)
    assert report["summary"]["failed"] == 0, json.dumps(report["results"]["failed_checks"])
    assert report["summary"]["passed"] > 50


def test_every_skipped_checkov_finding_says_why() -> None:
    lines = (DEPLOY / "checkov.yaml").read_text().splitlines()
    for n, line in enumerate(lines):
        if line.strip().startswith("- CKV"):
            assert lines[n - 1].strip().startswith("#"), f"no reason above {line.strip()}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_has_the_three_probes_and_a_drain_that_fits_its_grace_period(
    rendered: dict[str, Manifests], overlay: str
) -> None:
    settings = config(rendered[overlay])
    drain = float(settings["STELLWERK_DRAIN_SECONDS"])
    shutdown = float(settings["STELLWERK_SHUTDOWN_TIMEOUT_SECONDS"])
    assert drain > 0
    for workload in workloads(rendered[overlay]):
        spec = workload["spec"]["template"]["spec"]
        c = container(workload)
        assert c["startupProbe"]["httpGet"]["path"] == "/startupz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # /readyz pings the stores with a 2 s budget: the probe must wait longer.
        assert c["readinessProbe"]["timeoutSeconds"] > 2
        command = c["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        assert float(command[1]) == drain
        assert spec["terminationGracePeriodSeconds"] >= 2 * drain + shutdown + 5
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["runAsNonRoot"] is True
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) == {"cpu", "memory"}, workload["metadata"]["name"]


def test_embedded_is_one_pod_with_its_data_and_backups_on_volumes(
    rendered: dict[str, Manifests],
) -> None:
    (stateful,) = of_kind(rendered["embedded"], "StatefulSet")
    assert stateful["spec"]["replicas"] == 1
    claims = {t["metadata"]["name"] for t in stateful["spec"]["volumeClaimTemplates"]}
    assert claims == {"data", "backups"}
    c = container(stateful)
    env = {e["name"]: e["value"] for e in c["env"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["backups"] == env["STELLWERK_BACKUP_DIR"]
    assert mounts["data"] == "/var/lib/stellwerk"
    assert of_kind(rendered["embedded"], "Deployment") == []


def test_scale_out_runs_each_role_as_a_workload_with_a_budget(
    rendered: dict[str, Manifests],
) -> None:
    manifests = rendered["scale-out"]
    by_name = {w["metadata"]["name"]: w for w in workloads(manifests)}
    roles = {"gateway", "router", "delivery", "scheduler", "status"}
    assert set(by_name) == {f"stellwerk-{r}" for r in roles}
    for role in roles:
        c = container(by_name[f"stellwerk-{role}"])
        assert c["args"] == ["serve", "--role", role]
        env = {e["name"] for e in c.get("env", [])}
        assert {"STELLWERK_DATABASE_URL", "STELLWERK_SECRET_KEY"} <= env
    assert config(manifests)["STELLWERK_NATS_REPLICAS"] == "3"
    budgets = of_kind(manifests, "PodDisruptionBudget")
    covered = {b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for b in budgets}
    assert covered == roles
    (gateway_budget,) = [b for b in budgets if b["metadata"]["name"] == "stellwerk-gateway"]
    assert gateway_budget["spec"]["minAvailable"] == 1


def test_delivery_workers_keep_the_lake_spool_on_a_volume_of_their_own(
    rendered: dict[str, Manifests],
) -> None:
    # Rows a lake target acknowledged wait in the delivering pod's spool: on an emptyDir, a node
    # lost with the pod would lose them.
    (delivery,) = of_kind(rendered["scale-out"], "StatefulSet")
    assert delivery["metadata"]["name"] == "stellwerk-delivery"
    (claim,) = delivery["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container(delivery)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/stellwerk"
    volumes = {v["name"] for v in delivery["spec"]["template"]["spec"]["volumes"]}
    assert claim["metadata"]["name"] not in volumes
    assert delivery["spec"]["podManagementPolicy"] == "Parallel"


def test_gateways_scale_on_cpu_and_workers_on_stellwerks_own_queue_metrics(
    rendered: dict[str, Manifests], exported_metrics: frozenset[str]
) -> None:
    manifests = rendered["scale-out"]
    by_name = {w["metadata"]["name"]: w for w in workloads(manifests)}
    (hpa,) = of_kind(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "stellwerk-gateway"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    scaled = {
        s["spec"]["scaleTargetRef"]["name"]: s["spec"] for s in of_kind(manifests, "ScaledObject")
    }
    assert set(scaled) == {"stellwerk-router", "stellwerk-delivery"}
    assert scaled["stellwerk-delivery"]["minReplicaCount"] == 0
    assert scaled["stellwerk-router"]["minReplicaCount"] >= 1
    for name, spec in scaled.items():
        # An autoscaler owns the count: a replicas field would undo it on every apply.
        assert "replicas" not in by_name[name]["spec"]
        assert spec["scaleTargetRef"].get("kind", "Deployment") == by_name[name]["kind"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "prometheus"
            names = metric_names(trigger["metadata"]["query"])
            assert names
            assert all(is_exported(n, exported_metrics) for n in names), names
            float(trigger["metadata"]["threshold"])
    delivery_queries = " ".join(
        t["metadata"]["query"] for t in scaled["stellwerk-delivery"]["triggers"]
    )
    assert "stellwerk_delivery_queue_depth" in delivery_queries
    assert all(
        t["metadata"]["activationThreshold"] == "0"
        for t in scaled["stellwerk-delivery"]["triggers"]
    )


def test_a_tenant_namespace_is_closed_by_default(rendered: dict[str, Manifests]) -> None:
    manifests = rendered["tenant-example"]
    (namespace,) = of_kind(manifests, "Namespace")
    name = namespace["metadata"]["name"]
    assert all(m["metadata"].get("namespace", name) == name for m in manifests)
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(manifests, "NetworkPolicy")}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny
    egress = policies["allow-public-egress"]["egress"][0]["to"]
    closed = {cidr for block in egress for cidr in block["ipBlock"]["except"]}
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= closed


def test_a_status_domain_gets_its_certificate_and_its_ingress(
    rendered: dict[str, Manifests],
) -> None:
    manifests = rendered["tenant-example"]
    (certificate,) = of_kind(manifests, "Certificate")
    (ingress,) = of_kind(manifests, "Ingress")
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    (tls,) = ingress["spec"]["tls"]
    assert tls["secretName"] == certificate["spec"]["secretName"]
    assert tls["hosts"] == certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"]["name"]
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]["name"]
    assert backend in {s["metadata"]["name"] for s in of_kind(manifests, "Service")}
