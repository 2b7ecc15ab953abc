"""Issue 11 on real nodes: a replicated (Sentinel) and a cluster HDA, each with `acknowledge:
replica`, lose a Valkey primary's pod (`kubectl delete pod --grace-period=0 --force`) while a
producer pod sends events through the ingest Service. Ingest only ever answers 202, or 429/503
with Retry-After, and every acknowledged event lands exactly once, the batches the producer
sent again (with their Idempotency-Key) included.

Each topology runs twice:
- replacement-held: the primary's node is cordoned for the kill, so the replacement pod (bound
  to that node by its local volume) stays Pending until status.redis shows the new primary and
  lastFailoverTime; then the node is uncordoned, as after a node loss. Kill -> failover seen and
  kill -> first 202 after it are logged.
- replacement-at-once: a plain delete. The StatefulSet's replacement is back within ~2 s with
  its data and node ID, inside the 5 s failure detection, so Valkey may keep it as the primary
  (a cluster does: no failover at all); no failover is required, the rest is.

A third test rolls every Valkey pod (a pod template change) while events flow: each primary
is failed over before its pod is deleted.

One HDA per test, deleted after it, with small requests (the real nodes report the host's two
CPUs, and the whole tier shares them).
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from tests.e2e.test_pipeline import (
    OPERATOR_NAMESPACE,
    client_pod,
    condition,
    events_in_files,
    fc_segment_files,
    kubectl_json,
    log_figure,
    operator_release,  # noqa: F401 (the module fixture: helm install of the chart)
)

from hda.cluster.testing import ClusterHandle, wait_for

pytestmark = pytest.mark.e2e

NAMESPACE = "topologies"
EVENTS = 40_000
#: About 80 s of events: the failover (Sentinel's 5 s down-after, the cluster's 5 s node
#: timeout, then the election) happens well inside it.
RATE = 500
SMALL = {"requests": {"cpu": "10m", "memory": "64Mi"}}
#: What ingest may answer while a primary is lost; every refusal must carry Retry-After.
ALLOWED_STATUSES = {"202", "429", "503"}


def hda_manifest(name: str, redis: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "hda.shitops.dev/v1alpha1",
        "kind": "HyperDriveAccelerator",
        "metadata": {"name": name},
        "spec": {
            "streams": [{"name": "events"}],
            "redis": {
                **redis,
                "acknowledge": "replica",
                "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
                "storage": {"size": "1Gi"},
            },
            "ingest": {"replicas": 1},
            "workers": {"replicas": 1, "resources": SMALL},
            "output": {"replicas": 1, "resources": SMALL},
            "template": {"ingest": {"resources": SMALL}},
        },
    }


def get_hda(cluster: ClusterHandle, name: str) -> dict[str, Any]:
    return kubectl_json(cluster, "-n", NAMESPACE, "get", "hda", name)


def buffer_status(cluster: ClusterHandle, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get_hda(cluster, name).get("status", {}).get("redis", {})
    return status


def primaries(cluster: ClusterHandle, name: str) -> dict[str, str | None]:
    """StatefulSet -> the pod status.redis names its primary."""
    return {s["name"]: s.get("primary") for s in buffer_status(cluster, name).get("shards", [])}


@pytest.fixture(scope="module")
def topology_namespace(real_cluster: ClusterHandle, operator_release: str) -> Iterator[str]:  # noqa: F811
    real_cluster.kubectl("create", "namespace", NAMESPACE)
    yield NAMESPACE
    real_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def deploy(cluster: ClusterHandle, manifest: dict[str, Any]) -> str:
    """Apply, wait for Ready and for status.redis to know every primary with a replica in sync."""
    name: str = manifest["metadata"]["name"]
    started = time.monotonic()
    cluster.kubectl("-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: condition(get_hda(cluster, name).get("status", {}), "Ready"), timeout=180,
             message=f"the operator never wrote a Ready condition on {name}")  # fmt: skip
    cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=Ready", f"hda/{name}",
                    "--timeout=900s", timeout=920)  # fmt: skip

    def formed() -> bool:
        shards = buffer_status(cluster, name).get("shards", [])
        return bool(shards) and all(
            s.get("primary") and s.get("replicasInSync", 0) >= 1 for s in shards
        )

    wait_for(formed, timeout=300, interval=2,
             message=lambda: f"{name}: buffer not formed: {buffer_status(cluster, name)}")  # fmt: skip
    log_figure(f"{name}: apply -> Ready and formed (s)", round(time.monotonic() - started, 1))
    return name


def start_producer(cluster: ClusterHandle, hda: str, events: int = EVENTS) -> str:
    image: str = get_hda(cluster, hda)["status"]["images"]["runtime"]
    pod = f"producer-{hda}"
    args = ["load", f"http://{hda}-ingest.{NAMESPACE}.svc:8080", "--events", str(events),
            "--producer", hda, "--transport", "rest", "--rate", str(RATE), "--batch", "100"]  # fmt: skip
    cluster.kubectl("-n", NAMESPACE, "apply", "-f", "-",
                    input=json.dumps(client_pod(pod, image, args)))  # fmt: skip
    return pod


def pod_phase(cluster: ClusterHandle, pod: str) -> str:
    return str(kubectl_json(cluster, "-n", NAMESPACE, "get", "pod", pod)["status"].get("phase"))


def kill_primary_and_check(
    cluster: ClusterHandle, hda: str, statefulset: str, *, hold_replacement: bool
) -> None:
    """The shared proof: kill `statefulset`'s primary mid-stream, then check everything.
    `hold_replacement`: cordon the primary's node until the failover is seen (module doc)."""
    producer = start_producer(cluster, hda)
    wait_for(lambda: pod_phase(cluster, producer) == "Running", timeout=180,
             message=f"{producer} never ran")  # fmt: skip
    time.sleep(15)  # events flowing through the whole pipeline
    before = primaries(cluster, hda)
    victim = before[statefulset]
    assert victim, before

    def failed_over() -> dict[str, Any] | None:
        status = buffer_status(cluster, hda)
        now = {s["name"]: s.get("primary") for s in status.get("shards", [])}
        moved = now.get(statefulset) not in (None, victim)
        return status if moved and status.get("lastFailoverTime") else None

    node = kubectl_json(cluster, "-n", NAMESPACE, "get", "pod", victim)["spec"]["nodeName"]
    if hold_replacement:
        cluster.kubectl("cordon", node)
    try:
        killed_at = time.time()
        cluster.kubectl("-n", NAMESPACE, "delete", "pod", victim, "--grace-period=0", "--force",
                        "--wait=false")  # fmt: skip
        log_figure(f"{hda}: killed primary", victim)
        if hold_replacement:
            status = wait_for(failed_over, timeout=180, interval=1,
                              message=lambda: f"{hda}: no failover seen: {buffer_status(cluster, hda)}")  # fmt: skip
            log_figure(f"{hda}: kill -> failover seen in status.redis (s)",
                       round(time.time() - killed_at, 1))  # fmt: skip
            log_figure(f"{hda}: status.redis after the failover", status)
    finally:
        if hold_replacement:
            cluster.kubectl("uncordon", node)

    report = check_every_event_once(cluster, hda, producer)
    log_figure(f"{hda}: answers after the kill (s after it, status)",
               [(round(at - killed_at, 1), status) for at, status in report["timeline"]
                if at >= killed_at])  # fmt: skip
    log_figure(f"{hda}: kill -> first 202 after failover (s)",
               first_ack_after_outage(report["timeline"], killed_at))  # fmt: skip
    if not hold_replacement:
        log_figure(f"{hda}: status.redis at the end", buffer_status(cluster, hda))


