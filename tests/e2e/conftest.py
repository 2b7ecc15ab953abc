"""Fixtures of the e2e tier: a local plane with REAL nodes. Every test here is marked `e2e`.

The session starts one `hda.cluster.LocalCluster` with 2 real nodes (`real-fc-node-0`, Fibre
Channel labelled, and `real-node-0`) plus 2 kwok nodes (tainted, so real workloads stay on the
real nodes), in pytest's temporary directory; logs stay there after the run. It needs root
(`hda cluster up --real-nodes` names whatever the host lacks).

Fixtures:
- `real_cluster` (session): `hda.cluster.testing.ClusterHandle` with `.kubeconfig`,
  `.api_client`, `.kubectl(*args)`, `.bin_dir`, `.local` (the LocalCluster) and
  `.registry_url` (`http://127.0.0.1:PORT`, where every image host of the nodes points);
- `real_node_names` (session): the names of the real nodes, FC-labelled first;
- `probe_image` (session): `ProbeImage` with `.ghcr` (`ghcr.io/shitops/e2e-probe:TAG`) and
  `.docker_hub` (`e2e-probe:TAG`, a docker.io official-image name): a static Go program
  (tests/e2e/probe) that serves HTTP on :8080 and runs `echo|get|resolve|dial` for exec;
- `core_v1` (session), `e2e_namespace` (module): a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from hda.cluster import LocalCluster, oci
from hda.cluster.binaries import REPO_ROOT
from hda.cluster.images import build_images
from hda.cluster.testing import ClusterHandle, ProbeImage, wait_for

_HERE = Path(__file__).resolve().parent
PROBE_SOURCE = _HERE / "probe"
PROBE_CACHE = Path.home() / ".cache" / "hda" / "e2e-probe"
#: Tests in these modules take the shared plane down; they run after every other e2e test.
_RUN_LAST = ("test_real_nodes_lifecycle.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: item.path.name in _RUN_LAST)


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    """The plane with real nodes (see the module docstring)."""
    name = os.environ.get("HDA_TEST_CLUSTER_NAME", f"e2e-{os.getpid()}")
    plane = LocalCluster(name, state_root=tmp_path_factory.mktemp("hda-e2e-state"))
    plane.up(nodes=2, fc_nodes=1, real_nodes=2, real_fc_nodes=1)
    try:
        api = plane.api_client()
        with api:
            yield ClusterHandle(
                kubeconfig=plane.kubeconfig,
                api_client=api,
                bin_dir=plane.bin_dir(),
                local=plane,
                registry_url=plane.registry_url(),
            )
    finally:
        plane.down(remove_state=False)
        shutil.rmtree(plane.layout.etcd_data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def app_images(real_cluster: ClusterHandle) -> list[str]:
    """The runtime and Valkey images, built here (BuildKit, no Docker) into the plane's registry
    under the names the chart and the operator use."""
    assert real_cluster.registry_url is not None
    assert real_cluster.bin_dir is not None
    built = build_images(real_cluster.registry_url, real_cluster.bin_dir, REPO_ROOT)
    return [reference for image in built for reference in image.references]


@pytest.fixture(scope="session")
def real_node_names(real_cluster: ClusterHandle) -> list[str]:
    assert real_cluster.local is not None
    return real_cluster.local.real_node_names()


@pytest.fixture(scope="session")
def core_v1(real_cluster: ClusterHandle) -> client.CoreV1Api:
    return client.CoreV1Api(real_cluster.api_client)


def _build_probe() -> Path:
    digest = hashlib.sha256()
    for path in sorted(PROBE_SOURCE.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    binary = PROBE_CACHE / digest.hexdigest()[:16] / "probe"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        pytest.fail("the e2e probe image is built with `go` (Go toolchain), not found on PATH")
    binary.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [go, "build", "-trimpath", "-ldflags=-s", "-o", str(binary), "."],
        cwd=PROBE_SOURCE,
        env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
        check=True,
    )
    return binary


@pytest.fixture(scope="session")
def probe_image(real_cluster: ClusterHandle) -> ProbeImage:
    """The probe pushed under a ghcr.io name and a docker.io official-image name."""
    assert real_cluster.registry_url is not None
    binary = _build_probe()
    layer = oci.layer_from_files({"probe": (binary.read_bytes(), 0o755)})
    settings = oci.ImageSettings(entrypoint=("/probe",), cmd=("serve",), user="65534:65534")
    tag = hashlib.sha256(binary.read_bytes()).hexdigest()[:12]
    # containerd asks the loopback registry for the path of the normalised reference.
    oci.push(real_cluster.registry_url, "shitops/e2e-probe", tag, [layer], settings)
    oci.push(real_cluster.registry_url, "library/e2e-probe", tag, [layer], settings)
    return ProbeImage(
        ghcr=f"ghcr.io/shitops/e2e-probe:{tag}", docker_hub=f"e2e-probe:{tag}", tag=tag
    )


@pytest.fixture(scope="module")
def e2e_namespace(real_cluster: ClusterHandle, core_v1: client.CoreV1Api) -> Iterator[str]:
    name = f"hda-e2e-{uuid.uuid4().hex[:8]}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def has_default_account() -> bool:
        accounts: list[Any] = core_v1.list_namespaced_service_account(name).items
        return any(account.metadata.name == "default" for account in accounts)

    wait_for(has_default_account, timeout=30, message=f"no ServiceAccount {name}/default")
    yield name
    core_v1.delete_namespace(name)
