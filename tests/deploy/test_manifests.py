"""The Kubernetes and KServe manifests: valid against their schemas, and consistent with the program.

Validity: every YAML document under deploy/kubernetes/ and deploy/kserve/ (found by glob, so a new
file is checked without touching this test) against the Kubernetes schemas at a pinned version
or the CRD schemas in deploy/schemas/ (tests/deploy/manifests.py). Consistency: every driftserve
command line in them is accepted by the real parser and settings, the declared container ports are
the ports those flags open, probes use declared ports, the mirror stays in the pod, and the
objects reference each other (selectors, targets, metric names) correctly.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import ipaddress
import re
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from driftserve.cli import build_parser
from driftserve.core.commandline import settings_from_args
from driftserve.server.commands import server_settings
from driftserve.server.metrics import ServerMetrics
from driftserve.sidecar.commands import sidecar_settings
from driftserve.sidecar.fleet.settings import FleetSettings
from tests.deploy.manifests import (
    DEPLOY,
    MANIFEST_DIRS,
    Document,
    crd_schemas,
    documents,
    manifest_paths,
    pod_specs,
    validate,
)
from tests.deploy.test_dockerfile import parse_dockerfile
from tests.install_support import ROOT

DOCUMENTS = documents()
# deploy/container/entrypoint.sh: the image's first argument (its role) -> driftserve subcommand.
ROLES = {"server": "serve", "serve": "serve", "sidecar": "sidecar", "run": "run", "drift": "drift"}
# The Deployment that serves (server + sidecar per pod); others (the fleet aggregator) are named.
SERVING = "driftserve"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d.body for d in DOCUMENTS if d.body.get("kind") == kind]


def the(kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (named ``name`` where several are)."""
    (body,) = [b for b in by_kind(kind) if name is None or b["metadata"]["name"] == name]
    return body


# ---- validity


def test_every_manifest_file_is_found_and_holds_objects() -> None:
    paths = manifest_paths()
    assert {p.parent for p in paths} >= set(MANIFEST_DIRS)
    for path in paths:
        assert any(d.path == path for d in DOCUMENTS), f"{path} holds no YAML document"
    kinds = {d.body["kind"] for d in DOCUMENTS}
    expected = {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "NetworkPolicy",
    }
    assert kinds >= expected | {"ConfigMap", "ServingRuntime", "InferenceService"}


@pytest.mark.parametrize("doc", DOCUMENTS, ids=[d.id for d in DOCUMENTS])
def test_document_is_valid_against_its_schema(doc: Document) -> None:
    validate(doc.body)
    name = doc.body["metadata"]["name"]
    assert DNS_LABEL.match(name) and len(name) <= 63, f"{doc.id}: metadata.name {name!r} is not a DNS label"


@pytest.mark.parametrize(
    ("kind", "break_it"),
    [
        ("Deployment", lambda b: b["spec"]["template"]["spec"]["containers"][0].update(argz=["serve"])),
        ("Deployment", lambda b: b["spec"].update(replicas="two")),
        ("HorizontalPodAutoscaler", lambda b: b["spec"]["metrics"][1]["pods"].pop("target")),
        ("ServingRuntime", lambda b: b["spec"].update(protocolVersion=["v2"])),
        ("ServingRuntime", lambda b: b["spec"]["containers"][0]["ports"][0].update(containerPort="http")),
        ("InferenceService", lambda b: b["spec"]["predictor"]["model"]["modelFormat"].pop("name")),
        (
            "InferenceService",
            lambda b: b["spec"]["predictor"].update(model={"runtime": "driftserve", "storageURI": "x"}),
        ),
        ("ServiceMonitor", lambda b: b["spec"]["endpoints"][0].update(intervall="15s")),
    ],
)
def test_the_validation_refuses_a_broken_manifest(kind: str, break_it: Any) -> None:
    broken = copy.deepcopy(the(kind, SERVING if kind == "Deployment" else None))
    break_it(broken)
    with pytest.raises(Exception, match=r"(?i)valid|required|additional|not of type|is not one of"):
        validate(broken)


def test_every_custom_resource_has_a_kept_schema() -> None:
    builtin_groups = ("v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1")
    for doc in DOCUMENTS:
        key = (doc.body["apiVersion"], doc.body["kind"])
        assert key[0] in builtin_groups or key in crd_schemas(), f"{doc.id}: no schema in deploy/schemas for {key}"
    for path in (DEPLOY / "schemas").glob("*.json"):
        header = path.read_text()[:600]
        assert "Apache License 2.0" in header and "commit" in header, path