def check_every_event_once(cluster: ClusterHandle, hda: str, producer: str) -> dict[str, Any]:
    """Wait for the producer; check it saw only allowed answers and that every event it sent
    is in output exactly once. Returns the producer's report."""
    wait_for(lambda: pod_phase(cluster, producer) in ("Succeeded", "Failed"), timeout=900,
             interval=3, message=f"{producer} did not finish")  # fmt: skip
    log = cluster.kubectl("-n", NAMESPACE, "logs", producer).stdout
    assert pod_phase(cluster, producer) == "Succeeded", log[-2000:]
    report: dict[str, Any] = orjson.loads(log.strip().splitlines()[-1])
    events = report["events"]
    log_figure(f"{hda}: producer", {k: v for k, v in report.items() if k != "timeline"})
    assert set(report["statuses"]) <= ALLOWED_STATUSES, report["statuses"]
    assert report["acked_events"] == events, report

    def delivered() -> collections.Counter[tuple[str, int]] | None:
        seen = events_in_files(fc_segment_files(cluster))
        ours = collections.Counter({k: n for k, n in seen.items() if k[0] == hda})
        return ours if len(ours) >= events else None

    seen = wait_for(delivered, timeout=600, interval=5,
                    message=lambda: f"{hda}: not every acknowledged event landed")  # fmt: skip
    assert sorted({s for _, s in seen}) == list(range(events)), "acknowledged events lost"
    # A batch refused (503) may have been stored before the refusal (WAITAOF or the connection
    # failed); the producer sends it again with its Idempotency-Key, so it is stored once.
    duplicated = sorted(s for (_, s), count in seen.items() if count > 1)
    log_figure(f"{hda}: resent batches, of them replayed (stored by an earlier attempt)",
               (len(report["resent_batches"]), report["replayed_batches"]))  # fmt: skip
    log_figure(f"{hda}: events twice in output", len(duplicated))
    assert not duplicated, f"{len(duplicated)} events twice in output: {duplicated[:5]}"
    return report


