"""The deployment files: every manifest valid offline, and the pieces agree with each other."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

import distaff

ROOT = pathlib.Path(__file__).resolve().parents[2] / "deploy"
BASE = ROOT / "kubernetes"
KUBERNETES = "1.33.0"  # the oldest release we promise; pinned so a new schema cannot hide a break

Manifest = dict[str, Any]


def manifests() -> list[tuple[pathlib.Path, Manifest]]:
    found = []
    for path in sorted(BASE.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def one(kind: str, name: str | None = None) -> Manifest:
    docs = [d for _, d in manifests() if d["kind"] == kind]
    if name is not None:
        docs = [d for d in docs if d["metadata"]["name"] == name]
    assert len(docs) == 1, f"expected one {kind} {name or ''}, found {len(docs)}"
    return docs[0]


def args_of(container: Manifest) -> dict[str, str]:
    """``--flag=value`` arguments as a mapping (bare flags map to "")."""
    parsed = {}
    for arg in container.get("args", []):
        flag, _, value = arg.partition("=")
        parsed[flag] = value
    return parsed


def worker_container() -> Manifest:
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def subset(labels: dict[str, str], of: dict[str, str]) -> bool:
    return labels.items() <= of.items()


@pytest.mark.parametrize(
    ("path", "manifest"),
    manifests(),
    ids=[f"{p.relative_to(BASE)}:{m['kind']}" for p, m in manifests()],
)
def test_manifest_is_valid_for_the_pinned_kubernetes(
    path: pathlib.Path, manifest: Manifest
) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_kustomization_lists_every_base_manifest() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk


def test_selectors_match_the_worker_pod_labels() -> None:
    deployment = one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert subset(deployment["spec"]["selector"]["matchLabels"], labels)
    assert subset(one("Service")["spec"]["selector"], labels)
    assert subset(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)


def test_ports_probes_and_flags_agree() -> None:
    container = worker_container()
    flags = args_of(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == int(flags["--port"])
    assert ports["health"] == int(flags["--health-port"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["health"]
    (service_port,) = one("Service")["spec"]["ports"]
    assert service_port["targetPort"] in ports
    assert service_port["port"] == ports[service_port["targetPort"]]
    assert one("Service")["spec"]["clusterIP"] == "None"  # headless: DNS names the pods


def test_termination_grace_covers_the_drain() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    grace = float(args_of(worker_container())["--grace"])
    assert pod["terminationGracePeriodSeconds"] >= grace + 15


def test_worker_authenticates_callers_with_tls_from_the_mounted_secret() -> None:
    container = worker_container()
    flags = args_of(container)
    assert "--mutual" in flags or "--token-file" in flags
    (mount,) = container["volumeMounts"]
    for flag in ("--ca", "--cert", "--key"):
        assert flags[flag].startswith(mount["mountPath"] + "/")
    volumes = one("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert any(v["name"] == mount["name"] and "secret" in v for v in volumes)
    env = {e["name"]: e for e in container["env"]}
    assert flags["--advertise"] == "$(POD_IP)"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_caller_job_finds_the_service_by_dns() -> None:
    job = one("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    discovery = distaff.discovery_from_uri(env["DISTAFF_DISCOVERY"])
    service = one("Service")
    assert discovery.name == service["metadata"]["name"]  # type: ignore[attr-defined]
    assert discovery.port == service["spec"]["ports"][0]["port"]  # type: ignore[attr-defined]
    server_name = args_of(worker_container())["--server-name"]
    assert f'server_name="{server_name}"' in container["args"][0]


def test_dockerfile_runs_the_worker_as_pid_1_with_health() -> None:
    text = (ROOT / "Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    assert entrypoint is not None
    assert json.loads(entrypoint.group(1)) == ["distaff", "worker"]  # exec form: no shell
    cmd = re.search(r"^CMD (.+)$", text, re.MULTILINE)
    assert cmd is not None
    assert "--health-port" in json.loads(cmd.group(1))
