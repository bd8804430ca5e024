"""The deployment files (Dockerfile, compose.yaml, deploy/kubernetes) against the code they
deploy: what no schema can see. ``make deploy-check`` validates their shape (the Kubernetes
OpenAPI schemas, hadolint, the compose specification); these tests check that every
``GROUNDWIRE_*`` setting they set exists and that each mode's settings pass the server's own
validation, that ports, probes, grace periods, selectors and the autoscaler's metric agree
with the server, and that the embedded mode can never run two owners of one Edge shard."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from groundwire.server import metrics
from groundwire.server.settings import CliSettings, Settings, SettingsError, load_settings
from groundwire.v1 import generation_pb2, retrieval_pb2

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
# Each overlay's pods; the scaled overlay renders the base twice, one Deployment per role.
OVERLAYS = ("embedded", "scaled/retrieval", "scaled/generation")
ROLE_SERVICES = {
    "scaled/retrieval": retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name,
    "scaled/generation": generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name,
}
# What the scaled overlay leaves to the groundwire-secrets Secret, stood in for here.
SECRETS = {"GROUNDWIRE_API_KEYS": '{"tenant-a": "a-key-of-at-least-16-chars"}'}
SERVICES = {
    retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name,
    generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name,
}


def load(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(path: Path, kind: str) -> dict[str, Any]:
    """The one object of ``kind`` in ``path``."""
    found = [doc for doc in load(path) if doc.get("kind") == kind]
    assert len(found) == 1, f"{path}: {len(found)} {kind}"
    return found[0]


def literals(kustomization: Path) -> dict[str, str]:
    """The groundwire-config literals of a kustomization's configMapGenerator."""
    (generator,) = [
        g
        for g in one(kustomization, "Kustomization")["configMapGenerator"]
        if g["name"] == "groundwire-config"
    ]
    return dict(item.split("=", 1) for item in generator["literals"])


def overlay_config(name: str) -> dict[str, str]:
    """The environment an overlay's pods get from the ConfigMap (base merged with overlay;
    ``scaled/<role>`` for one role of the scaled overlay)."""
    return literals(KUBERNETES / "base" / "kustomization.yaml") | literals(
        KUBERNETES / "overlays" / name / "kustomization.yaml"
    )


def dockerfile_env(target: str) -> dict[str, str]:
    """The GROUNDWIRE_* variables the Dockerfile's ``target`` stage sets (runtime + target)."""
    stages = re.split(r"^FROM ", (ROOT / "Dockerfile").read_text(), flags=re.M)
    env: dict[str, str] = {}
    for stage in stages:
        name = stage.split("\n", 1)[0].rsplit(" AS ", 1)[-1].strip()
        if name in ("runtime", target):
            env |= dict(re.findall(r"(GROUNDWIRE_[A-Z0-9_]+)=(\S+)", stage))
    return env


