"""The Helm chart charts/hda-operator, rendered by a real `helm` (no cluster needed).

Each scenario in charts/hda-operator/ci/*-values.yaml (chart-testing's convention) flips one
values switch; tests/cluster/test_chart_cluster.py sends the same renderings to a real API
server with a server-side dry-run.

helm comes from the pinned build (`make binaries`, hack/build-binaries.sh); HDA_HELM or
HDA_BIN_DIR point elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hda.api.images import BUILTIN_VALKEY_IMAGE, IMAGE_REFERENCE_PATTERN

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hda-operator"
SCENARIOS = sorted(path.name.removesuffix("-values.yaml") for path in (CHART / "ci").glob("*.yaml"))
RELEASE = "hda-operator"
NAMESPACE = "hda-system"
CRD_NAME = "hyperdriveaccelerators.hda.shitops.dev"
CRD_SOURCE = ROOT / "crds" / f"{CRD_NAME}.yaml"
CRD_COPY = CHART / "files" / "crds" / f"{CRD_NAME}.yaml"
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
PROMETHEUS_RULE_API = "monitoring.coreos.com/v1/PrometheusRule"
POD_MONITOR_API = "monitoring.coreos.com/v1/PodMonitor"
STANDARD_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
}

# The operator's permissions, exactly. The operator's code is reconciled against this list;
# a change here is a reviewed change of what the operator may do.
CLUSTER_RULES = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {
        "apiGroups": [""],
        "resources": ["persistentvolumes"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]},
    {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["list", "watch"]},
]
CRUD = ["get", "list", "watch", "create", "patch", "delete"]
NAMESPACED_RULES = [
    {
        "apiGroups": ["hda.shitops.dev"],
        "resources": ["hyperdriveaccelerators"],
        "verbs": ["list", "watch", "patch"],
    },
    {
        "apiGroups": ["hda.shitops.dev"],
        "resources": ["hyperdriveaccelerators/status"],
        "verbs": ["patch"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["apps"], "resources": ["statefulsets", "deployments"], "verbs": CRUD},
    {"apiGroups": [""], "resources": ["services", "configmaps", "serviceaccounts"], "verbs": CRUD},
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["list", "watch"]},
    {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["get", "create"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "delete"]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": CRUD},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": CRUD},
]


def helm_binary() -> Path:
    """The pinned helm: $HDA_HELM, $HDA_BIN_DIR/helm, the newest build cache, or PATH."""
    candidates: list[Path] = []
    if os.environ.get("HDA_HELM"):
        candidates.append(Path(os.environ["HDA_HELM"]))
    if os.environ.get("HDA_BIN_DIR"):
        candidates.append(Path(os.environ["HDA_BIN_DIR"]) / "helm")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hda" / "bin"
    candidates.extend(
        sorted(cache.glob("*/helm"), key=lambda path: path.stat().st_mtime, reverse=True)
    )
    on_path = shutil.which("helm")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("helm not found: run `make binaries` (hack/build-binaries.sh) or set HDA_HELM")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    # No kubeconfig: rendering must not depend on a cluster.
    env = {**os.environ, "KUBECONFIG": os.devnull, "HELM_CACHE_HOME": "/tmp/hda-helm-cache"}
    return subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )


def template_args(
    *,
    scenario: str | None = None,
    values: Iterable[str] = (),
    api_versions: Iterable[str] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    chart: Path = CHART,
) -> list[str]:
    args = ["template", release, str(chart), "--namespace", namespace]
    if scenario is not None:
        args += ["--values", str(CHART / "ci" / f"{scenario}-values.yaml")]
    for value in values:
        args += ["--set", value]
    for api in api_versions:
        args += ["--api-versions", api]
    return args


def render_text(**kwargs: Any) -> str:
    result = helm(*template_args(**kwargs))
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(**kwargs: Any) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render_text(**kwargs)) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [container["name"] for container in containers] == ["operator"]
    result: dict[str, Any] = containers[0]
    return result


def test_app_version_is_the_package_version() -> None:
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == package
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "hda-operator"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(scenario: str) -> None:
    result = helm(
        "lint", "--strict", str(CHART), "--values", str(CHART / "ci" / f"{scenario}-values.yaml")
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendering_is_deterministic(scenario: str) -> None:
    first = render_text(scenario=scenario, api_versions=[SERVICE_MONITOR_API])
    second = render_text(scenario=scenario, api_versions=[SERVICE_MONITOR_API])
    assert first == second


def test_templates_use_no_random_or_cluster_dependent_functions() -> None:
    forbidden = re.compile(
        r"\b(rand\w*|uuidv4|now|date\w*|genCA|genPrivateKey|gen\w*Cert\w*|lookup)\b"
    )
    for template in (CHART / "templates").iterdir():
        text = template.read_text()
        for action in re.findall(r"\{\{.*?\}\}", text, flags=re.DOTALL):
            assert not forbidden.search(action), f"{template.name}: {action}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_has_the_standard_labels(scenario: str) -> None:
    for doc in render(scenario=scenario, api_versions=[SERVICE_MONITOR_API]):
        labels = doc["metadata"].get("labels", {})
        assert labels.keys() >= STANDARD_LABELS, (doc["kind"], doc["metadata"]["name"])
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"


def test_default_objects() -> None:
    docs = render()
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
    ]
    for doc in docs:
        if doc["kind"] in {"Deployment", "ServiceAccount"}:
            assert doc["metadata"]["namespace"] == NAMESPACE


def test_operator_pods_carry_the_label_hda_network_policies_admit() -> None:
    from hda.api.consts import LABEL_OPERATOR_POD

    pod = only(render(), "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"][LABEL_OPERATOR_POD] == "true"


def test_deployment_is_one_recreated_standalone_replica() -> None:
    docs = render()
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    assert pod["spec"]["serviceAccountName"] == RELEASE
    container = operator_container(docs)
    assert container["image"] == "ghcr.io/shitops/hyperdrive-accelerator:0.1.0"
    assert "command" not in container, "the image's entrypoint is `hda`"
    assert container["args"] == [
        "operator",
        "--standalone",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--all-namespaces",
    ]
    env = {item["name"]: item for item in container["env"]}
    assert env["HDA_LOG_FORMAT"]["value"] == "json"
    # Unpinned HDAs run the operator's own image and the official Valkey 9 image.
    assert env["HDA_DEFAULT_RUNTIME_IMAGE"]["value"] == container["image"]
    assert env["HDA_DEFAULT_VALKEY_IMAGE"]["value"] == "valkey/valkey:9.1"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_pod_passes_the_restricted_pod_security_standard() -> None:
    docs = render()
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    container = operator_container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(forbidden)
    assert "privileged" not in security
    # Read-only root: a writable /tmp, from an emptyDir (a restricted volume type).
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]


def rules_of(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    roles = {doc["metadata"]["name"]: doc for doc in by_kind(docs, "ClusterRole")}
    rules: list[dict[str, Any]] = roles[name]["rules"]
    return rules


def test_rbac_grants_exactly_what_the_operator_uses() -> None:
    docs = render()
    assert sorted(doc["metadata"]["name"] for doc in by_kind(docs, "ClusterRole")) == [
        f"{RELEASE}-cluster",
        f"{RELEASE}-namespaced",
    ]
    assert rules_of(docs, f"{RELEASE}-cluster") == CLUSTER_RULES
    assert rules_of(docs, f"{RELEASE}-namespaced") == NAMESPACED_RULES
    assert not by_kind(docs, "Role"), "the rules live in the ClusterRoles only"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_has_no_wildcards_or_escalation(scenario: str) -> None:
    for role in by_kind(render(scenario=scenario), "ClusterRole"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], rule
            assert not set(rule["verbs"]) & {"escalate", "bind", "impersonate", "update"}, rule
            assert not set(rule["resources"]) & {
                "pods/exec",
                "nodes/proxy",
                "roles",
                "rolebindings",
            }
            assert "nonResourceURLs" not in rule


def test_all_namespaces_binds_both_roles_cluster_wide() -> None:
    docs = render()
    bindings = {doc["metadata"]["name"]: doc for doc in by_kind(docs, "ClusterRoleBinding")}
    assert set(bindings) == {f"{RELEASE}-cluster", f"{RELEASE}-namespaced"}
    for name, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": name,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
        ]


def test_watch_namespaces_binds_the_namespaced_role_only_there() -> None:
    docs = render(scenario="namespaced")
    assert [doc["metadata"]["name"] for doc in by_kind(docs, "ClusterRoleBinding")] == [
        f"{RELEASE}-cluster"
    ]
    role_bindings = by_kind(docs, "RoleBinding")
    assert sorted(doc["metadata"]["namespace"] for doc in role_bindings) == [
        "hda-team-a",
        "hda-team-b",
    ]
    for binding in role_bindings:
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["roleRef"]["name"] == f"{RELEASE}-namespaced"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
        ]
    args = operator_container(docs)["args"]
    assert "--all-namespaces" not in args
    assert [arg for arg in args if arg.startswith("--namespace")] == [
        "--namespace=hda-team-a",
        "--namespace=hda-team-b",
    ]


def test_external_rbac_renders_no_rbac_and_uses_the_given_account() -> None:
    docs = render(scenario="external-rbac")
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "RoleBinding"):
        assert not by_kind(docs, kind), kind
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "hda-operator-external"


def test_no_service_account_and_no_name_falls_back_to_default() -> None:
    pod = only(render(values=["serviceAccount.create=false"]), "Deployment")
    assert pod["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_crd_copy_in_the_chart_equals_crds_folder() -> None:
    assert CRD_SOURCE.is_file(), "crds/ has no CRD yet: `make crd`"
    assert CRD_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
        f"the chart's CRD copy differs: cp {CRD_SOURCE.relative_to(ROOT)} "
        f"{CRD_COPY.relative_to(ROOT)}"
    )
    copies = sorted(path.name for path in (CHART / "files" / "crds").iterdir())
    assert copies == sorted(path.name for path in (ROOT / "crds").glob("*.yaml"))


def test_rendered_crd_is_the_source_crd_plus_labels_and_keep() -> None:
    source = yaml.safe_load(CRD_SOURCE.read_text())
    rendered = only(render(), "CustomResourceDefinition")
    metadata = rendered.pop("metadata")
    source_metadata = source.pop("metadata")
    # Same content after parsing. Helm's fromYaml/toYaml turns 0.0 into 0 (equal JSON numbers),
    # but an integer beyond 2**53 would lose digits: Python's int/float equality is exact.
    assert rendered == source
    assert metadata["name"] == source_metadata["name"] == CRD_NAME
    assert metadata["annotations"]["helm.sh/resource-policy"] == "keep"
    assert metadata["labels"].keys() >= STANDARD_LABELS
    for key in source_metadata.get("labels", {}):
        assert key in metadata["labels"]
    for key, value in source_metadata.get("annotations", {}).items():
        assert metadata["annotations"][key] == value


def test_crd_switches() -> None:
    assert not by_kind(render(scenario="no-crds"), "CustomResourceDefinition")
    crd = only(render(scenario="crds-no-keep"), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})


def test_crd_is_a_template_not_in_the_crds_folder() -> None:
    """Helm never upgrades crds/; a template is upgraded by `helm upgrade`."""
    assert not (CHART / "crds").exists()


def test_metrics_service_is_optional() -> None:
    assert not by_kind(render(), "Service")
    docs = render(scenario="metrics")
    service = only(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container = operator_container(docs)
    assert "--metrics-port=8083" in container["args"]
    assert {"name": "metrics", "containerPort": 8083, "protocol": "TCP"} in container["ports"]
    assert not any(arg.startswith("--metrics-port") for arg in operator_container(render())["args"])


def test_service_monitor_only_when_its_api_exists() -> None:
    assert not by_kind(render(scenario="metrics"), "ServiceMonitor")
    docs = render(scenario="metrics", api_versions=[SERVICE_MONITOR_API])
    monitor = only(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "metrics",
            "path": "/metrics",
            "honorLabels": True,  # the HDA's namespace label, not the operator's
            "interval": "15s",
            "scrapeTimeout": "5s",
        }
    ]
    service = only(docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    # A ServiceMonitor without the metrics Service would scrape nothing.
    off = render(values=["metrics.serviceMonitor.enabled=true"], api_versions=[SERVICE_MONITOR_API])
    assert not by_kind(off, "ServiceMonitor")


def test_dashboard_configmap_carries_the_sidecar_label_and_the_dashboard() -> None:
    assert not by_kind(render(), "ConfigMap")
    config_map = only(render(scenario="monitoring"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "HDA"}
    dashboard_file = CHART / "files" / "grafana" / "hda.json"
    assert json.loads(config_map["data"]["hda.json"]) == json.loads(dashboard_file.read_text())


def test_prometheus_rule_and_pod_monitor_only_when_their_apis_exist() -> None:
    assert not by_kind(render(scenario="monitoring"), "PrometheusRule")
    assert not by_kind(render(scenario="monitoring"), "PodMonitor")
    docs = render(scenario="monitoring", api_versions=[PROMETHEUS_RULE_API, POD_MONITOR_API])
    rule = only(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules_file = CHART / "files" / "prometheus" / "rules.yaml"
    assert rule["spec"] == yaml.safe_load(rules_file.read_text())
    monitor = only(docs, "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["http", "health"]
    targets = {
        r["targetLabel"]
        for endpoint in monitor["spec"]["podMetricsEndpoints"]
        for r in endpoint["relabelings"]
    }
    assert targets == {"hda", "component"}
    off = render(api_versions=[PROMETHEUS_RULE_API, POD_MONITOR_API])
    assert not by_kind(off, "PrometheusRule")
    assert not by_kind(off, "PodMonitor")


def test_argocd_health_check_snippet() -> None:
    assert not by_kind(render(), "ConfigMap")
    config_map = only(render(scenario="argocd"), "ConfigMap")
    script = (ROOT / "deploy" / "argocd" / "health.lua").read_text()
    assert config_map["data"] == {
        "resource.customizations.health.hda.shitops.dev_HyperDriveAccelerator": script
    }
    assert config_map["metadata"]["name"] != "argocd-cm", "the chart never edits argocd-cm"


def test_customized_values_reach_the_pod() -> None:
    docs = render(scenario="customized")
    deployment = only(docs, "Deployment")
    assert deployment["metadata"]["name"] == "hyperdrive"
    pod = deployment["spec"]["template"]
    container = operator_container(docs)
    assert container["image"] == (
        "registry.example.com/platform/hda@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert container["imagePullPolicy"] == "Always"
    assert container["args"][-1] == "--verbose"
    assert "--liveness=http://0.0.0.0:9090/healthz" in container["args"]
    assert container["ports"][0]["containerPort"] == 9090
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["HDA_LOG_FORMAT"] == "text"
    assert env["HDA_EXTRA"] == "1"
    assert env["HDA_DEFAULT_RUNTIME_IMAGE"] == container["image"]  # by digest, as the operator
    assert env["HDA_DEFAULT_VALKEY_IMAGE"] == "registry.example.com/mirror/valkey/valkey:9.1"
    assert pod["metadata"]["annotations"] == {"example.com/team": "data-platform"}
    assert pod["metadata"]["labels"]["example.com/cost-center"] == "42"
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in spec["affinity"]
    assert spec["volumes"][0]["emptyDir"]["sizeLimit"] == "32Mi"
    assert container["resources"]["limits"] == {"memory": "256Mi"}
    account = only(docs, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"example.com/role": "hda-operator"}
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "hda-operator"


def test_default_runtime_image_can_differ_from_the_operator_image() -> None:
    docs = render(values=["defaultImages.runtime=registry.example.com/hda/runtime:0.2.0"])
    container = operator_container(docs)
    env = {item["name"]: item.get("value") for item in container["env"]}

    assert env["HDA_DEFAULT_RUNTIME_IMAGE"] == "registry.example.com/hda/runtime:0.2.0"
    assert container["image"] == "ghcr.io/shitops/hyperdrive-accelerator:0.1.0"


def test_default_images_follow_the_operators_own_rules() -> None:
    """The chart refuses what the operator would refuse at start, and defaults to what the
    operator would fall back to without the chart."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    images = schema["properties"]["defaultImages"]["properties"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    assert images["valkey"]["pattern"] == IMAGE_REFERENCE_PATTERN
    assert images["runtime"]["pattern"] == f"^$|{IMAGE_REFERENCE_PATTERN}"
    assert values["defaultImages"] == {"runtime": "", "valkey": BUILTIN_VALKEY_IMAGE}