def first_ack_after_outage(timeline: list[list[Any]], killed_at: float) -> float | str:
    """Seconds from the kill to the first 202 that follows a refusal seen after the kill."""
    refused = False
    for at, status in timeline:
        if at < killed_at:
            continue
        if status != "202":
            refused = True
        elif refused:
            return round(float(at) - killed_at, 2)
    return "no refusal after the kill (the failover was invisible to the producer)"


HOLD_REPLACEMENT = pytest.mark.parametrize(
    "hold_replacement", [True, False], ids=["replacement-held", "replacement-at-once"]
)


def delete_hda(cluster: ClusterHandle, name: str) -> None:
    """Free the shared CPUs for the next test (the namespace goes at the module's end)."""
    cluster.kubectl("-n", NAMESPACE, "delete", "hda", name, "--wait=false", check=False)


@HOLD_REPLACEMENT
def test_replicated_primary_deleted_while_events_flow(
    real_cluster: ClusterHandle, topology_namespace: str, hold_replacement: bool
) -> None:
    name = "rep-held" if hold_replacement else "rep-fast"
    hda = deploy(real_cluster, hda_manifest(name, {"topology": "replicated", "replicas": 2}))
    try:
        kill_primary_and_check(
            real_cluster, hda, f"{hda}-valkey", hold_replacement=hold_replacement
        )
    finally:
        delete_hda(real_cluster, hda)


@HOLD_REPLACEMENT
def test_cluster_shard_primary_deleted_while_events_flow(
    real_cluster: ClusterHandle, topology_namespace: str, hold_replacement: bool
) -> None:
    name = "clu-held" if hold_replacement else "clu-fast"
    hda = deploy(
        real_cluster, hda_manifest(name, {"topology": "cluster", "shards": 3, "replicas": 1})
    )
    try:
        kill_primary_and_check(
            real_cluster, hda, f"{hda}-valkey-shard-1", hold_replacement=hold_replacement
        )
    finally:
        delete_hda(real_cluster, hda)


