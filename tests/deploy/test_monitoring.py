"""Alert rules, ServiceMonitor and NetworkPolicies of deploy/, and every Kubernetes object
against the Kubernetes API's schemas.

The rules go through the real ``promtool`` (``check rules``, then ``test rules`` with
tests/deploy/alerts.test.yaml); promtool is Debian's, taken from the ``prometheus``
package here when it is not installed (only the binary: no daemon is installed or started).
The schemas are those the ``kubernetes-validate`` package ships, offline.  The Prometheus
Operator's CRDs (ServiceMonitor, PrometheusRule) have no schema there: promtool checks the
rules, and the tests below the ServiceMonitor's selection.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.test_deploy import DEPLOY, _find, _registered_series, _yaml_docs

Doc = dict[str, Any]
HERE = Path(__file__).resolve().parent
MONITORING = DEPLOY / "k8s" / "monitoring.yaml"
# The Kubernetes versions the manifests must be valid for: the oldest still served by the
# big providers and the newest the schema package knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule"})
PROMETHEUS_SERIES_LABELS = frozenset({"job", "instance", "namespace", "pod", "le", "pid"})


# -- promtool --------------------------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cadenza-tests" / "prometheus-deb"


def _extract_promtool() -> Path | None:
    """promtool out of Debian's ``prometheus`` package, unpacked (not installed) into a
    cache folder; None where apt cannot get it."""
    target = _cache_dir()
    promtool = target / "usr" / "bin" / "promtool"
    if promtool.is_file():
        return promtool
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return None
    with tempfile.TemporaryDirectory() as download:
        for attempt in range(2):
            got = subprocess.run(
                ["apt-get", "download", "-qq", "prometheus"],
                cwd=download,
                capture_output=True,
                timeout=300,
                check=False,
            )
            if got.returncode == 0 or attempt == 1:
                break
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
        packages = list(Path(download).glob("prometheus_*.deb"))
        if got.returncode != 0 or not packages:
            return None
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(packages[0]), str(target)], check=True)
    return promtool if promtool.is_file() else None


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or _extract_promtool()
    if found is None:
        pytest.skip("promtool: not installed, and Debian's prometheus package is unreachable")
    return str(found)


@pytest.fixture(scope="module")
def rules_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's groups as a plain rules file, beside the promtool test cases."""
    folder = tmp_path_factory.mktemp("rules")
    (folder / "cadenza-rules.yaml").write_text(
        yaml.safe_dump(_find(_yaml_docs(MONITORING), "PrometheusRule", "cadenza-origin")["spec"]),
        encoding="utf-8",
    )
    shutil.copyfile(HERE / "alerts.test.yaml", folder / "alerts.test.yaml")
    return folder


