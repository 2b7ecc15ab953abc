"""Fixtures for tests that need a Kubernetes cluster. Every test under tests/cluster/ is marked
`cluster` automatically, so `pytest -m "not cluster"` runs without one.

By default the session starts its own local control plane (`hda.cluster.LocalCluster`: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, kwok) with 3 nodes, 2 of them Fibre
Channel labelled, in pytest's temporary directory; logs stay there after the run
(`/tmp/pytest-of-$USER/pytest-N/hda-state0/clusters/<name>/logs/`).

With `HDA_TEST_CLUSTER=existing` the tests use the current kubeconfig (`$KUBECONFIG` or
`~/.kube/config`, e.g. a kind cluster) and only create and delete their own namespaces.

Fixtures:
- `operator_identity` (session): `hda.cluster.testing.OperatorIdentity`, the chart release,
  namespace and ServiceAccount the operator under test runs as (hda.testing.pytest_fixtures).
- `cluster` (session): `hda.cluster.testing.ClusterHandle` with `.kubeconfig: Path`,
  `.api_client` (kubernetes ApiClient), `.kubectl(*args)`, `.bin_dir`, `.is_local`,
  `.add_node(name, fc=True)` / `.delete_node(name)` (local plane only), `.env()`. The local
  plane's apiserver audits the operator identity's requests to `.audit_log`.
- `namespace` (function): a fresh namespace name, deleted afterwards.
- `restricted_namespace` (function): same, labelled `pod-security.kubernetes.io/enforce=restricted`.
- `namespace_factory` (function): `make(*, restricted=False, labels=None) -> str` for more.
- `module_namespace` (module): one fresh namespace shared by a module's tests.
- `core_v1`, `apps_v1`, `rbac_v1`, `storage_v1` (session): typed API objects on `cluster`.

Tests marked `after_the_tier` run after every other test of the session (they judge what the
whole tier did, e.g. the audit log), in their own order.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from hda.cluster import LocalCluster
from hda.cluster.binaries import find_bin_dir
from hda.cluster.testing import EXISTING_ENV, ClusterHandle, OperatorIdentity, find_binary, wait_for
from hda.testing.harness import chart_account, render_chart_rbac

# Before any test module imports it: the fixtures' asserts explain themselves when they fail.
pytest.register_assert_rewrite("hda.testing.pytest_fixtures")

_HERE = Path(__file__).resolve().parent
CHART = _HERE.parents[1] / "charts" / "hda-operator"

#: Labels of a namespace where the restricted Pod Security Standard is enforced.
RESTRICTED_PSS_LABELS: dict[str, str] = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
#: Every namespace the fixtures create carries this label (easy cleanup of leftovers).
TEST_NAMESPACE_LABEL = "hda.shitops.dev/test-namespace"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.cluster)
    # Stable: the rest keep their order, and so do the tests that judge the whole tier.
    items.sort(key=lambda item: item.get_closest_marker("after_the_tier") is not None)
    # Tests written for an existing cluster only are deselected (not skipped) on the local plane.
    if os.environ.get(EXISTING_ENV, "local") != "existing":
        existing_only = [item for item in items if item.get_closest_marker("existing_cluster_only")]
        if existing_only:
            config.hook.pytest_deselected(items=existing_only)
            items[:] = [item for item in items if item not in existing_only]


def _existing_cluster() -> Iterator[ClusterHandle]:
    paths = os.environ.get("KUBECONFIG", "") or str(Path.home() / ".kube" / "config")
    kubeconfig = Path(paths.split(os.pathsep)[0]).expanduser()
    if not kubeconfig.is_file():
        pytest.fail(f"{EXISTING_ENV}=existing but there is no kubeconfig at {kubeconfig}")
    # kubernetes.config is unannotated; it returns an ApiClient.
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    bin_dir = Path(os.environ["HDA_BIN_DIR"]) if os.environ.get("HDA_BIN_DIR") else None
    with api:  # closes it
        yield ClusterHandle(kubeconfig=kubeconfig, api_client=api, bin_dir=bin_dir)


def _local_cluster(state_root: Path, audited: OperatorIdentity) -> Iterator[ClusterHandle]:
    name = os.environ.get("HDA_TEST_CLUSTER_NAME", f"pytest-{os.getpid()}")
    plane = LocalCluster(name, state_root=state_root, audit_users=(audited.user,))
    plane.up(nodes=3, fc_nodes=2)
    try:
        api = plane.api_client()
        with api:  # closes it
            yield ClusterHandle(
                kubeconfig=plane.kubeconfig, api_client=api, bin_dir=plane.bin_dir(), local=plane
            )
    finally:
        # Keep the logs for post-mortems; the etcd data is of no use once the plane is gone.
        plane.down(remove_state=False)
        shutil.rmtree(plane.layout.etcd_data_dir, ignore_errors=True)


def _cluster_mode() -> str:
    mode = os.environ.get(EXISTING_ENV, "local")
    if mode not in ("local", "existing"):
        raise pytest.UsageError(f"{EXISTING_ENV} must be 'local' (default) or 'existing'")
    return mode


@pytest.fixture(scope="session")
def operator_identity() -> OperatorIdentity:
    """A fresh release and namespace for the operator under test; the account is the chart's."""
    if os.environ.get("HDA_BIN_DIR"):
        bin_dir: Path | None = Path(os.environ["HDA_BIN_DIR"])
    else:
        bin_dir = find_bin_dir() if _cluster_mode() == "local" else None
    suffix = uuid.uuid4().hex[:6]
    namespace, release = f"hda-system-{suffix}", f"op{suffix}"
    rendered = render_chart_rbac(
        helm=find_binary("helm", bin_dir), chart=CHART, namespace=namespace, release=release
    )
    return OperatorIdentity(namespace=namespace, release=release, account=chart_account(rendered))


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ClusterHandle]:
    """The cluster under test (see the module docstring)."""
    if _cluster_mode() == "existing":
        yield from _existing_cluster()
    else:
        # Only the local plane needs the identity up front (an existing one has no audit log).
        audited: OperatorIdentity = request.getfixturevalue("operator_identity")
        yield from _local_cluster(tmp_path_factory.mktemp("hda-state"), audited)