def validated(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The server's settings read from ``environment`` as a pod's process reads them (JSON
    values decoded, nothing else of the shell's), whose names must all be known: Settings
    ignores unknown names, so a typo would otherwise pass silently."""
    known = {f"GROUNDWIRE_{name.upper()}" for name in Settings.model_fields}
    known |= {f"GROUNDWIRE_{name.upper()}" for name in CliSettings.model_fields}
    unknown = sorted(set(environment) - known)
    assert not unknown, f"not settings: {unknown}"
    for name in list(os.environ):
        if name.startswith("GROUNDWIRE_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    try:
        return load_settings()
    except SettingsError as exc:
        pytest.fail(str(exc))


def deployment() -> dict[str, Any]:
    return one(KUBERNETES / "base" / "deployment.yaml", "Deployment")


def container() -> dict[str, Any]:
    (main,) = deployment()["spec"]["template"]["spec"]["containers"]
    return main


def port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_sets_known_settings_that_validate(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = overlay_config(overlay)
    scaled = overlay.startswith("scaled/")
    settings = validated(environment | (SECRETS if scaled else {}), monkeypatch)
    assert settings.listen.startswith("0.0.0.0:")  # reachable from outside the pod
    if overlay == "embedded":
        assert (settings.vector_store, settings.embedder) == ("edge", "local")
        assert settings.serves_retrieval and settings.serves_generation
    elif overlay == "scaled/retrieval":
        assert settings.services == {"retrieval"}
        assert (settings.vector_store, settings.embedder) == ("qdrant", "openai")
        # Every peer listed: the loss of one is not the loss of the store.
        assert settings.qdrant_url is not None and len(settings.qdrant_url.split(",")) == 3
    else:
        assert settings.services == {"generation"}
        # The retrieval Deployment's headless Service, on its gRPC port.
        retrieval = overlay_config("scaled/retrieval")
        (headless,) = [
            s
            for s in load(KUBERNETES / "base" / "services.yaml")
            if s["spec"].get("clusterIP") == "None"
        ]
        namespace = one(KUBERNETES / "base" / "kustomization.yaml", "Kustomization")["namespace"]
        host = f"{headless['metadata']['name']}-retrieval.{namespace}.svc.cluster.local"
        assert settings.retrieval_url == f"{host}:{port(retrieval['GROUNDWIRE_LISTEN'])}"
    if scaled:
        assert settings.redis_url


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_match_the_pods_cpu_request(overlay: str) -> None:
    """The default worker count is the usable cores, which is the node's when a pod has no
    CPU limit: each overlay sets it to its pods' CPU request instead."""
    request = container()["resources"]["requests"]["cpu"]
    patch = KUBERNETES / "overlays" / overlay / "deployment-patch.yaml"
    if patch.exists():
        (patched,) = load(patch)[0]["spec"]["template"]["spec"]["containers"]
        request = patched.get("resources", {}).get("requests", {}).get("cpu", request)
    assert int(overlay_config(overlay)["GROUNDWIRE_WORKERS"]) == int(request)


@pytest.mark.parametrize("target", ["local", "remote"])
def test_each_image_with_compose_sets_known_settings_that_validate(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    environment = dockerfile_env(target) | compose["services"]["groundwire"]["environment"]
    if target == "remote":  # groundwire.env names the embeddings endpoint
        environment["GROUNDWIRE_EMBEDDINGS_BASE_URL"] = "http://embeddings:8000/v1"
    settings = validated(environment, monkeypatch)
    assert settings.embedder == ("local" if target == "local" else "openai")
    # The store and the cache are compose's own services.
    hosts = {
        re.split(r"[:/]", url.split("://", 1)[1])[0]
        for url in (settings.qdrant_url or "", settings.redis_url or "")
    }
    assert hosts <= set(compose["services"])


def test_ports_and_probes_agree_with_the_server() -> None:
    config = overlay_config("scaled/retrieval")
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports == {
        "grpc": port(config["GROUNDWIRE_LISTEN"]),
        "metrics": int(config["GROUNDWIRE_METRICS_PORT"]),
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container()[probe]["grpc"]["port"] == ports["grpc"], probe
    # Readiness asks for the whole server (NOT_SERVING once it drains), whatever services
    # GROUNDWIRE_SERVICES picks: a generation-only pod reports no RetrievalService.
    assert "service" not in container()["readinessProbe"]["grpc"]
    exposed = re.findall(r"^EXPOSE (.+)$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert {int(p) for p in " ".join(exposed).split()} == set(ports.values())
    for service in load(KUBERNETES / "base" / "services.yaml"):
        for service_port in service["spec"]["ports"]:
            assert service_port["targetPort"] in ports


def test_a_pod_is_killed_only_after_its_streams_drain() -> None:
    grace = float(overlay_config("scaled/generation")["GROUNDWIRE_GRACE_PERIOD_S"])
    pod = deployment()["spec"]["template"]["spec"]
    pause = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The kubelet counts the preStop pause inside the termination grace period.
    assert pod["terminationGracePeriodSeconds"] > pause + grace
    # A draining server is NOT_SERVING to the liveness probe as well: its failures must not
    # add up to a restart before the grace period ends.
    liveness = container()["livenessProbe"]
    window = liveness["periodSeconds"] * liveness["failureThreshold"]
    assert window > pod["terminationGracePeriodSeconds"]
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["groundwire"]
    assert float(compose["environment"]["GROUNDWIRE_GRACE_PERIOD_S"]) == grace
    assert int(compose["stop_grace_period"].removesuffix("s")) > grace


def test_pods_run_as_the_images_non_root_user_on_a_read_only_root() -> None:
    user = re.findall(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert user and int(user[0][0]) != 0
    pod = deployment()["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] and str(pod["runAsUser"]) == user[0][0]
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    # The only writable places: the data directory and /tmp.
    mounts = {m["mountPath"] for m in container()["volumeMounts"]}
    assert mounts == {overlay_config("scaled/retrieval")["GROUNDWIRE_DATA_DIR"], "/tmp"}


def test_selectors_select_the_deployments_pods() -> None:
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    selectors = [deployment()["spec"]["selector"]["matchLabels"]]
    selectors += [s["spec"]["selector"] for s in load(KUBERNETES / "base" / "services.yaml")]
    pdb = one(KUBERNETES / "base" / "poddisruptionbudget.yaml", "PodDisruptionBudget")
    selectors.append(pdb["spec"]["selector"]["matchLabels"])
    for selector in selectors:
        assert selector.items() <= labels.items()
    (headless,) = [
        s
        for s in load(KUBERNETES / "base" / "services.yaml")
        if s["spec"].get("clusterIP") == "None"
    ]
    assert headless["spec"]["ports"][0]["name"] == "grpc"


@pytest.mark.parametrize("role", ["scaled/retrieval", "scaled/generation"])
def test_each_roles_autoscaler_reads_the_gauge_the_server_exports(role: str) -> None:
    hpa = one(
        KUBERNETES / "overlays" / role / "horizontalpodautoscaler.yaml", "HorizontalPodAutoscaler"
    )
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment()["metadata"]["name"]
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    gauge = metrics.INFLIGHT_CALLS.describe()[0]
    assert pods["metric"]["name"] == gauge.name
    selector = pods["metric"]["selector"]["matchLabels"]
    metrics.INFLIGHT_CALLS.labels(**selector)  # ValueError unless these are its label names
    assert selector["grpc_service"] == ROLE_SERVICES[role]
    assert "cpu" in [m["resource"]["name"] for m in hpa["spec"]["metrics"] if "resource" in m]
    adapter = one(KUBERNETES / "examples" / "prometheus-adapter-config.yaml", "ConfigMap")
    (rule,) = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert rule["seriesQuery"].startswith(gauge.name + "{")
    assert rule["name"]["as"] == gauge.name
    # The manifest sets no replica count: it would undo the autoscaler's on every apply.
    assert "replicas" not in deployment()["spec"]
    scaled_patch = load(KUBERNETES / "overlays" / "scaled" / "deployment-patch.yaml")[0]
    assert "replicas" not in scaled_patch["spec"]


def test_embedded_mode_never_runs_two_owners_of_one_shard() -> None:
    overlay = KUBERNETES / "overlays" / "embedded"
    patch = load(overlay / "deployment-patch.yaml")[0]["spec"]
    assert patch["replicas"] == 1
    assert patch["strategy"] == {"type": "Recreate"}  # the old pod is gone first
    claim = one(overlay / "persistentvolumeclaim.yaml", "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOncePod"]
    (data,) = [v for v in patch["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    resources = one(overlay / "kustomization.yaml", "Kustomization")["resources"]
    assert not any("horizontalpodautoscaler" in r for r in resources)


def test_compose_references_resolve() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith((".", "/")) or source in compose["volumes"], source
    # Qdrant reports usage to its makers unless told not to.
    assert services["qdrant"]["environment"]["QDRANT__TELEMETRY_DISABLED"] == "true"
    assert services["qdrant"]["image"] == "qdrant/qdrant:v1.18.3"
    # The image's own health check command.
    assert services["groundwire"]["healthcheck"]["test"][-3:] == [
        "python",
        "-m",
        "groundwire.server.healthcheck",
    ]


def test_the_default_image_is_the_small_one() -> None:
    stages = re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert stages[-1] == "remote" and "local" in stages
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") + 1 :]  # an allow-list: everything else stays out