# ---- consistency with the program


def driftserve_containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(document id, pod spec, container) for each container that runs the driftserve entrypoint."""
    found = []
    for doc in DOCUMENTS:
        for spec in pod_specs(doc.body):
            for container in spec.get("containers", []):
                if container["image"].split(":")[0].endswith("driftserve") and "command" not in container:
                    found.append((f"{doc.id}/{container['name']}", spec, container))
    return found


CONTAINERS = driftserve_containers()


def parse(container: dict[str, Any]) -> argparse.Namespace:
    """The container's arguments through the real ``driftserve`` parser (as the entrypoint maps them)."""
    role, *flags = container["args"]
    assert role in ROLES, f"role {role!r} is not one of entrypoint.sh's {sorted(ROLES)}"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return build_parser().parse_args([ROLES[role], *flags])
    except SystemExit:
        pytest.fail(f"driftserve {ROLES[role]} refuses {flags}: {errors.getvalue().strip()}")


def effective(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The settings the process in ``container`` runs with: its flags over its DRIFTSERVE_* env."""
    args = parse(container)
    for name in [n for n in __import__("os").environ if n.startswith("DRIFTSERVE_")]:
        monkeypatch.delenv(name)
    for var in container.get("env", []):
        monkeypatch.setenv(var["name"], var["value"])
    if args.command in ("serve", "run"):
        return server_settings(args)
    if args.command == "drift":
        assert args.drift_command == "fleet", f"only `drift fleet` runs as a long-lived container, not {args}"
        return settings_from_args(FleetSettings, args)
    return sidecar_settings(args)


def open_ports(settings: Any) -> dict[int, str]:
    """Port -> bind host of every TCP port the process listens on."""
    ports: dict[int, str] = {}
    if hasattr(settings, "grpc_port"):
        for name in ("grpc_port", "http_port", "metrics_port"):
            port = getattr(settings, name, -1)
            if port > 0:
                ports[port] = settings.host
    else:
        if not settings.listen.startswith("unix:"):
            host, _, port = settings.listen.rpartition(":")
            ports[int(port)] = host
        if settings.http_port > 0:
            ports[settings.http_port] = settings.http_host
    return ports


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def test_the_manifests_start_driftserve_in_every_role_they_need() -> None:
    roles = sorted(ROLES[c["args"][0]] for _, _, c in CONTAINERS)
    assert roles == ["drift", "serve", "serve", "sidecar"], roles


@pytest.mark.parametrize(("cid", "spec", "container"), CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_container_arguments_are_accepted_by_the_real_command_line(
    cid: str, spec: dict[str, Any], container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    effective(container, monkeypatch)


@pytest.mark.parametrize(("cid", "spec", "container"), CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_declared_ports_are_the_ports_the_flags_open_and_probes_use_them(
    cid: str, spec: dict[str, Any], container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = effective(container, monkeypatch)
    reachable = {port for port, host in open_ports(settings).items() if not is_loopback(host)}
    declared = {p["containerPort"]: p.get("name") for p in container.get("ports", [])}
    assert set(declared) == reachable, f"{cid}: declared {sorted(declared)}, the flags open {sorted(reachable)}"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(kind)
        if probe is None:
            continue
        (handler,) = [probe[h] for h in ("grpc", "httpGet", "tcpSocket") if h in probe]
        port = handler["port"]
        assert port in declared or port in declared.values(), f"{cid}: {kind} port {port!r} is not declared"
        if "grpc" in probe:
            number = port if isinstance(port, int) else {v: k for k, v in declared.items()}[port]
            grpc_port = getattr(settings, "grpc_port", None) or int(settings.listen.rpartition(":")[2])
            assert number == grpc_port, f"{cid}: the gRPC probe must ask the process's gRPC health service"


def test_the_server_mirrors_to_the_sidecar_of_its_own_pod_over_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    (spec,) = pod_specs(the("Deployment", SERVING))
    by_role = {ROLES[c["args"][0]]: c for c in spec["containers"]}
    server = effective(by_role["serve"], monkeypatch)
    sidecar = effective(by_role["sidecar"], monkeypatch)
    host, _, port = server.mirror_address.rpartition(":")
    listen_host, _, listen_port = sidecar.listen.rpartition(":")
    assert is_loopback(host) and port == listen_port
    assert is_loopback(listen_host) or listen_host in ("0.0.0.0", "[::]")
    assert (
        {m["name"]: m["mountPath"] for m in by_role["serve"]["volumeMounts"]}["models"]
        == str(server.model_repository)
        == str(sidecar.model_repository)
    )


def test_the_pod_is_non_root_read_only_and_the_numba_cache_is_seeded_from_the_image() -> None:
    deployment = the("Deployment", SERVING)
    (spec,) = pod_specs(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True
    runtime = {s.name: s for s in parse_dockerfile((ROOT / "Dockerfile").read_text())}["runtime"]
    (user,) = runtime.args("USER")
    image_cache = re.search(r"NUMBA_CACHE_DIR=(\S+)", " ".join(runtime.args("ENV"))).group(1)
    assert spec["securityContext"]["runAsUser"] == int(user.split(":")[0])
    for container in spec["initContainers"] + spec["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "requests" in container["resources"] and "limits" in container["resources"]
    (seed,) = [c for c in spec["initContainers"] if c["name"] == "seed-numba-cache"]
    source, target = seed["command"][-2:]
    assert source.rstrip("/.") == image_cache
    volume = {m["mountPath"]: m["name"] for m in seed["volumeMounts"]}[target.rstrip("/")]
    for container in spec["containers"]:
        env = {e["name"]: e["value"] for e in container["env"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert env["NUMBA_CACHE_DIR"] == mounts[volume] == target.rstrip("/")


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def test_only_the_fleet_aggregator_may_reach_the_sidecars_grpc_port() -> None:
    policy = the("NetworkPolicy")
    serving = the("Deployment", SERVING)
    aggregator = the("Deployment", "driftserve-fleet-aggregator")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels(serving).items()
    (spec,) = pod_specs(serving)
    declared = {p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
    open_to_all = {p["port"] for rule in policy["spec"]["ingress"] if "from" not in rule for p in rule["ports"]}
    (restricted,) = [rule for rule in policy["spec"]["ingress"] if "from" in rule]
    assert {p["port"] for p in restricted["ports"]} == {8003} and 8003 not in open_to_all
    assert open_to_all | {8003} == declared
    (peer,) = restricted["from"]
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels(aggregator).items()
    assert not peer["podSelector"]["matchLabels"].items() <= pod_labels(serving).items()


def test_service_pdb_hpa_and_servicemonitor_point_at_the_deployment() -> None:
    deployment = the("Deployment", SERVING)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (spec,) = pod_specs(deployment)
    port_names = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
    for service in by_kind("Service"):
        (selected,) = [d for d in by_kind("Deployment") if service["spec"]["selector"].items() <= pod_labels(d).items()]
        (selected_spec,) = pod_specs(selected)
        names = {p["name"]: p["containerPort"] for c in selected_spec["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"{service['metadata']['name']}: {port['targetPort']}"
            assert port["port"] == names[port["targetPort"]]
    assert the("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = the("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    monitor = the("ServiceMonitor")
    (main,) = [s for s in by_kind("Service") if monitor["spec"]["selector"]["matchLabels"] == s["metadata"]["labels"]]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in main["spec"]["ports"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert port_names["metrics"] == int(annotations["prometheus.io/port"])


def test_the_request_rate_metric_comes_from_the_servers_real_counter() -> None:
    registry = CollectorRegistry()
    ServerMetrics(registry)
    counters = {f"{m.name}_total" for m in registry.collect() if m.type == "counter"}
    (rule,) = yaml.safe_load(the("ConfigMap")["data"]["config.yaml"])["rules"]
    series = re.match(r"^(\w+)\{", rule["seriesQuery"]).group(1)
    assert series == "driftserve_server_requests_total" and series in counters
    assert re.fullmatch(rule["name"]["matches"], series)
    assert "rate(<<.Series>>" in rule["metricsQuery"]
    (pods,) = [m["pods"] for m in the("HorizontalPodAutoscaler")["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods["metric"]["name"] == rule["name"]["as"]
    assert {"namespace", "pod"} <= set(rule["resources"]["overrides"])


def test_the_inference_service_uses_the_runtime_over_v2_on_kserve_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, isvc = the("ServingRuntime"), the("InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "v2" and {"v2", "grpc-v2"} <= set(runtime["spec"]["protocolVersions"])
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    settings = effective(container, monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # KServe: the first port is the HTTP one (its service port 80); a port named h2c carries gRPC.
    assert container["ports"][0]["containerPort"] == settings.http_port == 8080
    assert ports["h2c"] == settings.grpc_port
    assert str(settings.model_repository) == "/mnt/models"
