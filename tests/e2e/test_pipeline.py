"""The README's path on real nodes, as a user types it: `helm install` the chart, `kubectl apply
-f examples/hda.yaml`, events in through the ingest Service from pods, out of the FC volumes,
with Valkey, worker and output pods killed, the HDA scaled, the workers rolled and a node
drained in between. Every acknowledged event lands exactly once.

The tests of this module run in order and share one pipeline (module fixtures): each step is
expensive on two cores.
"""

from __future__ import annotations

import collections
import functools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from hda.api.consts import LABEL_ACCELERATOR
from hda.cluster import FC_LABEL, oci
from hda.cluster.testing import ClusterHandle, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hda-operator"
EXAMPLE = ROOT / "examples" / "hda.yaml"
HEALTH_LUA = ROOT / "deploy" / "argocd" / "health.lua"
OPERATOR_NAMESPACE = "hda-system"
NAMESPACE = "pipelines"
HDA = "logs"
INGEST_URL = f"http://{HDA}-ingest.{NAMESPACE}.svc:8080"
EVENTS_PER_PRODUCER = 100_000
PRODUCERS = {"rest": "rest", "ws": "ws"}
#: Slow enough that the kills below happen while events flow (about 80 s in all).
RATE_PER_PRODUCER = 1250
RUNTIME_UID = 10001


def log_figure(name: str, value: object) -> None:
    """Figures the issue asks for, in the test log (pytest -s or the CI output)."""
    sys.stderr.write(f"[e2e] {name}: {value}\n")