def _rules() -> list[Doc]:
    spec = _find(_yaml_docs(MONITORING), "PrometheusRule", "cadenza-origin")["spec"]
    return [rule for group in spec["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules(promtool: str, rules_folder: Path) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_folder / "cadenza-rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass(promtool: str, rules_folder: Path) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yaml"],
        cwd=rules_folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_fail_on_a_broken_rule(promtool: str, rules_folder: Path) -> None:
    """The cases can fail: with the 5xx threshold raised, the 5xx case must."""
    broken = rules_folder / "broken"
    broken.mkdir()
    rules = (rules_folder / "cadenza-rules.yaml").read_text(encoding="utf-8")
    assert "> 0.02" in rules
    (broken / "cadenza-rules.yaml").write_text(rules.replace("> 0.02", "> 0.2"), encoding="utf-8")
    shutil.copyfile(rules_folder / "alerts.test.yaml", broken / "alerts.test.yaml")
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yaml"],
        cwd=broken,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "CadenzaOriginErrors" in result.stdout + result.stderr


def test_rules_name_only_exported_series_and_their_labels() -> None:
    series = _registered_series()
    for rule in _rules():
        expr = rule["expr"]
        names = set(re.findall(r"\b(?:cadenza|process)_[a-z0-9_]+", expr))
        assert names or re.search(r"\bup\{", expr), rule["alert"]
        available = set(PROMETHEUS_SERIES_LABELS)
        for name in names:
            assert name in series, f"{rule['alert']}: {name} is not exported"
            available |= series[name]
        for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            for label in re.split(r"\s*,\s*", grouping.strip()):
                assert label in available, f"{rule['alert']}: no label {label}"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


# -- ServiceMonitor and NetworkPolicies ------------------------------------------------


@pytest.fixture(scope="module")
def k8s_docs() -> list[Doc]:
    kustomization: Doc = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text("utf-8"))
    return [doc for entry in kustomization["resources"] for doc in _yaml_docs(DEPLOY / entry)]


def test_service_monitor_scrapes_the_origin_service(k8s_docs: list[Doc]) -> None:
    monitor = _find(k8s_docs, "ServiceMonitor", "cadenza-origin")["spec"]
    selected = [
        d
        for d in k8s_docs
        if d["kind"] == "Service"
        and monitor["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["cadenza-origin"]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
    # The rules' job label is the Service's name (the operator's default).
    assert all('job="cadenza-origin"' in r["expr"] for r in _rules() if "up{" in r["expr"])


def _pods(docs: list[Doc]) -> dict[str, Doc]:
    """Workload name -> pod template, for every workload."""
    kinds = ("Deployment", "Job")
    return {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] in kinds}


def _selects(selector: Doc, pod: Doc) -> bool:
    return bool(selector.get("matchLabels", {}).items() <= pod["metadata"]["labels"].items())


def _allowed(docs: list[Doc], source: str, target: str, port: int) -> bool:
    """Would the NetworkPolicies let pods of workload ``source`` reach ``target`` on
    ``port`` (same namespace)?  Isolated once any policy selects the target."""
    pods = _pods(docs)
    policies = [d["spec"] for d in docs if d["kind"] == "NetworkPolicy"]
    applying = [p for p in policies if _selects(p["podSelector"], pods[target])]
    assert applying, f"no policy selects {target}"
    for policy in applying:
        for rule in policy.get("ingress", []):
            peers = rule.get("from")
            sources_ok = peers is None or any(
                "podSelector" in peer
                and "namespaceSelector" not in peer
                and _selects(peer["podSelector"], pods[source])
                for peer in peers
            )
            ports = [
                _named_port(pods[target], p["port"]) for p in rule.get("ports", [{"port": port}])
            ]
            if sources_ok and port in ports:
                return True
    return False


def _named_port(pod: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c["ports"]}
    return int(named[port])


def test_network_policies_let_through_only_the_expected_paths(k8s_docs: list[Doc]) -> None:
    default_deny = _find(k8s_docs, "NetworkPolicy", "cadenza-default-deny-ingress")["spec"]
    assert default_deny["podSelector"] == {} and "ingress" not in default_deny
    assert _allowed(k8s_docs, "cadenza-edge", "cadenza-origin", 8080)
    assert _allowed(k8s_docs, "cadenza-origin", "cadenza-redis", 6379)
    assert not _allowed(k8s_docs, "cadenza-edge", "cadenza-redis", 6379)
    assert not _allowed(k8s_docs, "cadenza-package", "cadenza-origin", 8080)
    assert not _allowed(k8s_docs, "cadenza-redis", "cadenza-origin", 8080)
    # Prometheus, from its own namespace, reaches the origin's port.
    origin = _find(k8s_docs, "NetworkPolicy", "cadenza-origin")["spec"]
    peers = [peer for rule in origin["ingress"] for peer in rule["from"]]
    assert any("namespaceSelector" in peer for peer in peers)


def test_every_pod_is_under_a_policy(k8s_docs: list[Doc]) -> None:
    policies = [d["spec"] for d in k8s_docs if d["kind"] == "NetworkPolicy"]
    for name, pod in _pods(k8s_docs).items():
        assert any(_selects(p["podSelector"], pod) for p in policies), name


# -- schemas ---------------------------------------------------------------------------


def _built_or_listed(k8s_docs: list[Doc]) -> Iterator[Doc]:
    """What ``kubectl kustomize`` builds when kubectl is there, else the listed files."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        built = subprocess.run(
            [kubectl, "kustomize", str(DEPLOY)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        yield from (d for d in yaml.safe_load_all(built.stdout) if d)
    else:
        yield from k8s_docs


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_matches_the_kubernetes_schema(k8s_docs: list[Doc], version: str) -> None:
    checked = 0
    for doc in _built_or_listed(k8s_docs):
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= len([d for d in k8s_docs if d["kind"] not in CRD_KINDS])


def test_the_schema_check_catches_a_wrong_field(k8s_docs: list[Doc]) -> None:
    policy = _find(k8s_docs, "NetworkPolicy", "cadenza-origin")
    broken = {**policy, "spec": {**policy["spec"], "podSelectr": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
