"""Fixtures for the operator's cluster tests: the real `hda operator` process with exactly the
chart's RBAC (its ServiceAccount token, no admin rights), behind a proxy that counts requests.

Registered with `pytest_plugins = ["hda.testing.pytest_fixtures"]` by
tests/cluster/test_operator.py (it needs the `cluster` fixture of tests/cluster/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from hda.api.images import ENV_DEFAULT_RUNTIME_IMAGE, ENV_DEFAULT_VALKEY_IMAGE, DefaultImages
from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.cluster.testing import ClusterHandle, OperatorIdentity, wait_for
from hda.specs import child_names
from hda.testing.harness import (
    CountingProxy,
    OperatorProcess,
    Request,
    admin_access,
    install_chart_rbac,
    token_kubeconfig,
)

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "hda-operator"
CRD = ROOT / "crds" / "hyperdriveaccelerators.hda.shitops.dev.yaml"
FC_CLASS = "hda-fibre-channel"
LOCAL_CLASS = "hda-test-local"
RESYNC_SECONDS = 10
HDA_RESOURCE = "hyperdriveaccelerators.hda.shitops.dev"
# The session operator's configured default images (kwok nodes pull nothing): not the built-in
# ones, so a test sees that the configuration, not a fallback, decided.
OPERATOR_DEFAULT_IMAGES = DefaultImages(
    runtime="registry.test/hda/runtime:1.0.0", valkey="registry.test/valkey/valkey:9.1"
)


def default_images_env(images: DefaultImages) -> dict[str, str]:
    """The environment that configures the operator's default images (as the chart sets it)."""
    return {ENV_DEFAULT_RUNTIME_IMAGE: images.runtime, ENV_DEFAULT_VALKEY_IMAGE: images.valkey}


STORAGE_CLASSES = f"""
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {FC_CLASS}}}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {LOCAL_CLASS}}}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
"""


@dataclass
class RunningOperator:
    """The operator under test, its request log and how to restart it."""

    cluster: ClusterHandle
    proxy: CountingProxy
    process: OperatorProcess
    kubeconfig: Path
    log: Path
    default_images: DefaultImages = OPERATOR_DEFAULT_IMAGES
    restarts: int = 0

    def restart(
        self,
        default_images: DefaultImages | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> float:
        """Stop and start the operator (with other default images, if given: they stay for later
        restarts; `extra_env` is for this start only); returns the moment (epoch) it stopped."""
        self.process.stop()
        stopped = self.proxy_time()
        if default_images is not None:
            self.default_images = default_images
        self.process = OperatorProcess(
            self.kubeconfig,
            self.log,
            extra_args=["--resync", str(RESYNC_SECONDS)],
            env={**default_images_env(self.default_images), **(extra_env or {})},
        ).start()
        self.restarts += 1
        wait_for(self.process.healthy, timeout=60, message=lambda: self.process.output()[-4000:])
        return stopped

    @staticmethod
    def proxy_time() -> float:
        return time.time()

    def writes(self, since: float, touching: Callable[[Request], bool]) -> list[Request]:
        return [r for r in self.proxy.since(since) if r.write and touching(r)]


@pytest.fixture(scope="session")
def running_operator(
    cluster: ClusterHandle,
    operator_identity: OperatorIdentity,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningOperator]:
    """CRD, storage classes, chart RBAC, counting proxy and `hda operator` (session-wide), as
    `operator_identity` (the user the local plane audits)."""
    work = tmp_path_factory.mktemp("operator")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))

    def established() -> bool:
        crd = get_json(cluster, "crd", HDA_RESOURCE)
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for(established, timeout=60, message="the CRD never became Established")
    cluster.kubectl("apply", "-f", "-", input=STORAGE_CLASSES)
    system, release = operator_identity.namespace, operator_identity.release
    cluster.kubectl("create", "namespace", system)
    account = install_chart_rbac(
        helm=cluster.binary("helm"),
        kubectl=cluster.kubectl,
        chart=CHART,
        namespace=system,
        release=release,
    )
    assert account == operator_identity.account, "the chart renders another ServiceAccount"
    token = cluster.kubectl(
        "create", "token", account, "--namespace", system, "--duration=6h"
    ).stdout.strip()
    access = admin_access(cluster.kubeconfig)
    proxy = CountingProxy(access.server, access.ca_data).start()
    kubeconfig = token_kubeconfig(proxy.url, token, work / "operator.kubeconfig")
    log = work / "operator.log"
    process = OperatorProcess(
        kubeconfig,
        log,
        extra_args=["--resync", str(RESYNC_SECONDS)],
        env=default_images_env(OPERATOR_DEFAULT_IMAGES),
    ).start()
    handle = RunningOperator(cluster, proxy, process, kubeconfig, log)
    try:
        wait_for(process.healthy, timeout=60, message=lambda: process.output()[-4000:])
        yield handle
    finally:
        handle.process.stop()
        proxy.stop()
        cluster.kubectl("delete", "namespace", system, "--wait=false", check=False)
        for kind in ("clusterrolebinding", "clusterrole"):
            cluster.kubectl(
                "delete", kind, "-l", f"app.kubernetes.io/instance={release}", check=False
            )