#: Events for a rollout: ~2 min at RATE, so every pod of a topology restarts under load.
ROLLOUT_EVENTS = 60_000


def operator_actions(cluster: ClusterHandle, hda: str) -> list[str]:
    """The buffer actions (`DeletePod(...)`, `Failover(...)`, ...) the operator logged for
    `hda`, in order."""
    text = cluster.kubectl("-n", OPERATOR_NAMESPACE, "logs", "deployment/hda-operator",
                           "--tail=-1").stdout  # fmt: skip
    actions = []
    for line in text.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        # kopf's JSON log lines carry the message as "message"
        if entry.get("message") == "buffer action" and str(entry.get("hda")).endswith(f"/{hda}"):
            actions.append(str(entry["action"]))
    return actions


def update_revisions(cluster: ClusterHandle, statefulsets: list[str]) -> dict[str, str]:
    return {
        name: str(kubectl_json(cluster, "-n", NAMESPACE, "get", "statefulset", name)["status"]
                  .get("updateRevision"))
        for name in statefulsets
    }  # fmt: skip


def rolled_out(cluster: ClusterHandle, revisions_before: dict[str, str]) -> bool:
    """Every StatefulSet has a new update revision, and all its pods run it and are ready."""
    for statefulset, before in revisions_before.items():
        live = kubectl_json(cluster, "-n", NAMESPACE, "get", "statefulset", statefulset)
        wanted, status = live["spec"]["replicas"], live["status"]
        if status.get("updateRevision") == before:
            return False
        if status.get("updatedReplicas", 0) != wanted or status.get("readyReplicas", 0) != wanted:
            return False
    return True


@pytest.mark.parametrize("topology", ["replicated", "cluster"])
def test_valkey_rollout_fails_over_before_it_restarts_a_primary(
    real_cluster: ClusterHandle, topology_namespace: str, topology: str
) -> None:
    """A change to the Valkey pod template rolls every Valkey pod while events flow: each
    primary is failed over before its pod is deleted, ingest answers only 202 or 503 with
    Retry-After, and every event lands once."""
    redis = (
        {"topology": "replicated", "replicas": 2}
        if topology == "replicated"
        else {"topology": "cluster", "shards": 3, "replicas": 1}
    )
    hda = deploy(real_cluster, hda_manifest(f"roll-{topology[:3]}", redis))
    try:
        before = primaries(real_cluster, hda)
        producer = start_producer(real_cluster, hda, ROLLOUT_EVENTS)
        wait_for(lambda: pod_phase(real_cluster, producer) == "Running", timeout=180,
                 message=f"{producer} never ran")  # fmt: skip
        time.sleep(10)  # events flowing through the whole pipeline
        earlier = len(operator_actions(real_cluster, hda))
        revisions = update_revisions(real_cluster, list(before))
        started = time.monotonic()
        patch = {"spec": {"redis": {"resources": {"requests": {"cpu": "12m", "memory": "64Mi"}}}}}
        real_cluster.kubectl("-n", NAMESPACE, "patch", "hda", hda, "--type=merge",
                             "-p", json.dumps(patch))  # fmt: skip
        wait_for(lambda: rolled_out(real_cluster, revisions), timeout=900, interval=3,
                 message=lambda: f"{hda}: rollout unfinished: {buffer_status(real_cluster, hda)}")  # fmt: skip
        log_figure(f"{hda}: patch -> every Valkey pod rolled (s)",
                   round(time.monotonic() - started, 1))  # fmt: skip
        actions = operator_actions(real_cluster, hda)[earlier:]
        log_figure(f"{hda}: operator actions during the rollout", actions)
        for statefulset, primary in before.items():
            deleted = f"DeletePod(pod='{primary}')"
            assert deleted in actions, f"{primary} (primary of {statefulset}) was not rolled"
            failovers = [
                i for i, a in enumerate(actions) if a.startswith(f"Failover(group='{statefulset}'")
            ]
            assert failovers, f"{statefulset}: no failover in {actions}"
            assert failovers[0] < actions.index(deleted), f"{primary} deleted before a failover"
        # Before SENTINEL FAILOVER the operator pauses the old primary's writes: without that,
        # writes it took during the failover reached only the other replica and were lost when
        # it resynced (docs/topologies.md, "Rolling updates"). CLUSTER FAILOVER is coordinated.
        check_every_event_once(real_cluster, hda, producer)
    finally:
        delete_hda(real_cluster, hda)


