"""deploy/ against the code it deploys.

Docker and Kubernetes cannot run on the development machine, so the Dockerfile, the compose
file and the Kubernetes manifests are checked here for what can be checked without them: every
file parses, the objects are well formed, and the image, ports, settings, probes, metric names
and the nginx edge configuration are the ones the code and its tests actually use.  The shell
script compose runs is run for real, against a stand-in ``aws``; the packaging Job's arguments
go through the real ``cadenza package`` parser.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from cadenza.cli import build_parser
from cadenza.origin.metrics import create_metrics
from cadenza.origin.settings import Settings, load_settings
from cadenza.packager.catalogue import read_catalogue, select_shard
from tests.nginx_edge import TEMPLATE as CDN_TEST_TEMPLATE

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
KUSTOMIZATION = DEPLOY / "kustomization.yaml"
DASHBOARD = DEPLOY / "grafana" / "cadenza.json"
SCRIPTS = DEPLOY / "scripts"

# The nginx image's entrypoint fills a template's ${NAME}s from the environment (its
# 20-envsubst-on-templates.sh); these variables steer it and are not placeholders.
NGINX_ENVSUBST = re.compile(r"NGINX_ENVSUBST_\w+")
# Labels Prometheus adds to every series it scrapes, and the histogram bucket label.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "le"})

Doc = dict[str, Any]


# -- loading ---------------------------------------------------------------------------


def _yaml_docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


@pytest.fixture(scope="module")
def compose() -> Doc:
    data: Doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def services(compose: Doc) -> dict[str, Doc]:
    result: dict[str, Doc] = compose["services"]
    return result


@pytest.fixture(scope="module")
def kustomization() -> Doc:
    data: Doc = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def k8s(kustomization: Doc) -> list[Doc]:
    """Every object the kustomization lists, in order."""
    return [doc for entry in kustomization["resources"] for doc in _yaml_docs(DEPLOY / entry)]


def _find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def _pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def _container(workload: Doc, name: str) -> Doc:
    spec = _pod_spec(workload)
    everything = spec.get("initContainers", []) + spec["containers"]
    matches: list[Doc] = [c for c in everything if c["name"] == name]
    assert len(matches) == 1, f"no single container {name} in {workload['metadata']['name']}"
    return matches[0]


def _workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def _containers(workload: Doc) -> list[Doc]:
    spec = _pod_spec(workload)
    containers: list[Doc] = spec.get("initContainers", []) + spec["containers"]
    return containers


def _env(container: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _container_port(container: Doc, port: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if isinstance(port, str):
        assert port in ports, f"{container['name']} has no port named {port}"
        return int(ports[port])
    assert port in ports.values(), f"{container['name']} does not expose {port}"
    return port


def _generated_files(kustomization: Doc) -> dict[str, dict[str, Path]]:
    """configMapGenerator: ConfigMap name -> {key: source file}."""
    result: dict[str, dict[str, Path]] = {}
    for generator in kustomization.get("configMapGenerator", []):
        files: dict[str, Path] = {}
        for entry in generator.get("files", []):
            key, _, source = entry.rpartition("=")
            files[key or Path(source).name] = DEPLOY / source
        result[generator["name"]] = files
    return result


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def json(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} is not in exec (JSON) form"
        return [str(v) for v in value]


def _dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in _dockerfile():
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.args):
                name, sep, value = item.partition("=")
                assert sep, f"ENV {item}: use the NAME=value form"
                env[name] = value
    return env


def _dockerfile_user() -> tuple[int, int]:
    users = [i.args for i in _dockerfile() if i.keyword == "USER"]
    assert users, "the Dockerfile never leaves root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and group.isdigit(), (
        "USER must be numeric (uid:gid), or Kubernetes' runAsNonRoot cannot verify it"
    )
    return int(user), int(group)


class _RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers which variables were looked up."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _setting_variables() -> set[str]:
    """The environment variables ``load_settings`` reads: asked of the code, not listed here."""
    env = _RecordingEnv()
    load_settings({"root": "/srv"}, env=env)
    assert any(name.startswith("CADENZA_") for name in env.asked)
    return env.asked


def _default_port() -> int:
    return load_settings({"root": "/srv"}, env={}).port


def _compose_port(mapping: str) -> tuple[str, int, int]:
    """``127.0.0.1:8080:8080`` -> (host address, host port, container port)."""
    parts = mapping.split(":")
    assert len(parts) == 3, f"{mapping}: publish as ADDRESS:HOST_PORT:CONTAINER_PORT"
    return parts[0], int(parts[1]), int(parts[2])


def _named_volumes(path: Path) -> set[str]:
    """The named volumes a compose file declares."""
    data: Doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return set(data.get("volumes") or {})


def _placeholders() -> set[str]:
    return set(re.findall(r"\$\{(\w+)\}", CDN_TEST_TEMPLATE.read_text(encoding="utf-8")))


# -- every file ------------------------------------------------------------------------

YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def test_deploy_has_yaml_files() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {"compose.yaml", "kustomization.yaml", "k8s/origin.yaml"} <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_parses_into_mappings(path: Path) -> None:
    docs = _yaml_docs(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in docs)


def test_dashboard_is_json() -> None:
    assert isinstance(json.loads(DASHBOARD.read_text(encoding="utf-8")), dict)


# -- Kubernetes: the objects -----------------------------------------------------------

EXPECTED_OBJECTS = {
    ("Namespace", "cadenza"),
    ("ConfigMap", "cadenza-origin"),
    ("Secret", "cadenza-secrets"),
    ("Deployment", "cadenza-origin"),
    ("Service", "cadenza-origin"),
    ("PodDisruptionBudget", "cadenza-origin"),
    ("HorizontalPodAutoscaler", "cadenza-origin"),
    ("Deployment", "cadenza-redis"),
    ("Service", "cadenza-redis"),
    ("Deployment", "cadenza-edge"),
    ("Service", "cadenza-edge"),
    ("Job", "cadenza-package"),
    ("NetworkPolicy", "cadenza-default-deny-ingress"),
    ("NetworkPolicy", "cadenza-origin"),
    ("NetworkPolicy", "cadenza-redis"),
    ("NetworkPolicy", "cadenza-edge"),
    ("ServiceMonitor", "cadenza-origin"),
    ("PrometheusRule", "cadenza-origin"),
}


def test_kustomization_lists_every_manifest_in_k8s(kustomization: Doc) -> None:
    listed = {DEPLOY / entry for entry in kustomization["resources"]}
    on_disk = {*DEPLOY.joinpath("k8s").glob("*.yaml"), *DEPLOY.joinpath("k8s").glob("*.yml")}
    assert listed == on_disk
    assert kustomization["namespace"] == "cadenza"


def test_every_object_has_api_version_kind_and_name(k8s: list[Doc]) -> None:
    for doc in k8s:
        assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], doc
        assert isinstance(doc.get("kind"), str) and doc["kind"], doc
        name = doc.get("metadata", {}).get("name")
        assert isinstance(name, str) and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), doc
    names = [(d["kind"], d["metadata"]["name"]) for d in k8s]
    assert len(names) == len(set(names)), "duplicate objects"


def test_every_expected_object_is_there(k8s: list[Doc]) -> None:
    present = {(d["kind"], d["metadata"]["name"]) for d in k8s}
    assert present >= EXPECTED_OBJECTS, EXPECTED_OBJECTS - present
    versions = {d["kind"]: d["apiVersion"] for d in k8s}
    assert versions["Deployment"] == "apps/v1"
    assert versions["Job"] == "batch/v1"
    assert versions["PodDisruptionBudget"] == "policy/v1"
    assert versions["HorizontalPodAutoscaler"] == "autoscaling/v2"


def test_configmap_values_are_strings(k8s: list[Doc]) -> None:
    """Kubernetes refuses a ConfigMap whose data has a bare number or boolean in it."""
    for doc in k8s:
        if doc["kind"] == "ConfigMap":
            for key, value in doc.get("data", {}).items():
                assert isinstance(value, str), f"{doc['metadata']['name']}.{key} = {value!r}"
        if doc["kind"] == "Secret":
            for key, value in doc.get("stringData", {}).items():
                assert isinstance(value, str), f"{doc['metadata']['name']}.{key} = {value!r}"


def test_every_referenced_configmap_and_secret_exists(k8s: list[Doc], kustomization: Doc) -> None:
    configmaps = {d["metadata"]["name"] for d in k8s if d["kind"] == "ConfigMap"}
    configmaps |= set(_generated_files(kustomization))
    secrets = {d["metadata"]["name"] for d in k8s if d["kind"] == "Secret"}
    for workload in _workloads(k8s):
        for volume in _pod_spec(workload).get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, volume
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, volume
        for container in _containers(workload):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps, source
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, source
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"] for v in _pod_spec(workload).get("volumes", [])}
            assert mounts <= volumes, f"{container['name']} mounts a volume that is not defined"


def test_generated_configmaps_come_from_files_that_exist(kustomization: Doc) -> None:
    for name, files in _generated_files(kustomization).items():
        assert files, name
        for source in files.values():
            assert source.is_file(), f"{name}: {source} is missing"


def test_services_and_budgets_select_their_pods(k8s: list[Doc]) -> None:
    deployments = [d for d in k8s if d["kind"] == "Deployment"]
    for doc in k8s:
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
        elif doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]["matchLabels"]
        else:
            continue
        selected = [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert [d["metadata"]["name"] for d in selected] == [doc["metadata"]["name"]], doc
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_every_container_has_resource_requests_and_limits(k8s: list[Doc]) -> None:
    for workload in _workloads(k8s):
        for container in _containers(workload):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (
                    f"{workload['metadata']['name']}/{container['name']} lacks {bound}"
                )


def test_every_pod_meets_the_restricted_pod_security_standard(k8s: list[Doc]) -> None:
    namespace = _find(k8s, "Namespace", "cadenza")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in _workloads(k8s):
        pod = _pod_spec(workload)
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, workload["metadata"]["name"]
        assert context["runAsUser"] > 0
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod.get("hostNetwork") is not True
        for container in _containers(workload):
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False, container["name"]
            assert own["capabilities"]["drop"] == ["ALL"], container["name"]
            assert own.get("privileged") is not True


# -- Kubernetes: the origin ------------------------------------------------------------


def test_origin_probes_ask_readyz_and_healthz_on_the_serving_port(k8s: list[Doc]) -> None:
    origin = _container(_find(k8s, "Deployment", "cadenza-origin"), "origin")
    port = _default_port()
    readiness = origin["readinessProbe"]["httpGet"]
    liveness = origin["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"
    assert _container_port(origin, readiness["port"]) == port
    assert _container_port(origin, liveness["port"]) == port
    if "startupProbe" in origin:
        assert origin["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_one_port_everywhere(k8s: list[Doc], services: dict[str, Doc]) -> None:
    """The code's default port is the container's, the Service's target, the port compose
    publishes, the Dockerfile's EXPOSE and ENV, the ConfigMap's and Prometheus'."""
    port = _default_port()
    deployment = _find(k8s, "Deployment", "cadenza-origin")
    origin = _container(deployment, "origin")
    assert [p["containerPort"] for p in origin["ports"]] == [port]

    service = _find(k8s, "Service", "cadenza-origin")
    (service_port,) = service["spec"]["ports"]
    assert _container_port(origin, service_port["targetPort"]) == port

    config = _find(k8s, "ConfigMap", "cadenza-origin")["data"]
    assert int(config["CADENZA_PORT"]) == port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == "/metrics"

    exposed = [i.args for i in _dockerfile() if i.keyword == "EXPOSE"]
    assert exposed == [str(port)]
    assert int(_dockerfile_env()["CADENZA_PORT"]) == port

    ports = [_compose_port(p) for p in services["origin"]["ports"]]
    assert [container for _, _, container in ports] == [port]
    assert int(services["origin"]["environment"]["CADENZA_PORT"]) == port