@dataclass
class HdaFactory:
    """Creates HDAs (with a Valkey volume each) and cleans up what namespaces do not."""

    cluster: ClusterHandle
    created_volumes: list[str] = field(default_factory=list)
    namespaces: set[str] = field(default_factory=set)

    def manifest(
        self,
        name: str,
        namespace: str,
        *,
        luns: int = 2,
        replicas: int = 2,
        node_selector: dict[str, str] | None = None,
        when_deleted: str = "Retain",
        extra_spec: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        fibre_channel: dict[str, Any] = {
            "storageClassName": FC_CLASS,
            "size": "10Gi",
            "volumes": [{"wwids": [f"3600a0b8{uuid.uuid4().hex[:24]}"]} for _ in range(luns)],
        }
        if node_selector is not None:
            fibre_channel["nodeSelector"] = node_selector
        spec: dict[str, Any] = {
            "streams": [{"name": "events", "partitions": 2}],
            "redis": {"storage": {"size": "1Gi", "storageClassName": LOCAL_CLASS}},
            "ingest": {"replicas": 1},
            "workers": {"replicas": 2},
            "output": {
                "replicas": replicas,
                "fibreChannel": fibre_channel,
                "pvcRetentionPolicy": {"whenDeleted": when_deleted, "whenScaled": "Retain"},
            },
            **(extra_spec or {}),
        }
        return {
            "apiVersion": "hda.shitops.dev/v1alpha1",
            "kind": "HyperDriveAccelerator",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """A hostPath PV reserved for the Valkey claim, then the HDA itself."""
        namespace = manifest["metadata"]["namespace"]
        # Names depend only on metadata; a spec only the model rejects still gets its volume.
        hda = HyperDriveAccelerator.model_validate(
            {"metadata": manifest["metadata"], "spec": {"streams": [{"name": "x"}]}}
        )
        claim = f"data-{child_names(hda).valkey_statefulset}-0"
        volume = f"valkey-{namespace}-{hda.name}"
        self.created_volumes.append(volume)
        self.namespaces.add(namespace)
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume, "labels": {"hda-test/namespace": namespace}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": LOCAL_CLASS,
                "hostPath": {"path": f"/var/lib/hda-test/{volume}"},  # never mounted: kwok nodes
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(pv))
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        return manifest

    def cleanup(self) -> None:
        for namespace in self.namespaces:
            # Let the operator release its finalizer while it runs; never leave a stuck namespace.
            self.cluster.kubectl(
                "delete", HDA_RESOURCE, "--all", "-n", namespace, "--wait=true", "--timeout=60s",
                check=False,
            )  # fmt: skip
            result = self.cluster.kubectl(
                "get", HDA_RESOURCE, "-n", namespace, "-o", "name", check=False
            )
            for name in result.stdout.split():
                self.cluster.kubectl(
                    "patch", name, "-n", namespace, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False,
                )  # fmt: skip
            self.cluster.kubectl(
                "delete", "pv", "-l", f"hda.shitops.dev/namespace={namespace}",
                "--wait=false", check=False,
            )  # fmt: skip
        for volume in self.created_volumes:
            self.cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)


@pytest.fixture
def hdas(cluster: ClusterHandle, running_operator: RunningOperator) -> Iterator[HdaFactory]:
    factory = HdaFactory(cluster)
    try:
        yield factory
    finally:
        with contextlib.suppress(Exception):
            factory.cleanup()


def get_json(cluster: ClusterHandle, *args: str) -> dict[str, Any]:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        return {}
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            found: dict[str, Any] = item
            return found
    return {}


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)[:6000]
