"""The cluster the tests run on is a real Kubernetes: scheduler, controllers, admission, RBAC,
volume binding and garbage collection all do their job (issue 2, item 5, tests a-f).

Pods run on kwok nodes: the scheduler, controllers and API server are the real upstream
binaries; only the kubelet is simulated (kwok marks bound pods Running).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hda.cluster import FC_LABEL, ComponentFailedError, LocalCluster, processes
from hda.cluster.testing import ClusterHandle, wait_for

pytestmark = pytest.mark.timeout(300)

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


# -- helpers ----------------------------------------------------------------------------------


def _container(name: str = "app") -> dict[str, Any]:
    return {"name": name, "image": PAUSE_IMAGE}


def _deployment(
    name: str, replicas: int, node_selector: dict[str, str] | None = None
) -> client.V1Deployment:
    pod_spec: dict[str, Any] = {"containers": [_container()]}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    return client.V1Deployment.model_validate(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
            },
        }
    )


def _pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def _running_pods(
    core: client.CoreV1Api, namespace: str, selector: str, count: int
) -> list[client.V1Pod] | None:
    pods = [
        pod
        for pod in _pods(core, namespace, selector)
        if pod.status is not None
        and pod.status.phase == "Running"
        and pod.metadata is not None
        and pod.metadata.deletion_timestamp is None
    ]
    return pods if len(pods) == count else None


def _describe_pods(core: client.CoreV1Api, namespace: str, selector: str) -> str:
    return "; ".join(
        f"{pod.metadata.name if pod.metadata else '?'}: "
        f"{pod.status.phase if pod.status else '?'} on {pod.spec.node_name if pod.spec else '?'}"
        for pod in _pods(core, namespace, selector)
    )


def _node_names(core: client.CoreV1Api, selector: str | None = None) -> set[str]:
    return {
        node.metadata.name
        for node in core.list_node(label_selector=selector).items
        if node.metadata is not None and node.metadata.name
    }


def _fc_nodes(core: client.CoreV1Api) -> set[str]:
    return _node_names(core, f"{FC_LABEL}=true")


def _not_found(read: Callable[..., object], *args: str) -> bool:
    try:
        read(*args)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


@pytest.fixture
def fc_nodes(core_v1: client.CoreV1Api) -> set[str]:
    """The Fibre Channel nodes; skips when the cluster has none or has only FC nodes."""
    fc = _fc_nodes(core_v1)
    if not fc:
        pytest.skip("the cluster has no node labelled hda.shitops.dev/fibre-channel=true")
    if fc == _node_names(core_v1):
        pytest.skip("every node is Fibre Channel labelled; placement would prove nothing")
    return fc


# -- (a) scheduling on Fibre Channel nodes ----------------------------------------------------


def test_deployment_requiring_fc_label_runs_only_on_fc_nodes(
    core_v1: client.CoreV1Api, apps_v1: client.AppsV1Api, namespace: str, fc_nodes: set[str]
) -> None:
    replicas = 6  # more replicas than nodes: the spreading scoring would use every node
    apps_v1.create_namespaced_deployment(
        namespace, _deployment("fc-app", replicas, node_selector={FC_LABEL: "true"})
    )
    pods = wait_for(
        lambda: _running_pods(core_v1, namespace, "app=fc-app", replicas),
        timeout=60,
        message=lambda: f"pods not all Running: {_describe_pods(core_v1, namespace, 'app=fc-app')}",
    )
    placed = {pod.spec.node_name for pod in pods if pod.spec is not None}
    assert placed <= fc_nodes, f"pods landed on non-FC nodes {placed - fc_nodes}"

    # The control: without the selector the same Deployment also uses the non-FC nodes.
    apps_v1.create_namespaced_deployment(namespace, _deployment("any-app", replicas))
    anywhere = wait_for(
        lambda: _running_pods(core_v1, namespace, "app=any-app", replicas), timeout=60
    )
    assert {pod.spec.node_name for pod in anywhere if pod.spec is not None} - fc_nodes


def _assert_pending_unschedulable(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    replicas = 2
    apps.create_namespaced_deployment(
        namespace, _deployment("fc-app", replicas, node_selector={FC_LABEL: "true"})
    )

    def unschedulable() -> list[client.V1PodCondition] | None:
        found = []
        for pod in _pods(core, namespace, "app=fc-app"):
            for condition in (pod.status.conditions if pod.status else None) or []:
                if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                    found.append(condition)
        return found if len(found) == replicas else None

    conditions = wait_for(
        unschedulable,
        timeout=60,
        message=lambda: (
            f"no Unschedulable condition: {_describe_pods(core, namespace, 'app=fc-app')}"
        ),
    )
    for condition in conditions:
        assert condition.status == "False"
        # The scheduler's own explanation, e.g. "0/2 nodes are available: 2 node(s) didn't
        # match Pod's node affinity/selector. ..."
        assert "didn't match Pod's node affinity/selector" in (condition.message or "")
    time.sleep(3)  # still Pending a while later, never bound
    for pod in _pods(core, namespace, "app=fc-app"):
        assert pod.status is not None
        assert pod.status.phase == "Pending"
        assert pod.spec is not None
        assert pod.spec.node_name is None
    events = core.list_namespaced_event(
        namespace, field_selector="reason=FailedScheduling,involvedObject.kind=Pod"
    ).items
    assert events, "the scheduler recorded no FailedScheduling event"


# -- a second cluster, side by side, without FC nodes -----------------------------------------


@pytest.fixture(scope="module")
def second_cluster(
    cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterHandle]:
    """A second local plane with 2 nodes and no FC node, running beside the session cluster.

    Its teardown checks that `down` stopped every process and removed the state.
    """
    if not cluster.is_local:
        pytest.skip("starts a second local plane; not with HDA_TEST_CLUSTER=existing")
    plane = LocalCluster(f"pytest-nofc-{os.getpid()}", state_root=tmp_path_factory.mktemp("nofc"))
    plane.up(nodes=2, fc_nodes=0)
    state = plane.state()
    assert state is not None
    api = plane.api_client()
    try:
        with api:  # closes it
            yield ClusterHandle(
                kubeconfig=plane.kubeconfig, api_client=api, bin_dir=plane.bin_dir(), local=plane
            )
    finally:
        plane.down()
    for record in state.processes:
        assert not processes.alive(record.pid), f"{record.component} survived down"
    assert not plane.layout.state_dir.exists()


def test_without_fc_nodes_pods_stay_pending_until_an_fc_node_joins(
    second_cluster: ClusterHandle,
) -> None:
    core = client.CoreV1Api(second_cluster.api_client)
    apps = client.AppsV1Api(second_cluster.api_client)
    assert not _fc_nodes(core)
    namespace = f"nofc-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace.model_validate({"metadata": {"name": namespace}}))
    wait_for(lambda: not _not_found(core.read_namespaced_service_account, "default", namespace))
    _assert_pending_unschedulable(core, apps, namespace)

    # An FC node joining (what `ClusterHandle.add_node` offers other tests) unblocks them.
    second_cluster.add_node("fc-late-0", fc=True)
    try:
        pods = wait_for(
            lambda: _running_pods(core, namespace, "app=fc-app", 2),
            timeout=60,
            message=lambda: f"still not Running: {_describe_pods(core, namespace, 'app=fc-app')}",
        )
        assert {pod.spec.node_name for pod in pods if pod.spec} == {"fc-late-0"}
    finally:
        core.delete_namespace(namespace)
        second_cluster.delete_node("fc-late-0")


@pytest.mark.existing_cluster_only  # the local plane has FC nodes: see the second-cluster variant
def test_without_fc_nodes_on_existing_cluster(
    cluster: ClusterHandle, core_v1: client.CoreV1Api, apps_v1: client.AppsV1Api, namespace: str
) -> None:
    """The same check on an existing cluster that has no FC node (a plain kind cluster)."""
    if _fc_nodes(core_v1):
        pytest.skip("the existing cluster has FC nodes")
    _assert_pending_unschedulable(core_v1, apps_v1, namespace)


def test_two_clusters_run_side_by_side(
    cluster: ClusterHandle, second_cluster: ClusterHandle
) -> None:
    first, second = cluster.local, second_cluster.local
    assert first is not None
    assert second is not None
    first_state, second_state = first.state(), second.state()
    assert first_state is not None
    assert second_state is not None
    first_ports = set(first_state.ports.to_dict().values())
    assert not first_ports & set(second_state.ports.to_dict().values())
    assert first.is_up()
    assert second.is_up()
    # Separate etcd: an object made in one is absent from the other.
    name = f"only-here-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(second_cluster.api_client).create_namespace(
        client.V1Namespace.model_validate({"metadata": {"name": name}})
    )
    assert _not_found(client.CoreV1Api(cluster.api_client).read_namespace, name)
    assert _node_names(client.CoreV1Api(second_cluster.api_client)) == {"node-0", "node-1"}


# -- (b) WaitForFirstConsumer binding to a static Fibre Channel PersistentVolume ----------------


def test_wffc_claim_binds_to_fc_volume_once_pod_is_scheduled(
    core_v1: client.CoreV1Api,
    storage_v1: client.StorageV1Api,
    namespace: str,
    fc_nodes: set[str],
) -> None:
    suffix = uuid.uuid4().hex[:6]
    class_name, pv_name = f"hda-test-fc-{suffix}", f"hda-test-fc-{suffix}"
    storage_v1.create_storage_class(
        client.V1StorageClass.model_validate(
            {
                "metadata": {"name": class_name},
                "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "WaitForFirstConsumer",
                "reclaimPolicy": "Retain",
            }
        )
    )
    try:
        core_v1.create_persistent_volume(
            client.V1PersistentVolume.model_validate(
                {
                    "metadata": {"name": pv_name},
                    "spec": {
                        "capacity": {"storage": "10Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": class_name,
                        "volumeMode": "Filesystem",
                        "fc": {"targetWWNs": ["500a0982891b8dc5"], "lun": 0, "fsType": "ext4"},
                        "nodeAffinity": {
                            "required": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {"key": FC_LABEL, "operator": "In", "values": ["true"]}
                                        ]
                                    }
                                ]
                            }
                        },
                    },
                }
            )
        )
        _check_wffc_binding(core_v1, namespace, class_name, pv_name, fc_nodes)
    finally:
        for delete, name in (
            (core_v1.delete_persistent_volume, pv_name),
            (storage_v1.delete_storage_class, class_name),
        ):
            try:
                delete(name)
            except ApiException as error:
                if error.status != 404:
                    raise


def _check_wffc_binding(
    core: client.CoreV1Api, namespace: str, class_name: str, pv_name: str, fc_nodes: set[str]
) -> None:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim.model_validate(
            {
                "metadata": {"name": "data"},
                "spec": {
                    "storageClassName": class_name,
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "5Gi"}},
                },
            }
        ),
    )
    # No consumer yet: the PV controller waits instead of binding.
    wait_for(
        lambda: (
            core.list_namespaced_event(
                namespace, field_selector="reason=WaitForFirstConsumer,involvedObject.name=data"
            ).items
        ),
        timeout=30,
        message="no WaitForFirstConsumer event for the claim",
    )
    claim = core.read_namespaced_persistent_volume_claim("data", namespace)
    assert claim.status is not None
    assert claim.status.phase == "Pending"
    assert claim.spec is not None
    assert not claim.spec.volume_name

    core.create_namespaced_pod(
        namespace,
        client.V1Pod.model_validate(
            {
                "metadata": {"name": "consumer"},
                "spec": {
                    "containers": [
                        {**_container(), "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
                    ],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                },
            }
        ),
    )

    def bound() -> client.V1PersistentVolumeClaim | None:
        claim = core.read_namespaced_persistent_volume_claim("data", namespace)
        return claim if claim.status is not None and claim.status.phase == "Bound" else None

    claim = wait_for(bound, timeout=60, message="the claim never bound")
    assert claim.spec is not None
    assert claim.spec.volume_name == pv_name
    volume = core.read_persistent_volume(pv_name)
    assert volume.status is not None
    assert volume.status.phase == "Bound"
    assert volume.spec is not None
    assert volume.spec.claim_ref is not None
    assert (volume.spec.claim_ref.namespace, volume.spec.claim_ref.name) == (namespace, "data")
    pod = wait_for(
        lambda: _running_pods(core, namespace, "", 1), timeout=60, message="pod not Running"
    )[0]
    assert pod.spec is not None
    assert pod.spec.node_name in fc_nodes


# -- (c) StatefulSet scaling ------------------------------------------------------------------


def test_statefulset_scales_1_3_1(
    core_v1: client.CoreV1Api, apps_v1: client.AppsV1Api, namespace: str
) -> None:
    core_v1.create_namespaced_service(
        namespace,
        client.V1Service.model_validate(
            {
                "metadata": {"name": "web"},
                "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]},
            }
        ),
    )
    apps_v1.create_namespaced_stateful_set(
        namespace,
        client.V1StatefulSet.model_validate(
            {
                "metadata": {"name": "web"},
                "spec": {
                    "serviceName": "web",
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [_container()], "terminationGracePeriodSeconds": 0},
                    },
                },
            }
        ),
    )

    def pods_are(names: set[str]) -> bool:
        running = _running_pods(core_v1, namespace, "app=web", len(names))
        sts = apps_v1.read_namespaced_stateful_set_status("web", namespace)
        return (
            running is not None
            and {pod.metadata.name for pod in running if pod.metadata} == names
            and sts.status is not None
            and sts.status.ready_replicas == len(names)
            and len(_pods(core_v1, namespace, "app=web")) == len(names)
        )

    for replicas in (1, 3, 1):
        apps_v1.patch_namespaced_stateful_set_scale(
            "web", namespace, {"spec": {"replicas": replicas}}
        )
        expected = {f"web-{i}" for i in range(replicas)}

        def scaled(expected: set[str] = expected) -> bool:
            return pods_are(expected)

        def wanted(expected: set[str] = expected) -> str:
            return f"want {sorted(expected)}: {_describe_pods(core_v1, namespace, 'app=web')}"

        wait_for(scaled, timeout=90, message=wanted)


# -- (d) RBAC ---------------------------------------------------------------------------------


def _client_with_token(cluster: ClusterHandle, token: str) -> client.ApiClient:
    admin = cluster.api_client.configuration
    configuration = client.Configuration()
    configuration.host = admin.host
    configuration.ssl_ca_cert = admin.ssl_ca_cert
    configuration.verify_ssl = admin.verify_ssl
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def test_service_account_needs_a_role_binding_to_list_pods(
    cluster: ClusterHandle,
    core_v1: client.CoreV1Api,
    rbac_v1: client.RbacAuthorizationV1Api,
    namespace: str,
) -> None:
    core_v1.create_namespaced_service_account(
        namespace, client.V1ServiceAccount.model_validate({"metadata": {"name": "reader"}})
    )
    token_request = core_v1.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest.model_validate(
            {"spec": {"audiences": [], "expirationSeconds": 600}}
        ),
    )
    assert token_request.status is not None
    assert token_request.status.token is not None
    with _client_with_token(cluster, token_request.status.token) as api:
        as_reader = client.CoreV1Api(api)
        with pytest.raises(ApiException) as denied:
            as_reader.list_namespaced_pod(namespace)
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in str(denied.value.body)

        rbac_v1.create_namespaced_role(
            namespace,
            client.V1Role.model_validate(
                {
                    "metadata": {"name": "pod-reader"},
                    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
                }
            ),
        )
        rbac_v1.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding.model_validate(
                {
                    "metadata": {"name": "reader-reads-pods"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": "pod-reader",
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": "reader", "namespace": namespace}
                    ],
                }
            ),
        )

        def allowed() -> bool:
            try:
                as_reader.list_namespaced_pod(namespace)
            except ApiException as error:
                if error.status == 403:
                    return False
                raise
            return True

        wait_for(allowed, timeout=30, message="still forbidden after the RoleBinding")
        # The binding is namespaced: other namespaces and other verbs stay forbidden.
        with pytest.raises(ApiException) as elsewhere:
            as_reader.list_namespaced_pod("kube-system")
        assert elsewhere.value.status == 403
        with pytest.raises(ApiException) as delete:
            as_reader.delete_collection_namespaced_pod(namespace)
        assert delete.value.status == 403


# -- (e) Pod Security admission ---------------------------------------------------------------


def _pod(
    name: str, security_context: dict[str, Any], pod_context: dict[str, Any] | None = None
) -> client.V1Pod:
    spec: dict[str, Any] = {"containers": [{**_container(), "securityContext": security_context}]}
    if pod_context:
        spec["securityContext"] = pod_context
    return client.V1Pod.model_validate({"metadata": {"name": name}, "spec": spec})


PRIVILEGED = {"privileged": True}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 65532,
}
RESTRICTED_POD = {"seccompProfile": {"type": "RuntimeDefault"}}


def test_restricted_namespace_rejects_privileged_pod(
    core_v1: client.CoreV1Api, restricted_namespace: str, namespace: str
) -> None:
    with pytest.raises(ApiException) as rejected:
        core_v1.create_namespaced_pod(restricted_namespace, _pod("privileged", PRIVILEGED))
    assert rejected.value.status == 403
    assert rejected.value.body is not None
    message = json.loads(rejected.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert 'privileged (container "app" must not set securityContext.privileged=true)' in message
    assert _not_found(core_v1.read_namespaced_pod, "privileged", restricted_namespace)

    # A pod that meets the standard is admitted there...
    core_v1.create_namespaced_pod(
        restricted_namespace, _pod("compliant", RESTRICTED_CONTAINER, RESTRICTED_POD)
    )
    # ...and the privileged pod is admitted where no policy is enforced.
    core_v1.create_namespaced_pod(namespace, _pod("privileged", PRIVILEGED))


# -- (f) garbage collection -------------------------------------------------------------------


def test_deleting_owner_garbage_collects_dependents(
    core_v1: client.CoreV1Api, namespace: str
) -> None:
    owner = core_v1.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap.model_validate(
            {"metadata": {"name": "owner"}, "data": {"role": "owner"}}
        ),
    )
    assert owner.metadata is not None
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
    }
    dependent = {"metadata": {"name": "dependent", "ownerReferences": [reference]}}
    core_v1.create_namespaced_config_map(namespace, client.V1ConfigMap.model_validate(dependent))
    core_v1.create_namespaced_secret(namespace, client.V1Secret.model_validate(dependent))
    core_v1.create_namespaced_config_map(
        namespace, client.V1ConfigMap.model_validate({"metadata": {"name": "unrelated"}})
    )

    core_v1.delete_namespaced_config_map("owner", namespace)
    wait_for(
        lambda: (
            _not_found(core_v1.read_namespaced_config_map, "dependent", namespace)
            and _not_found(core_v1.read_namespaced_secret, "dependent", namespace)
        ),
        timeout=60,
        message="the garbage collector left the dependents",
    )
    core_v1.read_namespaced_config_map("unrelated", namespace)  # still there


def test_deleting_deployment_garbage_collects_replicasets_and_pods(
    core_v1: client.CoreV1Api, apps_v1: client.AppsV1Api, namespace: str
) -> None:
    apps_v1.create_namespaced_deployment(namespace, _deployment("gc", 2))
    wait_for(lambda: _running_pods(core_v1, namespace, "app=gc", 2), timeout=60)
    replica_sets = apps_v1.list_namespaced_replica_set(namespace, label_selector="app=gc").items
    assert len(replica_sets) == 1

    apps_v1.delete_namespaced_deployment("gc", namespace)
    wait_for(
        lambda: (
            not apps_v1.list_namespaced_replica_set(namespace, label_selector="app=gc").items
            and not _pods(core_v1, namespace, "app=gc")
        ),
        timeout=60,
        message=lambda: f"left behind: {_describe_pods(core_v1, namespace, 'app=gc')}",
    )


# -- the command line -------------------------------------------------------------------------


def _hda() -> str:
    return str(Path(sys.executable).with_name("hda"))


def test_cli_up_is_idempotent_and_env_prints_kubeconfig(cluster: ClusterHandle) -> None:
    plane = cluster.local
    if plane is None:
        pytest.skip("needs the local plane")
    before = plane.state()
    assert before is not None
    environment = {**os.environ, "HDA_STATE_DIR": str(plane.layout.state_dir.parent.parent)}
    started = time.monotonic()
    up = subprocess.run(
        [_hda(), "cluster", "up", "--name", plane.name, "--nodes", "3", "--fc-nodes", "2"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"export KUBECONFIG={plane.kubeconfig}"
    after = plane.state()
    assert after is not None
    assert [r.pid for r in after.processes] == [r.pid for r in before.processes]
    print(f"idempotent `hda cluster up` took {elapsed:.1f}s")  # noqa: T201

    env = subprocess.run(
        [_hda(), "cluster", "env", "--name", plane.name],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert env.stdout.strip() == f"export KUBECONFIG={plane.kubeconfig}"
    missing = subprocess.run(
        [_hda(), "cluster", "env", "--name", "never-started"],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode != 0
    assert "is not up" in missing.stderr


def test_failing_component_is_named_with_its_log(cluster: ClusterHandle, tmp_path: Path) -> None:
    """A kube-apiserver that cannot start (etcd is real) fails `up` naming it and its log."""
    if cluster.bin_dir is None:
        pytest.skip("needs the pinned binaries")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for binary in cluster.bin_dir.iterdir():
        (bin_dir / binary.name).symlink_to(binary)
    broken = bin_dir / "kube-apiserver"
    broken.unlink()
    broken.write_text("#!/bin/sh\necho 'cannot open the storage backend' >&2\nexit 3\n")
    broken.chmod(0o755)
    plane = LocalCluster("broken", state_root=tmp_path / "state", bin_dir=bin_dir)
    with pytest.raises(ComponentFailedError) as failed:
        plane.up(nodes=1, fc_nodes=0)
    error = failed.value
    assert error.component == "kube-apiserver"
    assert error.log_path == plane.layout.log_path("kube-apiserver")
    assert str(error.log_path) in str(error)
    assert "cannot open the storage backend" in str(error)
    state = plane.state()
    assert state is not None
    etcd = next(r for r in state.processes if r.component == "etcd")
    assert not processes.alive(etcd.pid), "etcd kept running after the failed up"
    plane.down()