def kubectl_json(cluster: ClusterHandle, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return result


def hda_status(cluster: ClusterHandle, name: str = HDA) -> dict[str, Any]:
    status: dict[str, Any] = kubectl_json(cluster, "-n", NAMESPACE, "get", "hda", name).get(
        "status", {}
    )
    return status


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in status.get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return {}


@pytest.fixture(scope="module")
def operator_release(
    real_cluster: ClusterHandle, app_images: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`helm install` exactly as the README says; the operator runs in its pod."""
    home = tmp_path_factory.mktemp("helm")
    real_cluster.helm(home, "install", "hda-operator", str(CHART),
         "--namespace", OPERATOR_NAMESPACE, "--create-namespace")  # fmt: skip
    real_cluster.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "status",
                         "deployment/hda-operator", "--timeout=300s", timeout=320)  # fmt: skip
    yield "hda-operator"
    real_cluster.helm(home, "uninstall", "hda-operator", "-n", OPERATOR_NAMESPACE, check=False)


@pytest.fixture(scope="module")
def pipeline(real_cluster: ClusterHandle, operator_release: str) -> Iterator[str]:
    real_cluster.kubectl("create", "namespace", NAMESPACE)
    started = time.monotonic()
    real_cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
    # `kubectl wait` fails at once while .status.conditions is still absent: poll until it exists.
    wait_for(lambda: condition(hda_status(real_cluster), "Ready"), timeout=120,
             message="the operator never wrote a Ready condition")  # fmt: skip
    real_cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"hda/{HDA}",
                         "--timeout=600s", timeout=620)  # fmt: skip
    log_figure("apply -> Ready (s)", round(time.monotonic() - started, 1))
    yield HDA
    real_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_ready_pipeline_reports_measured_lag(real_cluster: ClusterHandle, pipeline: str) -> None:
    status = wait_for(
        lambda: (s := hda_status(real_cluster)).get("streams") and s,
        timeout=120,
        message=lambda: f"no stream figures in {hda_status(real_cluster)}",
    )
    (stream,) = status["streams"]
    assert isinstance(stream.get("lag"), int), stream
    assert "unknown" not in json.dumps(status.get("conditions", []))


def client_pod(name: str, image: str, args: list[str]) -> dict[str, Any]:
    """A producer pod that passes the restricted Pod Security Standard."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "e2e-producer"}},
        "spec": {
            "restartPolicy": "Never",
            # Beside Valkey and output on the FC node: the node the test drains must hold only
            # pods with a controller, and a producer must not be restarted (it would resend).
            "nodeSelector": {FC_LABEL: "true"},
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUNTIME_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "load",
                    "image": image,
                    "args": args,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def pods(cluster: ClusterHandle, component: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl_json(
        cluster,
        "-n",
        NAMESPACE,
        "get",
        "pods",
        "-l",
        f"app.kubernetes.io/component={component},{LABEL_ACCELERATOR}={HDA}",
    )["items"]
    return items


def runtime_image(cluster: ClusterHandle) -> str:
    image: str = hda_status(cluster)["images"]["runtime"]
    return image


def fc_segment_files(cluster: ClusterHandle) -> list[Path]:
    """Segment files as the kubelet mounted them from the FC stand-in block devices."""
    assert cluster.local is not None
    files: list[Path] = []
    for root in cluster.local.kubelet_root_dirs():
        files.extend(root.glob("pods/*/volumes/kubernetes.io~local-volume/*/**/segment-*.ndjson"))
    return sorted(files)


def events_in_files(files: list[Path]) -> collections.Counter[tuple[str, int]]:
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    for path in files:
        for line in path.read_bytes().splitlines():
            if not line.startswith(b'{"id":'):
                continue
            for event in orjson.loads(line)["events"]:
                seen[(event["p"], event["s"])] += 1
    return seen


def producer_finished(cluster: ClusterHandle, producer: str) -> bool:
    pod = kubectl_json(cluster, "-n", NAMESPACE, "get", "pod", f"producer-{producer}")
    return pod["status"].get("phase") in ("Succeeded", "Failed")


def drain_a_worker_node(cluster: ClusterHandle) -> str:
    """Drain a node that runs workers but neither Valkey nor output (their volumes are local)."""
    pinned = {p["spec"].get("nodeName") for c in ("valkey", "output") for p in pods(cluster, c)}
    worker_nodes = [p["spec"].get("nodeName") for p in pods(cluster, "workers")]
    candidates = [node for node in worker_nodes if node and node not in pinned]
    assert candidates, f"no drainable worker node: workers on {worker_nodes}, pinned {pinned}"
    node = candidates[0]
    cluster.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                    "--timeout=180s", timeout=200)  # fmt: skip
    return str(node)


def test_every_acknowledged_event_lands_once_through_kills(
    real_cluster: ClusterHandle, pipeline: str
) -> None:
    k = real_cluster.kubectl
    # Every acknowledged event must survive the Valkey pod's deletion: fsync each write.
    k("-n", NAMESPACE, "patch", "hda", HDA, "--type=merge",
      "-p", '{"spec":{"redis":{"persistence":{"appendFsync":"always"}}}}')  # fmt: skip
    wait_for(lambda: condition(hda_status(real_cluster), "Ready").get("status") == "True",
             timeout=300, message="not Ready after appendFsync: always")  # fmt: skip
    image = runtime_image(real_cluster)
    for producer, transport in PRODUCERS.items():
        args = ["load", INGEST_URL, "--events", str(EVENTS_PER_PRODUCER), "--producer", producer,
                "--transport", transport, "--rate", str(RATE_PER_PRODUCER), "--batch", "250"]  # fmt: skip
        k("-n", NAMESPACE, "apply", "-f", "-",
          input=json.dumps(client_pod(f"producer-{producer}", image, args)))  # fmt: skip
    kills: collections.Counter[str] = collections.Counter()

    def events_so_far() -> int:
        return sum(s.get("length", 0) for s in hda_status(real_cluster).get("streams", []))

    wait_for(lambda: events_so_far() > 0, timeout=180, message="no event reached Valkey")
    # Valkey deleted mid-stream (graceful, as `kubectl delete pod` does).
    k("-n", NAMESPACE, "delete", "pod", "-l", "app.kubernetes.io/component=valkey", "--wait=false")
    kills["valkey"] += 1
    time.sleep(10)
    for component in ("workers", "output"):
        k("-n", NAMESPACE, "delete", "pod", "-l", f"app.kubernetes.io/component={component}",
          "--grace-period=0", "--force", "--wait=false")  # fmt: skip
        kills[component] += len(pods(real_cluster, component))
    time.sleep(10)
    k("-n", NAMESPACE, "scale", "hda", HDA, "--replicas=3")
    time.sleep(10)
    # A spec change that rolls the workers: a pipeline step that keeps every event.
    k("-n", NAMESPACE, "patch", "hda", HDA, "--type=merge", "-p",
      '{"spec":{"workers":{"pipeline":[{"setFields":{"fields":{"stage":"e2e"}}}]}}}')  # fmt: skip
    time.sleep(10)
    drained = drain_a_worker_node(real_cluster)
    kills["drained"] += 1
    try:
        reports = {}
        for producer in PRODUCERS:
            wait_for(functools.partial(producer_finished, real_cluster, producer), timeout=900,
                     message=f"producer {producer} did not finish")  # fmt: skip
            log = k("-n", NAMESPACE, "logs", f"producer-{producer}").stdout
            reports[producer] = orjson.loads(log.strip().splitlines()[-1])
            assert reports[producer]["acked_events"] == EVENTS_PER_PRODUCER, reports[producer]
        log_figure("producers", reports)
        log_figure("kills", dict(kills))
        total = EVENTS_PER_PRODUCER * len(PRODUCERS)

        def delivered() -> collections.Counter[tuple[str, int]] | None:
            seen = events_in_files(fc_segment_files(real_cluster))
            return seen if sum(seen.values()) >= total else None

        seen = wait_for(delivered, timeout=600, interval=5,
                        message=lambda: f"{sum(events_in_files(fc_segment_files(real_cluster)).values())} of {total} events in the FC files")  # fmt: skip
    finally:
        k("uncordon", drained, check=False)
    duplicated = [key for key, count in seen.items() if count > 1]
    assert not duplicated, f"{len(duplicated)} events twice, e.g. {duplicated[:5]}"
    for producer in PRODUCERS:
        missing = [s for s in range(EVENTS_PER_PRODUCER) if (producer, s) not in seen]
        assert not missing, (
            f"{producer}: {len(missing)} acknowledged events lost, e.g. {missing[:5]}"
        )
    assert sum(seen.values()) == total


def test_subscribe_serves_the_whole_stream_from_every_output_pod(
    real_cluster: ClusterHandle, pipeline: str, tmp_path: Path
) -> None:
    """Each output pod's subscribe endpoint, reached through `kubectl port-forward` (the
    kubelet's authenticated API), replays every event of the stream once, whichever pod wrote
    it: the pod merges what its peers wrote (what the `NAME-output` Service offers clients)."""
    in_files = events_in_files(fc_segment_files(real_cluster))
    for pod in pods(real_cluster, "output"):
        seen: collections.Counter[tuple[str, int]] = collections.Counter()
        name = pod["metadata"]["name"]
        forward = subprocess.Popen(
            [real_cluster.binary("kubectl"), f"--kubeconfig={real_cluster.kubeconfig}",
             "-n", NAMESPACE, "port-forward", f"pod/{name}", ":8081"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert forward.stdout is not None
            line = forward.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8081"
            assert "Forwarding from 127.0.0.1:" in line, line + (
                forward.stderr.read() if forward.stderr else ""
            )
            port = line.split("127.0.0.1:", 1)[1].split()[0]
            result = subprocess.run(
                [sys.executable, "-m", "hda", "tail",
                 f"ws://127.0.0.1:{port}/v1/streams/events/subscribe", "--idle-timeout", "10"],
                capture_output=True, timeout=600, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            for record in result.stdout.splitlines():
                for event in orjson.loads(record)["events"]:
                    seen[(event["p"], event["s"])] += 1
        finally:
            forward.terminate()
            forward.wait(timeout=30)
        assert seen == in_files, name
        assert sum(seen.values()) == EVENTS_PER_PRODUCER * len(PRODUCERS)


UPGRADE_TAG = "0.1.0-upgrade"
UPGRADE_EVENTS = 50_000


def template_image(cluster: ClusterHandle, kind: str, name: str) -> str:
    workload = kubectl_json(cluster, "-n", NAMESPACE, "get", kind, name)
    return str(workload["spec"]["template"]["spec"]["containers"][0]["image"])


def rolled_out(cluster: ClusterHandle, kind: str, name: str) -> bool:
    """What `kubectl rollout status` waits for: every replica updated, ready and available."""
    workload = kubectl_json(cluster, "-n", NAMESPACE, "get", kind, name)
    want = workload["spec"].get("replicas", 1)
    status = workload.get("status", {})
    return bool(
        status.get("observedGeneration", 0) >= workload["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == want
        and status.get("readyReplicas", 0) == want
        and status.get("replicas", 0) == want
    )


def test_operator_upgrade_rolls_workers_first_without_losing_events(
    real_cluster: ClusterHandle, pipeline: str, tmp_path: Path
) -> None:
    """`helm upgrade` with a new default runtime image moves the unpinned pipeline: the workers
    roll first, ingest and output only once the workers' rollout is complete, while a producer
    keeps sending; every event still lands exactly once."""
    assert real_cluster.registry_url is not None
    repository = "shitops/hyperdrive-accelerator"
    old_image = runtime_image(real_cluster)
    new_image = f"{old_image.rsplit(':', 1)[0]}:{UPGRADE_TAG}"
    oci.retag(real_cluster.registry_url, repository, old_image.rsplit(":", 1)[1], UPGRADE_TAG)
    args = ["load", INGEST_URL, "--events", str(UPGRADE_EVENTS), "--producer", "upgrade",
            "--rate", str(RATE_PER_PRODUCER), "--batch", "250"]  # fmt: skip
    real_cluster.kubectl("-n", NAMESPACE, "apply", "-f", "-",
                         input=json.dumps(client_pod("producer-upgrade", old_image, args)))  # fmt: skip
    real_cluster.helm(tmp_path, "upgrade", "hda-operator", str(CHART), "-n", OPERATOR_NAMESPACE,
         "--reuse-values", "--set", f"defaultImages.runtime={new_image}")  # fmt: skip
    workloads = {
        "workers": ("deployment", f"{HDA}-workers"),
        "ingest": ("deployment", f"{HDA}-ingest"),
        "output": ("statefulset", f"{HDA}-output"),
    }
    switched: dict[str, float] = {}
    workers_done: float | None = None
    deadline = time.monotonic() + 600
    while len(switched) < len(workloads) and time.monotonic() < deadline:
        now = time.monotonic()
        for component, (kind, name) in workloads.items():
            if component not in switched and template_image(real_cluster, kind, name) == new_image:
                switched[component] = now
        workers_switched = workers_done is None and "workers" in switched
        if workers_switched and rolled_out(real_cluster, *workloads["workers"]):
            workers_done = now
        time.sleep(0.5)
    log_figure("upgrade switch times (s after the first)",
               {c: round(t - min(switched.values()), 1) for c, t in switched.items()})  # fmt: skip
    assert set(switched) == set(workloads), f"not every component moved: {switched}"
    assert workers_done is not None
    assert switched["ingest"] >= workers_done, "ingest moved before the workers had rolled out"
    assert switched["output"] >= workers_done, "output moved before the workers had rolled out"
    wait_for(functools.partial(producer_finished, real_cluster, "upgrade"), timeout=600,
             message="the upgrade producer did not finish")  # fmt: skip
    log = real_cluster.kubectl("-n", NAMESPACE, "logs", "producer-upgrade").stdout
    report = orjson.loads(log.strip().splitlines()[-1])
    assert report["acked_events"] == UPGRADE_EVENTS, report

    def upgrade_events() -> collections.Counter[tuple[str, int]] | None:
        seen = events_in_files(fc_segment_files(real_cluster))
        ours = collections.Counter({k: n for k, n in seen.items() if k[0] == "upgrade"})
        return ours if sum(ours.values()) >= UPGRADE_EVENTS else None

    seen = wait_for(upgrade_events, timeout=600, interval=5,
                    message="the upgrade producer's events did not all land")  # fmt: skip
    assert sorted(s for _, s in seen) == list(range(UPGRADE_EVENTS))
    assert set(seen.values()) == {1}
    assert hda_status(real_cluster)["images"]["runtime"] == new_image


def argocd_health(obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    from tests.unit.test_argocd_health import run_health  # one Lua harness for unit and e2e

    return run_health(obj, tmp_path)


def test_argocd_reports_the_live_pipeline_healthy(
    real_cluster: ClusterHandle, pipeline: str, tmp_path: Path
) -> None:
    live = kubectl_json(real_cluster, "-n", NAMESPACE, "get", "hda", HDA)
    assert argocd_health(live, tmp_path)[0] == "Healthy"


def test_argocd_reports_a_missing_runtime_image_degraded(
    real_cluster: ClusterHandle, pipeline: str, tmp_path: Path
) -> None:
    manifest = {
        "apiVersion": "hda.shitops.dev/v1alpha1",
        "kind": "HyperDriveAccelerator",
        "metadata": {"name": "no-image"},
        # Small requests: the real nodes' CPUs (the host's two) are mostly claimed by `logs`.
        "spec": {
            "image": "ghcr.io/shitops/hyperdrive-accelerator:does-not-exist",
            "streams": [{"name": "events"}],
            "redis": {"resources": {"requests": {"cpu": "10m"}}},
            "ingest": {"replicas": 1},
            "workers": {"replicas": 1, "resources": {"requests": {"cpu": "10m"}}},
            "output": {"replicas": 1, "resources": {"requests": {"cpu": "10m"}}},
        },
    }
    real_cluster.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(manifest))
    try:

        def degraded() -> tuple[str, str] | None:
            live = kubectl_json(real_cluster, "-n", NAMESPACE, "get", "hda", "no-image")
            health = argocd_health(live, tmp_path)
            return health if health[0] == "Degraded" else None

        _, message = wait_for(degraded, timeout=300, interval=3,
                                   message="Argo CD never saw the missing image as Degraded")  # fmt: skip
        assert "does-not-exist" in message or "ImagePull" in message, message
    finally:
        real_cluster.kubectl("-n", NAMESPACE, "delete", "hda", "no-image", "--wait=true",
                             "--timeout=300s", check=False, timeout=320)  # fmt: skip


def test_delete_removes_every_child_and_releases_the_fc_volumes(
    real_cluster: ClusterHandle, pipeline: str
) -> None:
    claims = [
        c["metadata"]["name"]
        for c in kubectl_json(real_cluster, "-n", NAMESPACE, "get", "pvc")["items"]
        if c["spec"].get("storageClassName") == "hda-fibre-channel"
        and c["metadata"]["name"].startswith(f"data-{HDA}-output-")
    ]
    assert claims
    # Output and Valkey claims outlive their HDA by default (the data is kept); a user who wants
    # the volumes back says so, and deleting the HDA then releases them.
    delete_claims = '{"pvcRetentionPolicy":{"whenDeleted":"Delete"}}'
    patch = f'{{"spec":{{"output":{delete_claims},"redis":{{"storage":{delete_claims}}}}}}}'
    real_cluster.kubectl("-n", NAMESPACE, "patch", "hda", HDA, "--type=merge", "-p", patch)
    wait_for(
        lambda: kubectl_json(real_cluster, "-n", NAMESPACE, "get", "statefulset", f"{HDA}-output")[
            "spec"
        ].get("persistentVolumeClaimRetentionPolicy", {}).get("whenDeleted") == "Delete",
        timeout=120, message="the output StatefulSet never got whenDeleted: Delete",
    )  # fmt: skip
    real_cluster.kubectl("-n", NAMESPACE, "delete", "hda", HDA, "--timeout=300s", timeout=320)

    def children_left() -> list[str]:
        names = []
        for kind in ("deployments", "statefulsets", "services", "configmaps", "pods",
                     "networkpolicies", "poddisruptionbudgets", "pvc"):  # fmt: skip
            for item in kubectl_json(real_cluster, "-n", NAMESPACE, "get", kind)["items"]:
                if item["metadata"].get("labels", {}).get(LABEL_ACCELERATOR) == HDA:
                    names.append(f"{kind}/{item['metadata']['name']}")
        return names

    wait_for(lambda: not children_left(), timeout=300, interval=2,
             message=lambda: f"children left: {children_left()}")  # fmt: skip
    wait_for(
        lambda: not [
            c for c in kubectl_json(real_cluster, "-n", NAMESPACE, "get", "pvc")["items"]
            if c["metadata"]["name"] in claims
        ],
        timeout=300, interval=2, message="the output claims were not deleted",
    )  # fmt: skip
    volumes = kubectl_json(real_cluster, "get", "pv")["items"]
    still_bound = [
        v["metadata"]["name"]
        for v in volumes
        if (v["spec"].get("claimRef") or {}).get("namespace") == NAMESPACE
        and (v["spec"].get("claimRef") or {}).get("name") in claims
        and v["status"].get("phase") == "Bound"
    ]
    assert not still_bound