def test_origin_takes_its_settings_from_the_configmap_and_secret(k8s: list[Doc]) -> None:
    origin = _container(_find(k8s, "Deployment", "cadenza-origin"), "origin")
    sources = origin["envFrom"]
    assert {"configMapRef": {"name": "cadenza-origin"}} in sources
    assert {"secretRef": {"name": "cadenza-secrets"}} in sources
    assert origin["image"].split(":")[0] == "cadenza"
    assert origin.get("args", ["serve"])[0] == "serve"
    config = _find(k8s, "ConfigMap", "cadenza-origin")["data"]
    assert config["CADENZA_HOST"] == "0.0.0.0"
    assert config["CADENZA_ROOT"].startswith("s3://")


def test_origin_runs_as_the_dockerfile_user(k8s: list[Doc]) -> None:
    uid, gid = _dockerfile_user()
    context = _pod_spec(_find(k8s, "Deployment", "cadenza-origin"))["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
    job = _pod_spec(_find(k8s, "Job", "cadenza-package"))["securityContext"]
    assert (job["runAsUser"], job["runAsGroup"]) == (uid, gid)


def test_hpa_scales_the_origin_deployment_on_cpu(k8s: list[Doc]) -> None:
    hpa = _find(k8s, "HorizontalPodAutoscaler", "cadenza-origin")["spec"]
    deployment = _find(k8s, "Deployment", "cadenza-origin")
    target = hpa["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        "cadenza-origin",
    )
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    # Utilization is a share of the request: without one the HPA has nothing to divide by.
    assert "cpu" in _container(deployment, "origin")["resources"]["requests"]
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    # An applied replica count would fight the HPA on every apply.
    assert "replicas" not in deployment["spec"]
    budget = _find(k8s, "PodDisruptionBudget", "cadenza-origin")["spec"]
    assert 0 < budget["minAvailable"] < hpa["minReplicas"], "drains must be able to proceed"


def test_shutdown_drains_within_the_grace_period(k8s: list[Doc]) -> None:
    deployment = _find(k8s, "Deployment", "cadenza-origin")
    origin = _container(deployment, "origin")
    pause = origin["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    drain = float(_find(k8s, "ConfigMap", "cadenza-origin")["data"]["CADENZA_SHUTDOWN_TIMEOUT_S"])
    grace = _pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert float(pause[1]) + drain < grace


# -- settings --------------------------------------------------------------------------


def _settings_sources(k8s: list[Doc], services: dict[str, Doc]) -> dict[str, dict[str, str]]:
    sources = {
        "compose origin": {k: str(v) for k, v in services["origin"]["environment"].items()},
        "configmap cadenza-origin": _find(k8s, "ConfigMap", "cadenza-origin")["data"],
        "secret cadenza-secrets": _find(k8s, "Secret", "cadenza-secrets")["stringData"],
        "Dockerfile ENV": _dockerfile_env(),
    }
    for workload in _workloads(k8s):
        for container in _containers(workload):
            sources[f"{workload['metadata']['name']}/{container['name']} env"] = _env(container)
    for name, service in services.items():
        environment = service.get("environment", {})
        sources.setdefault(f"compose {name}", {k: str(v) for k, v in environment.items()})
    return sources


def test_every_cadenza_variable_is_a_real_setting(k8s: list[Doc], services: dict[str, Doc]) -> None:
    real = _setting_variables()
    for source, env in _settings_sources(k8s, services).items():
        named = {name for name in env if name.startswith("CADENZA_")}
        assert named <= real, f"{source}: {sorted(named - real)} are not settings"


def test_every_settings_source_loads(k8s: list[Doc], services: dict[str, Doc]) -> None:
    """The values parse as the code parses them: a bad number or URL fails here, not at start."""
    for source, env in _settings_sources(k8s, services).items():
        settings = load_settings({}, env={"CADENZA_ROOT": "/srv", **env})
        assert isinstance(settings, Settings), source
    # The origin's whole environment, as the pod sees it.
    merged = {
        **_dockerfile_env(),
        **_find(k8s, "ConfigMap", "cadenza-origin")["data"],
        **_find(k8s, "Secret", "cadenza-secrets")["stringData"],
    }
    settings = load_settings({}, env=merged)
    assert settings.is_s3
    assert settings.redis_url is not None
    assert settings.host == "0.0.0.0"


def test_redis_urls_name_the_redis_service(k8s: list[Doc], services: dict[str, Doc]) -> None:
    url = urlsplit(_find(k8s, "Secret", "cadenza-secrets")["stringData"]["CADENZA_REDIS_URL"])
    service = _find(k8s, "Service", "cadenza-redis")
    (port,) = service["spec"]["ports"]
    assert (url.scheme, url.hostname, url.port) == ("redis", "cadenza-redis", port["port"])
    redis = _container(_find(k8s, "Deployment", "cadenza-redis"), "redis")
    assert _container_port(redis, port["targetPort"]) == 6379

    url = urlsplit(services["origin"]["environment"]["CADENZA_REDIS_URL"])
    assert url.hostname in services
    assert url.hostname == "redis"
    assert url.port == 6379
    assert str(url.port) in services["redis"]["expose"]
    assert "redis" in services["origin"]["depends_on"]


def test_secret_holds_placeholders_only(k8s: list[Doc]) -> None:
    secret = _find(k8s, "Secret", "cadenza-secrets")
    assert "data" not in secret, "base64 data hides what is committed: use stringData"
    values = secret["stringData"]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert values[name].startswith("REPLACE-ME"), name
    assert not re.search(r"AKIA[0-9A-Z]{16}", json.dumps(values))


# -- the image -------------------------------------------------------------------------


def _dockerfile_args() -> dict[str, str]:
    return {
        i.args.partition("=")[0]: i.args.partition("=")[2]
        for i in _dockerfile()
        if i.keyword == "ARG"
    }


# A tag pinned by the sha256 digest of what it named when it was pinned.
PINNED_IMAGE = re.compile(r"(?P<repository>[a-z0-9./-]+):(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}")


def test_dockerfile_builds_a_wheel_then_installs_it_in_slim_python() -> None:
    instructions = _dockerfile()
    stages = [i.args.split() for i in instructions if i.keyword == "FROM"]
    assert [s[-1] for s in stages] == ["players", "build", "runtime"]
    assert [s[0] for s in stages] == ["${NODE_IMAGE}", "${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    args = _dockerfile_args()
    base = PINNED_IMAGE.fullmatch(args["PYTHON_IMAGE"])
    assert base is not None, "the base image must be pinned by digest"
    assert base["repository"] == "python" and base["tag"].endswith("-slim"), base
    node = PINNED_IMAGE.fullmatch(args["NODE_IMAGE"])
    assert node is not None and node["repository"] == "node", args["NODE_IMAGE"]
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert "npm ci" in runs, "the players come from package-lock.json"
    assert "pip wheel --no-deps --no-build-isolation" in runs
    assert "pip install --no-index" in runs, "the runtime installs only the built wheels"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    python_floor = pyproject["project"]["requires-python"].removeprefix(">=")
    assert base["tag"].startswith(python_floor)


def test_dockerfile_installs_only_locked_hashed_dependencies() -> None:
    runs = [i.args for i in _dockerfile() if i.keyword == "RUN"]
    pip_runs = [part.strip() for run in runs for part in run.split("&&") if "pip " in part]
    for command in pip_runs:
        if "cadenza-*.whl" in command or "pip wheel" in command:
            assert "--no-deps" in command, command  # cadenza alone: its deps are locked
            continue
        assert "--require-hashes" in command, command
        assert re.search(r"-r \S*deploy/requirements(-build)?\.lock", command) or (
            "-r /tmp/requirements.lock" in command
        ), command
    assert any("deploy/requirements.lock" in r for r in runs)
    assert any("deploy/requirements-build.lock" in r for r in runs)


def test_dockerfile_runs_cadenza_serve_unprivileged_with_a_healthcheck() -> None:
    instructions = {i.keyword: i for i in _dockerfile()}  # the last of each
    uid, gid = _dockerfile_user()
    assert uid >= 1000 and gid >= 1000
    assert instructions["ENTRYPOINT"].json() == ["cadenza"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "cadenza" in pyproject["project"]["scripts"]
    command = instructions["CMD"].json()
    assert command[0] == "serve"
    env = _dockerfile_env()
    host = command[command.index("--host") + 1] if "--host" in command else env["CADENZA_HOST"]
    assert host == "0.0.0.0", "inside a container the origin must listen on every interface"
    healthcheck = instructions["HEALTHCHECK"].args
    assert "/healthz" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck, "slim has neither"
    assert "python" in healthcheck
    assert set(env) - {"CADENZA_HOST", "CADENZA_PORT", "CADENZA_ROOT"} <= {
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
    }


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression over slash-separated paths."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            close = pattern.index("]", i)
            out += pattern[i : close + 1]
            i = close + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def _dockerignored(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern that matches the path, or a folder above it, decides;
    a ``!`` pattern lets the path through again."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_sends_what_pip_install_reads_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["tool"]["setuptools"]["packages"]["find"]["include"][0] == "cadenza"
    # cadenza/ and the top-level folders its symlinks name (cadenza/origin -> ../origin ...)
    parts = sorted(
        (ROOT / "cadenza" / link.readlink()).resolve().relative_to(ROOT).as_posix()
        for link in (ROOT / "cadenza").iterdir()
        if link.is_symlink()
    )
    packages = ["cadenza", *parts]
    needed = [
        "pyproject.toml",
        "setup.py",
        pyproject["project"]["readme"],
        "origin/static/player.html",
        "origin/static/players.json",
        "deploy/requirements.lock",
        "deploy/requirements-build.lock",
        "package.json",
        "package-lock.json",
    ]
    for package in packages:
        needed += [
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / package).rglob("*")
            if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts
        ]
    for path in needed:
        assert not _dockerignored(patterns, path), f"{path} would not reach the build"
    for path in (
        ".venv/bin/python",
        "node_modules/x.js",
        "tests/conftest.py",
        ".git/HEAD",
        "deploy/k8s/origin.yaml",
    ):
        assert _dockerignored(patterns, path), f"{path} would be sent to the build"
    assert _dockerignored(patterns, "origin/__pycache__/app.cpython-311.pyc")

    copied = {
        i.args.split()[0]
        for i in _dockerfile()
        if i.keyword == "COPY" and not i.args.startswith("--from")
    }
    for package in packages:
        assert package in copied, f"the Dockerfile does not COPY {package}/"


# -- compose ---------------------------------------------------------------------------


def test_compose_has_the_whole_stack(services: dict[str, Doc]) -> None:
    assert {"origin", "redis", "edge", "s3"} <= set(services)
    assert "moto" in services["s3"]["image"]


def test_compose_publishes_on_loopback_only(services: dict[str, Doc]) -> None:
    for name, service in services.items():
        for mapping in service.get("ports", []):
            address, _, _ = _compose_port(str(mapping))
            assert address == "127.0.0.1", f"{name} publishes {mapping} beyond this machine"


def test_compose_waits_for_health_and_completion(services: dict[str, Doc]) -> None:
    def checked(service: Doc) -> bool:
        return "test" in service.get("healthcheck", {}) and not service["healthcheck"].get(
            "disable"
        )

    for name, service in services.items():
        one_shot = service.get("restart") == "no"
        if not one_shot:
            assert checked(service), f"{name} runs for ever without a healthcheck"
        for dependency, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition == "service_healthy":
                assert checked(services[dependency]), f"{dependency} has no healthcheck"
            else:
                assert condition == "service_completed_successfully", (name, condition)
                assert services[dependency].get("restart") == "no", dependency
    origin_check = " ".join(services["origin"]["healthcheck"]["test"])
    assert f"127.0.0.1:{_default_port()}/readyz" in origin_check
    assert services["edge"]["depends_on"]["origin"]["condition"] == "service_healthy"


def test_compose_origin_serves_what_package_publishes_to_moto(services: dict[str, Doc]) -> None:
    origin = services["origin"]
    assert origin["image"].split(":")[0] == "cadenza"
    assert origin["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE.parent / origin["build"]["context"] / "deploy" / "Dockerfile").samefile(
        DOCKERFILE
    )
    assert origin["command"][0] == "serve"
    env = origin["environment"]
    root = env["CADENZA_ROOT"]
    assert root.startswith("s3://")
    endpoint = urlsplit(env["AWS_ENDPOINT_URL"])
    assert endpoint.hostname == "s3"
    assert str(endpoint.port) in services["s3"]["expose"]

    # package publishes through the packager (publish.sh: cadenza package --out s3://),
    # into the origin's root, on the same S3, before the origin starts.
    package = services["package"]
    assert package["image"] == origin["image"]
    assert "publish" not in services, "no second uploader beside the packager"
    command = " ".join(package["command"])
    assert f"exec sh /scripts/publish.sh /catalogue {root}" in command
    assert f"create_bucket(Bucket='{urlsplit(root).hostname}')" in command
    assert package["environment"]["AWS_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in package["volumes"]}
    assert (COMPOSE.parent / mounts["/scripts"] / "publish.sh").samefile(SCRIPTS / "publish.sh")
    assert origin["depends_on"]["package"]["condition"] == "service_completed_successfully"


# -- one image, one set of third-party images ------------------------------------------


def test_compose_and_kubernetes_run_the_same_images(
    k8s: list[Doc], services: dict[str, Doc], kustomization: Doc
) -> None:
    cadenza = services["origin"]["image"]
    repository = cadenza.split(":")[0]
    k8s_images = {c["image"] for w in _workloads(k8s) for c in _containers(w)}
    ours = {image for image in k8s_images if image.split(":")[0] == repository}
    assert ours == {cadenza}
    (override,) = [i for i in kustomization.get("images", []) if i["name"] == repository]
    assert override.get("newTag", cadenza.split(":")[1]) == cadenza.split(":")[1]
    assert override.get("newName", repository) == repository
    # The tag names a version, the project's: a rollout says what it runs.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert override["newTag"] == cadenza.split(":")[1] == pyproject["project"]["version"]
    for workload in _workloads(k8s):
        for container in _containers(workload):
            assert not container["image"].endswith(":latest"), container["name"]
            # A version tag is immutable: pull it once per node.
            assert container["imagePullPolicy"] == "IfNotPresent", container["name"]

    compose_images = {s["image"] for s in services.values()}
    assert k8s_images <= compose_images, "Kubernetes runs an image compose never tried"
    assert (
        _container(_find(k8s, "Deployment", "cadenza-redis"), "redis")["image"]
        == (services["redis"]["image"])
    )
    assert (
        _container(_find(k8s, "Deployment", "cadenza-edge"), "nginx")["image"]
        == (services["edge"]["image"])
    )
    redis_args = _container(_find(k8s, "Deployment", "cadenza-redis"), "redis")["args"]
    assert redis_args == services["redis"]["command"]


# -- the nginx edge --------------------------------------------------------------------


def _edge_substitute(text: str, env: Mapping[str, str]) -> str:
    """The nginx image's template rule (docker-nginx 20-envsubst-on-templates.sh): a
    ``$NAME`` or ``${NAME}`` whose name matches NGINX_ENVSUBST_FILTER and is set in the
    environment becomes its value; everything else, nginx's own ``$uri`` included, stays."""
    pattern = re.compile(r"\$(\{)?((?:" + env.get("NGINX_ENVSUBST_FILTER", "") + r")\w*)(?(1)\})")
    return pattern.sub(lambda m: env.get(m.group(2), m.group(0)), text)


def _edge_setups(k8s: list[Doc], services: dict[str, Doc]) -> dict[str, tuple[dict[str, str], str]]:
    """(environment, shell command) of the edge container, in compose and in Kubernetes."""
    compose_edge = services["edge"]
    compose_env = {k: str(v) for k, v in compose_edge["environment"].items()}
    compose_command = " ".join(compose_edge["command"]).replace("$$", "$")
    nginx = _container(_find(k8s, "Deployment", "cadenza-edge"), "nginx")
    return {
        "compose": (compose_env, compose_command),
        "k8s": (_env(nginx), " ".join(nginx["args"])),
    }


def test_the_edge_template_is_the_one_the_cdn_test_runs(
    services: dict[str, Doc], kustomization: Doc, k8s: list[Doc]
) -> None:
    shipped = DEPLOY / "nginx" / "edge.conf.template"
    assert CDN_TEST_TEMPLATE.samefile(shipped)
    # compose mounts it...
    edge = services["edge"]
    env = edge["environment"]
    (mount,) = [v for v in edge["volumes"] if "edge.conf.template" in v]
    source, target = mount.split(":")[:2]
    assert (COMPOSE.parent / source).samefile(CDN_TEST_TEMPLATE)
    assert Path(target).parent == Path(env["NGINX_ENVSUBST_TEMPLATE_DIR"])
    # ...and Kubernetes gets it through the kustomization's ConfigMap generator.
    nginx = _container(_find(k8s, "Deployment", "cadenza-edge"), "nginx")
    (template_mount,) = [m for m in nginx["volumeMounts"] if m["name"] == "template"]
    (volume,) = [
        v
        for v in _pod_spec(_find(k8s, "Deployment", "cadenza-edge"))["volumes"]
        if v["name"] == "template"
    ]
    files = _generated_files(kustomization)[volume["configMap"]["name"]]
    assert files[template_mount["subPath"]].samefile(CDN_TEST_TEMPLATE)
    assert Path(template_mount["mountPath"]).parent == Path(
        _env(nginx)["NGINX_ENVSUBST_TEMPLATE_DIR"]
    )


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_the_edge_fills_exactly_the_template_placeholders(
    where: str, k8s: list[Doc], services: dict[str, Doc]
) -> None:
    env, command = _edge_setups(k8s, services)[where]
    placeholders = _placeholders()
    assert placeholders == {"USER_DIRECTIVE", "PREFIX", "ORIGIN", "LISTEN"}
    assert set(env["NGINX_ENVSUBST_FILTER"].split("|")) == placeholders
    assert {k for k in env if not NGINX_ENVSUBST.fullmatch(k)} == placeholders

    template = CDN_TEST_TEMPLATE.read_text(encoding="utf-8")
    rendered = _edge_substitute(template, env)
    assert "${" not in rendered
    nginx_variables = set(re.findall(r"\$[a-z_]+", template))
    assert nginx_variables >= {"$uri", "$host", "$upstream_cache_status"}
    for variable in nginx_variables:
        assert rendered.count(variable) == template.count(variable), variable
    # The same result from the older entrypoint, which ran envsubst over the set names.
    names = [n for n in env if re.search(env["NGINX_ENVSUBST_FILTER"], n)]
    older = template
    for name in names:
        older = older.replace("${" + name + "}", env[name])
    assert older == rendered

    # nginx runs the file the entrypoint writes.
    output = Path(env["NGINX_ENVSUBST_OUTPUT_DIR"]) / "edge.conf"
    assert f"nginx -c {output} " in command
    assert command.startswith('ln -sf /dev/stdout "$PREFIX/access.log"')
    assert "exec /docker-entrypoint.sh nginx " in command, "the entrypoint renders templates"


def test_the_edge_is_the_same_in_compose_and_kubernetes(
    k8s: list[Doc], services: dict[str, Doc]
) -> None:
    setups = _edge_setups(k8s, services)
    compose_env, compose_command = setups["compose"]
    k8s_env, k8s_command = setups["k8s"]
    assert compose_command == k8s_command
    different = {"ORIGIN"}  # the origin's address differs: a compose service, a k8s Service
    assert {k: v for k, v in compose_env.items() if k not in different} == {
        k: v for k, v in k8s_env.items() if k not in different
    }


def test_the_edge_proxies_to_the_origin_and_listens_where_it_is_reached(
    k8s: list[Doc], services: dict[str, Doc]
) -> None:
    setups = _edge_setups(k8s, services)
    compose_env, _ = setups["compose"]
    assert compose_env["ORIGIN"] == f"origin:{_default_port()}"
    (edge_port,) = [_compose_port(p) for p in services["edge"]["ports"]]
    assert edge_port[2] == int(compose_env["LISTEN"])

    k8s_env, _ = setups["k8s"]
    service = _find(k8s, "Service", "cadenza-origin")
    (origin_port,) = service["spec"]["ports"]
    assert k8s_env["ORIGIN"] == f"{service['metadata']['name']}:{origin_port['port']}"
    nginx = _container(_find(k8s, "Deployment", "cadenza-edge"), "nginx")
    edge_service = _find(k8s, "Service", "cadenza-edge")
    (port,) = edge_service["spec"]["ports"]
    assert _container_port(nginx, port["targetPort"]) == int(k8s_env["LISTEN"])
    for probe in ("readinessProbe", "livenessProbe"):
        # The edge serves stale objects while the origins are down: it must not go unready.
        assert "tcpSocket" in nginx[probe], probe
        assert _container_port(nginx, nginx[probe]["tcpSocket"]["port"]) == int(k8s_env["LISTEN"])


@pytest.mark.skipif(
    not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()), reason="no nginx"
)
def test_the_edge_config_as_rendered_for_kubernetes_passes_nginx_t(
    k8s: list[Doc], services: dict[str, Doc], tmp_path: Path
) -> None:
    env, _ = _edge_setups(k8s, services)["k8s"]
    # Only the paths and the upstream (nginx -t resolves it) are moved to this machine.
    env = {**env, "PREFIX": str(tmp_path), "ORIGIN": "127.0.0.1:9"}
    if os.geteuid() == 0:
        env["USER_DIRECTIVE"] = "user root;"
    config = tmp_path / "edge.conf"
    config.write_text(_edge_substitute(CDN_TEST_TEMPLATE.read_text(encoding="utf-8"), env))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# -- the packaging Job -----------------------------------------------------------------


def _package_argv(job: Doc, env: Mapping[str, str]) -> list[str]:
    """The package container's arguments as the kubelet expands them: $(NAME) from env."""
    args: list[str] = _container(job, "package")["args"]
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in args]


def _package_env(k8s: list[Doc], index: int) -> dict[str, str]:
    """What $(NAME) can name in the package container: its env and the ConfigMap it reads."""
    job = _find(k8s, "Job", "cadenza-package")
    package = _container(job, "package")
    assert {"configMapRef": {"name": "cadenza-origin"}} in package["envFrom"]
    config: dict[str, str] = _find(k8s, "ConfigMap", "cadenza-origin")["data"]
    return {**config, **_env(package), "JOB_COMPLETION_INDEX": str(index)}


def test_package_job_is_indexed_and_every_shard_is_taken(k8s: list[Doc]) -> None:
    job = _find(k8s, "Job", "cadenza-package")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert 1 <= spec["parallelism"] <= spec["completions"]
    assert _pod_spec(job)["restartPolicy"] == "Never"
    package = _container(job, "package")
    assert int(_env(package)["SHARDS"]) == spec["completions"]
    (index,) = [e for e in package["env"] if e["name"] == "JOB_COMPLETION_INDEX"]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    args = package["args"]
    assert args[args.index("--shard") + 1] == "$(JOB_COMPLETION_INDEX)/$(SHARDS)"


def test_package_job_runs_cadenza_package_into_the_origin_root(
    k8s: list[Doc], kustomization: Doc
) -> None:
    """One container, the cadenza image, whose arguments the real ``cadenza package``
    parser accepts: the mounted catalogue, this pod's shard, out to CADENZA_ROOT."""
    job = _find(k8s, "Job", "cadenza-package")
    assert [c["name"] for c in _containers(job)] == ["package"]
    package = _container(job, "package")
    assert package["image"].split(":")[0] == "cadenza"
    assert "command" not in package  # the image's ENTRYPOINT, cadenza
    assert {"secretRef": {"name": "cadenza-secrets"}} in package["envFrom"]
    env = _package_env(k8s, 3)
    argv = _package_argv(job, env)
    args = build_parser(argv).parse_args(argv)
    assert args.command == "package"
    assert args.out == env["CADENZA_ROOT"]
    assert args.shard == (3, job["spec"]["completions"])
    volumes = {v["name"]: v for v in _pod_spec(job)["volumes"]}
    catalogue = _generated_files(kustomization)[volumes["catalogue"]["configMap"]["name"]]
    (mount,) = [m for m in package["volumeMounts"] if m["name"] == "catalogue"]
    assert args.catalogue == [Path(mount["mountPath"]) / next(iter(catalogue))]
    # The root file system is read-only: staging must be on a writable volume.
    assert package["securityContext"]["readOnlyRootFilesystem"] is True
    writable = [m["mountPath"] for m in package["volumeMounts"] if not m.get("readOnly")]
    assert any(args.staging.is_relative_to(m) for m in writable)


def test_package_job_shards_deal_every_catalogue_entry_to_exactly_one_pod(
    k8s: list[Doc], kustomization: Doc, tmp_path: Path
) -> None:
    job = _find(k8s, "Job", "cadenza-package")
    shards = job["spec"]["completions"]
    volumes = {v["name"]: v for v in _pod_spec(job)["volumes"]}
    shipped = _generated_files(kustomization)[volumes["catalogue"]["configMap"]["name"]]
    (source,) = shipped.values()
    entries = read_catalogue(source)
    assert entries and all(e.source.startswith("s3://") for e in entries)
    catalogue = tmp_path / "catalogue.txt"
    catalogue.write_text(
        "# masters\n\n" + "\n".join(f"s3://masters/album {n // 3}/t{n}.flac" for n in range(40)),
        encoding="utf-8",
    )  # no newline at the end: the last entry must still count
    entries = read_catalogue(catalogue)
    taken: list[str] = []
    for index in range(shards):
        argv = _package_argv(job, _package_env(k8s, index))
        args = build_parser(argv).parse_args(argv)
        taken += [e.track_id for e in select_shard(entries, *args.shard)]
    assert sorted(taken) == sorted(e.track_id for e in entries)


# -- kustomize, when it is installed ---------------------------------------------------


def _kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.skipif(_kustomize() is None, reason="neither kustomize nor kubectl is installed")
def test_kustomize_builds_and_ships_the_template_verbatim() -> None:
    command = _kustomize()
    assert command is not None
    result = subprocess.run(
        [*command, str(DEPLOY)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} >= {
        o for o in EXPECTED_OBJECTS if o[0] != "ConfigMap"
    }
    assert all(
        d["metadata"].get("namespace") == "cadenza" for d in docs if d["kind"] != "Namespace"
    )
    (template,) = [
        d for d in docs if d["kind"] == "ConfigMap" and "edge.conf.template" in d.get("data", {})
    ]
    assert template["data"]["edge.conf.template"] == CDN_TEST_TEMPLATE.read_text(encoding="utf-8")
    edge = _find(docs, "Deployment", "cadenza-edge")
    volumes = {v["name"]: v for v in _pod_spec(edge)["volumes"]}
    assert volumes["template"]["configMap"]["name"] == template["metadata"]["name"]


# -- the Grafana dashboard -------------------------------------------------------------


def _registered_series() -> dict[str, set[str]]:
    """Series name -> label names, for every metric origin/metrics.py registers (build info
    and ``process_*`` too: they are on the same registry)."""
    metrics = create_metrics(shared_sessions=True)  # with Redis: every family there is
    labels: dict[str, set[str]] = {}
    for field in dataclasses.fields(metrics):
        value = getattr(metrics, field.name)
        if hasattr(value, "_labelnames"):
            labels[value._name] = set(value._labelnames)
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        names = {
            "counter": [f"{family.name}_total"],
            "gauge": [family.name],
            "histogram": [f"{family.name}_{s}" for s in ("bucket", "sum", "count")],
        }[family.type]
        seen = {label for sample in family.samples for label in sample.labels} - {"le"}
        for name in names:
            series[name] = labels.get(family.name, set()) | seen
    return series


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            queries.append(query["query"])
    return queries


def test_dashboard_queries_name_only_registered_metrics() -> None:
    series = _registered_series()
    assert "cadenza_requests_total" in series  # the reading of the registry works
    for query in _dashboard_queries():
        names = re.findall(r"\b(?:cadenza|process)_[a-z0-9_]+", query)
        assert names, query
        for name in names:
            assert name in series, f"{name} is not a series origin/metrics.py exports: {query}"


def test_dashboard_queries_use_only_labels_the_metrics_have() -> None:
    series = _registered_series()
    for query in _dashboard_queries():
        for name, selector in re.findall(r"\b(cadenza_[a-z0-9_]+)\{([^}]*)\}", query):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
                assert label in series[name] | TARGET_LABELS, f"{name} has no label {label}"
        available = set(TARGET_LABELS)
        for name in re.findall(r"\bcadenza_[a-z0-9_]+", query):
            available |= series[name]
        for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", query):
            for label in re.split(r"\s*,\s*", grouping.strip()):
                assert label in available, f"{label} in {query}"


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    text = "\n".join(_dashboard_queries())
    for needed in (
        "cadenza_sessions_active",
        "cadenza_session_qoe_bucket",
        "cadenza_bitrate_switches_total",
        "cadenza_buffer_starvations_total",
        'cadenza_requests_total{job=~"$job",cache="hit"}',
        "cadenza_redis_up",
        'status=~"5.."',
        "cadenza_response_bytes_total",
        "cadenza_fast_path_handovers_total",
        "cadenza_connections_refused_total",
        "cadenza_pathway_up",
        "process_resident_memory_bytes",
        "cadenza_build_info",
    ):
        assert needed in text, needed
    for quantile in ("0.5", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, route) (rate(" in text
        assert "cadenza_request_duration_seconds_bucket" in text


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert "[$__rate_interval]" in target["expr"] or "rate(" not in target["expr"]