@pytest.fixture(scope="session")
def core_v1(cluster: ClusterHandle) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api_client)


@pytest.fixture(scope="session")
def apps_v1(cluster: ClusterHandle) -> client.AppsV1Api:
    return client.AppsV1Api(cluster.api_client)


@pytest.fixture(scope="session")
def rbac_v1(cluster: ClusterHandle) -> client.RbacAuthorizationV1Api:
    return client.RbacAuthorizationV1Api(cluster.api_client)


@pytest.fixture(scope="session")
def storage_v1(cluster: ClusterHandle) -> client.StorageV1Api:
    return client.StorageV1Api(cluster.api_client)


class NamespaceFactory:
    """Creates namespaces (waiting for their `default` ServiceAccount) and deletes them later."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self._core = core
        self.created: list[str] = []

    def __call__(
        self,
        *,
        restricted: bool = False,
        labels: dict[str, str] | None = None,
        prefix: str = "hda-test",
    ) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        all_labels = {TEST_NAMESPACE_LABEL: "true", **(labels or {})}
        if restricted:
            all_labels.update(RESTRICTED_PSS_LABELS)
        self._core.create_namespace(
            client.V1Namespace.model_validate({"metadata": {"name": name, "labels": all_labels}})
        )
        self.created.append(name)
        # ServiceAccount admission rejects pods until the controller made `default`.
        wait_for(
            lambda: _service_account_exists(self._core, name),
            timeout=30,
            message=f"ServiceAccount {name}/default was never created",
        )
        return name

    def cleanup(self) -> None:
        for name in self.created:
            try:
                self._core.delete_namespace(name)
            except ApiException as error:
                if error.status != 404:
                    raise
        self.created.clear()


def _service_account_exists(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


@pytest.fixture
def namespace_factory(core_v1: client.CoreV1Api) -> Iterator[NamespaceFactory]:
    """`namespace_factory(restricted=False, labels=None) -> name`; all deleted after the test."""
    factory = NamespaceFactory(core_v1)
    yield factory
    factory.cleanup()


@pytest.fixture
def namespace(namespace_factory: NamespaceFactory) -> str:
    """A fresh namespace (no Pod Security labels), deleted after the test."""
    return namespace_factory()


@pytest.fixture
def restricted_namespace(namespace_factory: NamespaceFactory) -> str:
    """A fresh namespace enforcing the restricted Pod Security Standard."""
    return namespace_factory(restricted=True)


@pytest.fixture(scope="module")
def module_namespace(core_v1: client.CoreV1Api) -> Iterator[str]:
    """One fresh namespace shared by the tests of a module."""
    factory = NamespaceFactory(core_v1)
    yield factory()
    factory.cleanup()