def test_priority_class_name() -> None:
    pod = only(render(values=["priorityClassName=platform-critical"]), "Deployment")
    assert pod["spec"]["template"]["spec"]["priorityClassName"] == "platform-critical"


@pytest.mark.parametrize(
    "bad_value",
    [
        "iamge.tag=1.0",  # typo of a top-level key
        "image.tga=1.0",  # typo of a nested key
        "logFormat=xml",
        "image.pullPolicy=Sometimes",
        "crds.install=yes",
        "watchNamespaces[0]=Not_A_Namespace",
        "metrics.serviceMonitor.interval=often",
        "health.port=70000",
        "defaultImages.valkey=Valkey:9",
        "defaultImages.runtime=not an image",
    ],
)
def test_schema_rejects_bad_values(bad_value: str) -> None:
    result = helm(*template_args(values=[bad_value]))
    assert result.returncode != 0
    assert "schema" in result.stderr.lower() or "values don't meet" in result.stderr.lower()


def _schema_node(schema: dict[str, Any], path: list[str]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for key in path:
        if node is None or "properties" not in node:
            return None
        node = node["properties"].get(key)
    return node


def test_values_yaml_is_fully_commented_and_matches_the_schema() -> None:
    """Every key the schema describes is in values.yaml with a comment above it."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    seen: set[tuple[str, ...]] = set()
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = [name for _, name in stack]
        stack.append((indent, key))
        parent_node = _schema_node(schema, parent)
        if parent_node is None or "properties" not in parent_node:
            continue  # inside a free-form Kubernetes object (securityContext, resources, ...)
        path = [*parent, key]
        assert _schema_node(schema, path) is not None, (
            f"values.yaml key {'.'.join(path)} not in schema"
        )
        seen.add(tuple(path))
        node = _schema_node(schema, path) or {}
        if parent and (node.get("type") == "object" or "properties" in node):
            continue  # a nested section or map; the section's comment covers it
        previous = lines[number - 1].strip() if number else ""
        assert previous.startswith("#"), f"values.yaml key {'.'.join(path)} has no comment"

    def schema_paths(node: dict[str, Any], prefix: tuple[str, ...]) -> Iterable[tuple[str, ...]]:
        for key, child in node.get("properties", {}).items():
            yield (*prefix, key)
            yield from schema_paths(child, (*prefix, key))

    missing = set(schema_paths(schema, ())) - seen - {("global",)}
    assert not missing, f"schema keys missing from values.yaml: {sorted(missing)}"


def _objects_without_additional_properties_false(node: dict[str, Any], path: str) -> Iterable[str]:
    if node.get("type") == "object" and "properties" in node:
        if node.get("additionalProperties") is not False:
            yield path
        for key, child in node["properties"].items():
            yield from _objects_without_additional_properties_false(child, f"{path}.{key}")


def test_schema_closes_every_chart_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert list(_objects_without_additional_properties_false(schema, "values")) == []
