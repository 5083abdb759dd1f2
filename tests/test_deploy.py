"""The Kubernetes manifests under deploy/: probes, limits, autoscaling, shared PostgreSQL."""

from typing import Any

import yaml

from tests.conftest import ROOT

MANIFESTS = ROOT / "deploy" / "kubernetes"


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((MANIFESTS / name).read_text())
    return document


def test_every_manifest_parses_with_a_kind() -> None:
    kinds = {_load(path.name)["kind"] for path in MANIFESTS.glob("*.yaml")}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler"}


def test_deployment_probes_limits_and_store() -> None:
    deployment = _load("deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    env = {item["name"]: item for item in container["env"]}
    assert "secretKeyRef" in env["CDS_DATABASE_URL"]["valueFrom"]  # shared PostgreSQL
    assert "CDS_AUTH_DISABLED" not in env
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["ports"][0]["containerPort"] == 8000


def test_service_and_autoscaler_target_the_deployment() -> None:
    deployment, service, hpa = (_load(f"{n}.yaml") for n in ("deployment", "service", "hpa"))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_each_pod_migrates_the_shared_store_before_the_service_starts() -> None:
    pod = _load("deployment.yaml")["spec"]["template"]["spec"]
    (migrate,) = pod["initContainers"]
    (service,) = pod["containers"]
    assert migrate["image"] == service["image"]
    assert migrate["command"] == ["cds-service", "store", "migrate"]
    store = {item["name"]: item for item in migrate["env"]}["CDS_DATABASE_URL"]
    assert store == {item["name"]: item for item in service["env"]}["CDS_DATABASE_URL"]
    env = {item["name"]: item.get("value") for item in service["env"]}
    assert env["CDS_MIGRATE_ON_START"] == "false"
