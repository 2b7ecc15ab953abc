"""The Helm chart against a real API server: every values scenario passes a server-side
dry-run, `helm install` gives an operator that works with exactly its ServiceAccount's
permissions, `helm upgrade` upgrades the CRD, `helm uninstall` keeps the CRD and the HDAs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.monitoring_support import label_selector

from hda.cluster.testing import ClusterHandle, wait_for
from hda.testing.harness import (
    CountingProxy,
    OperatorProcess,
    Request,
    admin_access,
    token_kubeconfig,
    wait_until_authorized,
)

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hda-operator"
SCENARIOS = sorted(path.name.removesuffix("-values.yaml") for path in (CHART / "ci").glob("*.yaml"))
CRD_NAME = "hyperdriveaccelerators.hda.shitops.dev"
EXAMPLE = ROOT / "examples" / "hda.yaml"
# What Argo CD puts on the objects it manages (label and annotation tracking).
TRACKING_LABEL = "app.kubernetes.io/instance"
TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
READY_TIMEOUT = float(os.environ.get("HDA_TEST_READY_TIMEOUT", "300"))
# Kinds the operator creates next to an HDA (DESIGN.md); checked for copied tracking metadata.
CHILD_KINDS = (
    "deployments.apps",
    "statefulsets.apps",
    "services",
    "configmaps",
    "secrets",
    "serviceaccounts",
    "persistentvolumeclaims",
    "poddisruptionbudgets.policy",
    "networkpolicies.networking.k8s.io",
)


def helm(
    cluster: ClusterHandle, home: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return cluster.helm(home, *args, check=check, timeout=300)


@pytest.fixture
def helm_home(tmp_path: Path) -> Path:
    home = tmp_path / "helm"
    home.mkdir()
    return home


def release_name() -> str:
    return f"hda-{uuid.uuid4().hex[:6]}"


def adopt_crd(cluster: ClusterHandle, release: str, namespace: str) -> None:
    """Let `release` own an existing CRD (applied by kubectl or left by an uninstalled release).

    Helm refuses to install over an object without its ownership metadata; this is Helm's
    documented way to adopt one (docs/gitops.md, "Adopting an existing CRD").
    """
    if cluster.kubectl("get", "crd", CRD_NAME, check=False).returncode != 0:
        return
    cluster.kubectl(
        "annotate", "--overwrite", "crd", CRD_NAME,
        f"meta.helm.sh/release-name={release}",
        f"meta.helm.sh/release-namespace={namespace}",
    )  # fmt: skip
    cluster.kubectl("label", "--overwrite", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm")


def get_json(cluster: ClusterHandle, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return result


class Release:
    """A Helm release that is uninstalled after the test, whatever happens."""

    def __init__(self, cluster: ClusterHandle, home: Path, namespace: str) -> None:
        self.cluster = cluster
        self.home = home
        self.namespace = namespace
        self.name = release_name()
        self.installed = False

    def install(self, *args: str) -> subprocess.CompletedProcess[str]:
        adopt_crd(self.cluster, self.name, self.namespace)
        result = helm(
            self.cluster, self.home, "install", self.name, str(CHART),
            "--namespace", self.namespace, *args,
        )  # fmt: skip
        self.installed = True
        self.cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s"
        )
        return result

    def upgrade(self, chart: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return helm(
            self.cluster, self.home, "upgrade", self.name, str(chart),
            "--namespace", self.namespace, *args,
        )  # fmt: skip

    def uninstall(self) -> subprocess.CompletedProcess[str]:
        result = helm(
            self.cluster, self.home, "uninstall", self.name, "--namespace", self.namespace,
            "--wait", "--timeout", "120s",
        )  # fmt: skip
        self.installed = False
        return result


@pytest.fixture
def release(cluster: ClusterHandle, helm_home: Path, namespace: str) -> Iterator[Release]:
    handle = Release(cluster, helm_home, namespace)
    try:
        yield handle
    finally:
        if handle.installed:
            helm(
                cluster, helm_home, "uninstall", handle.name, "--namespace", namespace,
                check=False,
            )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# helm template | kubectl apply --dry-run=server, for every values scenario


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendering_passes_a_server_side_dry_run(
    scenario: str,
    cluster: ClusterHandle,
    helm_home: Path,
    namespace: str,
    namespace_factory: Callable[..., str],
) -> None:
    args = [
        "template", release_name(), str(CHART), "--namespace", namespace,
        "--values", str(CHART / "ci" / f"{scenario}-values.yaml"),
    ]  # fmt: skip
    if scenario == "namespaced":
        watched = [namespace_factory(), namespace_factory()]
        args += ["--set", "watchNamespaces={" + ",".join(watched) + "}"]
    # What `helm install` would render here: the cluster's own API versions (no ServiceMonitor
    # unless the Prometheus Operator is installed).
    api_versions = cluster.kubectl("api-versions").stdout.split()
    for api in api_versions:
        args += ["--api-versions", api]
    rendered = helm(cluster, helm_home, *args).stdout
    kinds = [doc["kind"] for doc in yaml.safe_load_all(rendered) if doc]
    assert "Deployment" in kinds
    # Server-side apply with strict field validation: unknown or misplaced fields are errors.
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "--force-conflicts",
        "--field-manager=hda-chart-test", "--validate=strict", "-f", "-",
        input=rendered, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(kinds), result.stdout


# ---------------------------------------------------------------------------------------------
# helm install, then the operator with exactly the chart's ServiceAccount credentials


def service_account_token(cluster: ClusterHandle, namespace: str, account: str) -> str:
    """A TokenRequest token for the ServiceAccount (what kubelet would mount into the pod)."""
    return cluster.kubectl(
        "create", "token", account, "--namespace", namespace, "--duration=2h"
    ).stdout.strip()


def hda_condition(cluster: ClusterHandle, namespace: str, name: str, kind: str) -> dict[str, Any]:
    obj = get_json(cluster, "hyperdriveaccelerators.hda.shitops.dev", name, "-n", namespace)
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            found: dict[str, Any] = condition
            return found
    return {}


def delete_hda(cluster: ClusterHandle, namespace: str, name: str) -> None:
    cluster.kubectl(
        "delete", "hyperdriveaccelerators.hda.shitops.dev", name, "-n", namespace,
        "--ignore-not-found", "--wait=true", "--timeout=90s", check=False,
    )  # fmt: skip
    # If the operator could not release its finalizers, do not leave the namespace stuck.
    cluster.kubectl(
        "patch", "hyperdriveaccelerators.hda.shitops.dev", name, "-n", namespace,
        "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False,
    )  # fmt: skip


FC_STORAGE_CLASS = "hda-fibre-channel"  # the default of spec.output.fibreChannel.storageClassName
VOLUME_LABEL = "hda-chart-test/namespace"


def ensure_fc_storage_class(cluster: ClusterHandle) -> None:
    """The StorageClass docs/fibre-channel.md asks cluster admins to create once."""
    if cluster.kubectl("get", "storageclass", FC_STORAGE_CLASS, check=False).returncode == 0:
        return
    storage_class = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": FC_STORAGE_CLASS},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer",
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(storage_class), check=False)


def provide_static_volumes(cluster: ClusterHandle, namespace: str) -> None:
    """Play the storage admin: a static PersistentVolume for every pending claim.

    kwok nodes mount nothing, so the volumes only need to exist and match (class, size, access
    mode); each is reserved for its claim with a claimRef. Fibre Channel claims get FC volumes.
    """
    claims = get_json(cluster, "persistentvolumeclaims", "-n", namespace)["items"]
    for claim in claims:
        if claim["spec"].get("volumeName") or claim["status"].get("phase") != "Pending":
            continue
        claim_name = claim["metadata"]["name"]
        volume_name = f"hda-chart-test-{claim['metadata']['uid'][:13]}"
        storage_class = claim["spec"].get("storageClassName") or ""
        if storage_class == FC_STORAGE_CLASS:
            wwid = "3600a0b8" + claim["metadata"]["uid"].replace("-", "")[:24]
            source: dict[str, Any] = {"fc": {"wwids": [wwid]}}
        else:
            source = {"hostPath": {"path": f"/var/lib/hda-chart-test/{volume_name}"}}
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume_name, "labels": {VOLUME_LABEL: namespace}},
            "spec": {
                "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                "accessModes": claim["spec"]["accessModes"],
                "storageClassName": storage_class,
                "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {"namespace": namespace, "name": claim_name},
                **source,
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(volume))


@pytest.mark.parametrize("scope", ["all-namespaces", "namespaced"])
def test_installed_chart_credentials_run_the_operator_to_ready(
    scope: str,
    cluster: ClusterHandle,
    release: Release,
    namespace_factory: Callable[..., str],
    tmp_path: Path,
) -> None:
    ensure_fc_storage_class(cluster)
    pipelines = namespace_factory()
    values = [] if scope == "all-namespaces" else ["--set", f"watchNamespaces={{{pipelines}}}"]
    installed = release.install(*values)
    assert "kubectl wait --for=condition=Ready" in installed.stdout, "NOTES.txt is printed"
    accounts = get_json(cluster, "serviceaccounts", "-n", release.namespace)["items"]
    names = [item["metadata"]["name"] for item in accounts]
    # The chart's full name: "<release>-hda-operator".
    account = next(name for name in names if name.startswith(release.name))
    deployment = get_json(cluster, "deployment", account, "-n", release.namespace)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account
    container = pod["containers"][0]
    chart_env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    if scope == "namespaced":
        assert f"--namespace={pipelines}" in container["args"]
        assert "--all-namespaces" not in container["args"]

    wait_until_authorized(
        cluster.kubectl,
        release.namespace,
        account,
        watched_namespace=None if scope == "all-namespaces" else pipelines,
    )
    token = service_account_token(cluster, release.namespace, account)
    access = admin_access(cluster.kubeconfig)
    direct = token_kubeconfig(
        access.server, token, tmp_path / "direct.kubeconfig", user=account, ca_data=access.ca_data
    )
    whoami = json.loads(
        cluster.kubectl("--kubeconfig", str(direct), "auth", "whoami", "-o", "json").stdout
    )
    assert whoami["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{release.namespace}:{account}"
    )

    # The operator talks to the API server through a proxy that records every response, with
    # nothing but the ServiceAccount's token.
    proxy = CountingProxy(access.server, access.ca_data).start()
    kubeconfig = token_kubeconfig(proxy.url, token, tmp_path / "operator.kubeconfig", user=account)
    chart_args = container["args"]
    assert sum(arg.startswith("--liveness=") for arg in chart_args) == 1, chart_args
    operator = OperatorProcess(
        kubeconfig,
        tmp_path / "operator.log",
        # The chart's arguments; the harness moves the liveness endpoint to a free local port.
        args=[arg for arg in chart_args if not arg.startswith("--liveness=")],
        env=chart_env,
    ).start()
    hda = yaml.safe_load(EXAMPLE.read_text())
    name = hda["metadata"]["name"]
    # As Argo CD would have it: tracking label and annotation on the HDA.
    hda["metadata"].setdefault("labels", {})[TRACKING_LABEL] = "gitops-pipelines"
    hda["metadata"].setdefault("annotations", {})[TRACKING_ANNOTATION] = (
        f"gitops-pipelines:hda.shitops.dev/HyperDriveAccelerator:{pipelines}/{name}"
    )
    try:
        wait_for(operator.healthy, timeout=60, message=operator.output)
        cluster.kubectl("apply", "-n", pipelines, "-f", "-", input=yaml.safe_dump(hda))

        def refused() -> list[Request]:
            return [r for r in proxy.snapshot() if r.status in {401, 403}]

        def ready() -> bool:
            operator.assert_running()
            assert not refused(), f"the API server refused the operator: {refused()[:20]}"
            provide_static_volumes(cluster, pipelines)
            return hda_condition(cluster, pipelines, name, "Ready").get("status") == "True"

        wait_for(
            ready,
            timeout=READY_TIMEOUT,
            interval=1.0,
            message=lambda: (
                f"HDA {pipelines}/{name} never became Ready: "
                f"{json.dumps(get_json(cluster, 'hda', name, '-n', pipelines).get('status'))}\n"
                f"operator log tail:\n{operator.output()[-6000:]}"
            ),
        )
        time.sleep(5)  # let in-flight watches and reconciles run into any missing permission
        operator.assert_running()

        # No request of the operator was refused.
        log = operator.output()
        denied = [line for line in log.splitlines() if re.search(r"forbidden|\b403\b", line, re.I)]
        assert not denied, "operator hit missing permissions:\n" + "\n".join(denied[:20])
        requests = proxy.snapshot()
        assert requests, "the operator made no request through the proxy"
        assert not refused(), f"the API server refused the operator: {refused()[:20]}"

        # The operator never writes the spec: generation counts spec changes.
        obj = get_json(cluster, "hda", name, "-n", pipelines)
        assert obj["metadata"]["generation"] == 1
        assert obj["status"]["observedGeneration"] == 1
        for entry in obj["metadata"].get("managedFields", []):
            if entry["manager"].startswith("kubectl"):
                continue
            assert "f:spec" not in entry.get("fieldsV1", {}), entry

        # ... and never copies Argo CD tracking metadata onto its children.
        uid = obj["metadata"]["uid"]
        children = []
        for kind in CHILD_KINDS:
            for item in get_json(cluster, kind, "-n", pipelines)["items"]:
                owners = item["metadata"].get("ownerReferences") or []
                if any(owner.get("uid") == uid for owner in owners):
                    children.append(item)
        assert children, "the operator created no owned children"
        for child in children:
            meta = child["metadata"]
            where = f"{child['kind']}/{meta['name']}"
            labels = meta.get("labels") or {}
            annotations = meta.get("annotations") or {}
            assert labels.get(TRACKING_LABEL) != "gitops-pipelines", where
            assert TRACKING_ANNOTATION not in annotations, where
            assert not [
                key for key in {**labels, **annotations} if key.startswith("argocd.argoproj.io/")
            ], where
    finally:
        delete_hda(cluster, pipelines, name)
        operator.stop()
        proxy.stop()
        # For post-mortems and RBAC reviews: every request the operator made, with its status.
        (tmp_path / "requests.json").write_text(
            json.dumps([dataclasses.asdict(r) for r in proxy.snapshot()], indent=1)
        )
        cluster.kubectl(
            "delete", "pv", "-l", f"{VOLUME_LABEL}={pipelines}", "--wait=false", check=False
        )


# ---------------------------------------------------------------------------------------------
# metrics: the ServiceMonitor reaches the operator's /metrics port


def test_service_monitor_reaches_the_operator_pods_metrics_port(
    cluster: ClusterHandle, release: Release, helm_home: Path
) -> None:
    """Installed with metrics on, the metrics Service selects the operator pod and its
    EndpointSlice carries the pod's `metrics` port, the one `--metrics-port` opens; the
    ServiceMonitor (rendered as with the Prometheus Operator's API present) selects exactly
    that Service, by a port name it has."""
    values = ["--set", "metrics.enabled=true", "--set", "metrics.serviceMonitor.enabled=true"]
    release.install(*values)
    namespace = release.namespace
    monitor = yaml.safe_load(
        helm(
            cluster, helm_home, "template", release.name, str(CHART), "--namespace", namespace,
            *values, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
            "--show-only", "templates/servicemonitor.yaml",
        ).stdout
    )  # fmt: skip
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [namespace]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"

    selector = label_selector(monitor["spec"]["selector"])
    [service] = get_json(cluster, "services", "-n", namespace, "-l", selector)["items"]
    [service_port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    deployment = next(
        item
        for item in get_json(cluster, "deployments", "-n", namespace)["items"]
        if item["metadata"]["name"].startswith(release.name)
    )
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    [container_port] = [p for p in container["ports"] if p["name"] == service_port["targetPort"]]
    assert f"--metrics-port={container_port['containerPort']}" in container["args"]

    def slice_endpoint() -> dict[str, Any] | None:
        slices = get_json(
            cluster, "endpointslices", "-n", namespace,
            "-l", f"kubernetes.io/service-name={service['metadata']['name']}",
        )["items"]  # fmt: skip
        for item in slices:
            ports = {(p.get("name"), p.get("port")) for p in item.get("ports") or []}
            if (endpoint["port"], container_port["containerPort"]) not in ports:
                continue
            for address in item.get("endpoints") or []:
                if (address.get("conditions") or {}).get("ready"):
                    found: dict[str, Any] = address
                    return found
        return None

    address = wait_for(
        slice_endpoint,
        timeout=READY_TIMEOUT,
        interval=1.0,
        message=lambda: json.dumps(
            get_json(cluster, "endpointslices", "-n", namespace).get("items"), indent=1
        )[-4000:],
    )
    pod = get_json(cluster, "pod", address["targetRef"]["name"], "-n", namespace)
    pod_labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


# ---------------------------------------------------------------------------------------------
# helm upgrade with a changed CRD, helm uninstall with crds.keep


def chart_with_changed_crd(tmp_path: Path) -> Path:
    """A copy of the chart, version 0.1.1, whose CRD has an extra printer column."""
    chart = tmp_path / "hda-operator"
    shutil.copytree(CHART, chart)
    crd_path = chart / "files" / "crds" / f"{CRD_NAME}.yaml"
    crd = yaml.safe_load(crd_path.read_text())
    for version in crd["spec"]["versions"]:
        version.setdefault("additionalPrinterColumns", []).append(
            {
                "name": "UpgradeProbe",
                "type": "string",
                "jsonPath": ".metadata.annotations.hda\\.shitops\\.dev/upgrade-probe",
                "priority": 1,
            }
        )
    crd_path.write_text(yaml.safe_dump(crd, sort_keys=False))
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = "0.1.1"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return chart


def printer_columns(cluster: ClusterHandle) -> list[str]:
    crd = get_json(cluster, "crd", CRD_NAME)
    return [
        column["name"]
        for version in crd["spec"]["versions"]
        for column in version.get("additionalPrinterColumns", [])
    ]


def test_upgrade_with_a_changed_crd_updates_the_crd(
    cluster: ClusterHandle, release: Release, tmp_path: Path
) -> None:
    release.install()
    assert "UpgradeProbe" not in printer_columns(cluster)
    try:
        release.upgrade(chart_with_changed_crd(tmp_path))
        assert "UpgradeProbe" in printer_columns(cluster)
        crd = get_json(cluster, "crd", CRD_NAME)
        assert crd["metadata"]["labels"]["helm.sh/chart"] == "hda-operator-0.1.1"
    finally:
        # Back to the repository's CRD for the other tests (and the downgrade path works too).
        release.upgrade(CHART)
    assert "UpgradeProbe" not in printer_columns(cluster)


def test_turning_crds_install_off_keeps_the_crd(cluster: ClusterHandle, release: Release) -> None:
    """The documented hand-over to `kubectl apply --server-side -f crds/` loses nothing."""
    release.install()
    crd_uid = get_json(cluster, "crd", CRD_NAME)["metadata"]["uid"]
    release.upgrade(CHART, "--set", "crds.install=false")
    assert get_json(cluster, "crd", CRD_NAME)["metadata"]["uid"] == crd_uid


def test_uninstall_with_crds_keep_leaves_the_crd_and_the_hdas(
    cluster: ClusterHandle, release: Release
) -> None:
    release.install()
    crd_uid = get_json(cluster, "crd", CRD_NAME)["metadata"]["uid"]
    cluster.kubectl("apply", "-n", release.namespace, "-f", str(EXAMPLE))
    name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]
    try:
        uninstalled = release.uninstall()
        assert "kept due to the resource policy" in uninstalled.stdout + uninstalled.stderr
        assert get_json(cluster, "crd", CRD_NAME)["metadata"]["uid"] == crd_uid
        assert get_json(cluster, "hda", name, "-n", release.namespace)["metadata"]["name"] == name
        # Everything else of the release is gone.
        for kind in ("deployments", "serviceaccounts"):
            items = get_json(cluster, kind, "-n", release.namespace)["items"]
            assert not [i for i in items if i["metadata"]["name"].startswith(release.name)], kind
        roles = get_json(cluster, "clusterroles")["items"]
        assert not [r for r in roles if r["metadata"]["name"].startswith(release.name)]
    finally:
        delete_hda(cluster, release.namespace, name)