#: Events while a cluster grows and shrinks: ~200 s at RATE.
SCALING_EVENTS = 100_000


def shard_slots(cluster: ClusterHandle, hda: str) -> dict[str, int]:
    """StatefulSet -> slots its primary serves, as status.redis says."""
    return {s["name"]: s.get("slots", 0) for s in buffer_status(cluster, hda).get("shards", [])}


def statefulset_exists(cluster: ClusterHandle, name: str) -> bool:
    found = cluster.kubectl("-n", NAMESPACE, "get", "statefulset", name, "--ignore-not-found",
                            "-o", "name").stdout  # fmt: skip
    return bool(found.strip())


def test_cluster_grows_to_four_shards_and_back_to_three_under_load(
    real_cluster: ClusterHandle, topology_namespace: str
) -> None:
    """spec.redis.shards 3 -> 4 -> 3 while events flow: the slots are spread over the fourth
    shard, then moved off it before its StatefulSet goes; every event lands once."""
    hda = deploy(
        real_cluster, hda_manifest("scale", {"topology": "cluster", "shards": 3, "replicas": 1})
    )
    fourth = f"{hda}-valkey-shard-3"
    try:
        producer = start_producer(real_cluster, hda, SCALING_EVENTS)
        wait_for(lambda: pod_phase(real_cluster, producer) == "Running", timeout=180,
                 message=f"{producer} never ran")  # fmt: skip
        time.sleep(10)
        started = time.monotonic()
        real_cluster.kubectl("-n", NAMESPACE, "patch", "hda", hda, "--type=merge",
                             "-p", json.dumps({"spec": {"redis": {"shards": 4}}}))  # fmt: skip

        def spread_over_four() -> dict[str, int] | None:
            slots = shard_slots(real_cluster, hda)
            even = len(slots) == 4 and all(4000 <= n <= 4200 for n in slots.values())
            return slots if even else None

        slots = wait_for(spread_over_four, timeout=600, interval=3,
                         message=lambda: f"{hda}: not resharded: {buffer_status(real_cluster, hda)}")  # fmt: skip
        log_figure(f"{hda}: shards 3 -> 4, patch -> slots even (s)",
                   round(time.monotonic() - started, 1))  # fmt: skip
        log_figure(f"{hda}: slots per shard", slots)
        log_figure(f"{hda}: last resharding", buffer_status(real_cluster, hda).get("lastReshard"))

        started = time.monotonic()
        real_cluster.kubectl("-n", NAMESPACE, "patch", "hda", hda, "--type=merge",
                             "-p", json.dumps({"spec": {"redis": {"shards": 3}}}))  # fmt: skip
        wait_for(lambda: not statefulset_exists(real_cluster, fourth), timeout=600, interval=3,
                 message=lambda: f"{hda}: {fourth} kept: {buffer_status(real_cluster, hda)}")  # fmt: skip
        log_figure(f"{hda}: shards 4 -> 3, patch -> {fourth} deleted (s)",
                   round(time.monotonic() - started, 1))  # fmt: skip
        slots = shard_slots(real_cluster, hda)
        log_figure(f"{hda}: slots per shard after shrinking", slots)
        assert sorted(slots) == [f"{hda}-valkey-shard-{n}" for n in range(3)]
        assert sum(slots.values()) == 16384
        check_every_event_once(real_cluster, hda, producer)
    finally:
        delete_hda(real_cluster, hda)
