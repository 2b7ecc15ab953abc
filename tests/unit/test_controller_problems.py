"""Status tells the truth: pods that cannot run, rollouts past their deadline and a Valkey claim
without a StorageClass make Degraded=True with the reason, from recorded API objects."""

from __future__ import annotations

from typing import Any

from tests.unit.test_specs_support import children, example, images

from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.controller.kube import Kind, kind_of
from hda.controller.observe import NodeSummary, PodSummary, VolumeSummary, observe, pod_summary
from hda.controller.reasons import Reason
from hda.controller.status import Lag, Observation, compute_status
from hda.specs import child_names

T0 = "2026-11-30T06:00:00Z"
MISSING_IMAGE = "ghcr.io/shitops/hyperdrive-accelerator:0.0.0-missing"


def pod(
    name: str,
    *,
    component: str = "workers",
    waiting: dict[str, Any] | None = None,
    last_terminated: dict[str, Any] | None = None,
    scheduled: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod as the API server returns it (status fields as kubelet and scheduler write them)."""
    container: dict[str, Any] = {
        "name": component,
        "image": MISSING_IMAGE,
        "ready": waiting is None,
        "restartCount": 4 if last_terminated else 0,
        "state": {"waiting": waiting} if waiting else {"running": {"startedAt": T0}},
    }
    if last_terminated:
        container["lastState"] = {"terminated": last_terminated}
    status: dict[str, Any] = {"phase": "Pending" if waiting or scheduled else "Running"}
    if scheduled is not None:
        status["conditions"] = [{"type": "PodScheduled", **scheduled}]
    else:
        status["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        status["containerStatuses"] = [container]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "pipelines",
            "labels": {
                "app.kubernetes.io/name": "hyperdrive-accelerator",
                "app.kubernetes.io/component": component,
                "hda.shitops.dev/accelerator": "events",
            },
        },
        "status": status,
    }


IMAGE_PULL_BACK_OFF = {
    "reason": "ImagePullBackOff",
    "message": f'Back-off pulling image "{MISSING_IMAGE}"',
}
ERR_IMAGE_PULL = {
    "reason": "ErrImagePull",
    "message": f"failed to pull and unpack image {MISSING_IMAGE}: not found",
}
UNSCHEDULABLE = {
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
}


def test_image_pull_back_off_names_pod_container_and_image() -> None:
    (problem,) = pod_summary(pod("w-1", waiting=IMAGE_PULL_BACK_OFF)).problems
    assert problem.reason == Reason.IMAGE_PULL_FAILED
    assert problem.component == "workers"
    assert "w-1" in problem.message
    assert MISSING_IMAGE in problem.message
    assert "ImagePull" in problem.message


def test_err_image_pull_and_back_off_give_the_same_problem() -> None:
    # kubelet alternates between the two while it retries: the status must not flap.
    assert (
        pod_summary(pod("w-1", waiting=ERR_IMAGE_PULL)).problems
        == pod_summary(pod("w-1", waiting=IMAGE_PULL_BACK_OFF)).problems
    )


def test_crash_loop_names_the_last_exit() -> None:
    summary = pod_summary(
        pod(
            "w-2",
            waiting={"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"},
            last_terminated={"exitCode": 3, "reason": "Error"},
        )
    )
    (problem,) = summary.problems
    assert problem.reason == Reason.CRASH_LOOP_BACK_OFF
    assert "w-2" in problem.message
    assert "exit code 3" in problem.message


def test_unschedulable_pod_carries_the_schedulers_reason() -> None:
    (problem,) = pod_summary(pod("o-0", component="output", scheduled=UNSCHEDULABLE)).problems
    assert problem.reason == Reason.UNSCHEDULABLE
    assert problem.component == "output"
    assert "didn't match Pod's node affinity/selector" in problem.message


def test_missing_secret_key_is_a_container_config_problem() -> None:
    waiting = {
        "reason": "CreateContainerConfigError",
        "message": "couldn't find key password in Secret pipelines/valkey-auth",
    }
    (problem,) = pod_summary(pod("i-1", component="ingest", waiting=waiting)).problems
    assert problem.reason == Reason.CONTAINER_CONFIG_INVALID
    assert "valkey-auth" in problem.message


def test_running_pod_has_no_problem() -> None:
    assert pod_summary(pod("w-3")).problems == ()


class RecordedCache:
    """A cache of recorded objects, shaped like the operator's watch indexes."""

    def __init__(
        self,
        objects: list[dict[str, Any]],
        pods: list[dict[str, Any]] = (),  # type: ignore[assignment]
        storage_classes: dict[str, bool] | None = None,
    ) -> None:
        self._objects = objects
        self._pods = [pod_summary(p) for p in pods]
        self._classes = storage_classes if storage_classes is not None else {"standard": True}

    def children(self, kind: Kind, namespace: str, accelerator: str) -> list[dict[str, Any]]:
        del accelerator
        return [
            o
            for o in self._objects
            if kind_of(o) == kind and o["metadata"].get("namespace") == namespace
        ]

    def nodes(self) -> list[NodeSummary]:
        return [NodeSummary("fc-1", {"hda.shitops.dev/fibre-channel": "true"}, True, True)]

    def volumes(self, storage_class: str) -> list[VolumeSummary]:
        del storage_class
        return []

    def storage_class_exists(self, name: str) -> bool:
        return name in self._classes

    def default_storage_class_exists(self) -> bool:
        return any(self._classes.values())

    def namespace_terminating(self, namespace: str) -> bool:
        del namespace
        return False

    def pods(self, namespace: str, accelerator: str) -> list[PodSummary]:
        del namespace, accelerator
        return self._pods


def rolled_out(objects: list[dict[str, Any]], ready: int | None = None) -> list[dict[str, Any]]:
    """The desired workloads as if their controllers had rolled them out (`ready` pods each)."""
    live = []
    for obj in objects:
        copy = {**obj, "metadata": {**obj["metadata"], "generation": 1}}
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            replicas = obj["spec"].get("replicas", 1)
            count = replicas if ready is None else ready
            copy["status"] = {
                "observedGeneration": 1,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": count,
            }
        live.append(copy)
        if obj["kind"] == "StatefulSet" and obj["metadata"]["name"].endswith("-output"):
            live.extend(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {
                        "name": f"data-{obj['metadata']['name']}-{ordinal}",
                        "namespace": obj["metadata"]["namespace"],
                    },
                    "status": {"phase": "Bound"},
                }
                for ordinal in range(obj["spec"]["replicas"])
            )
    return live


def observed(hda: HyperDriveAccelerator, cache: RecordedCache) -> Observation:
    desired = children(hda)
    return observe(
        hda,
        child_names(hda),
        cache,
        accelerator="events",
        desired=desired,
        images=images(hda),
        worker_replicas=hda.spec.workers.replicas,
        apply_errors=(),
        lag=Lag(error="not measured"),
    )


def conditions(obs: Observation) -> dict[str, dict[str, Any]]:
    status, _ = compute_status(obs, None, T0)
    return {c["type"]: c for c in status["conditions"]}


def test_stuck_rollout_with_old_pods_ready_is_degraded_but_ready() -> None:
    hda = example()
    live = rolled_out(children(hda))
    stuck = pod("events-workers-new-1", waiting=IMAGE_PULL_BACK_OFF)
    found = conditions(observed(hda, RecordedCache(live, [stuck])))
    assert found["Degraded"]["status"] == "True"
    assert found["Degraded"]["reason"] == "ImagePullFailed"
    assert MISSING_IMAGE in found["Degraded"]["message"]
    assert found["Ready"]["status"] == "True"


def test_component_with_no_ready_pod_makes_ready_false_with_the_pods_reason() -> None:
    hda = example()
    live = rolled_out(children(hda))
    workers = next(
        o for o in live if o["kind"] == "Deployment" and "workers" in o["metadata"]["name"]
    )
    workers["status"]["readyReplicas"] = 0
    stuck = pod("events-workers-1", waiting=IMAGE_PULL_BACK_OFF)
    found = conditions(observed(hda, RecordedCache(live, [stuck])))
    assert found["WorkersReady"]["status"] == "False"
    assert found["WorkersReady"]["reason"] == "ImagePullFailed"
    assert found["Ready"]["status"] == "False"
    assert found["Ready"]["reason"] == "ImagePullFailed"


def test_progress_deadline_exceeded_is_degraded_and_not_progressing() -> None:
    hda = example()
    live = rolled_out(children(hda))
    workers = next(
        o for o in live if o["kind"] == "Deployment" and "workers" in o["metadata"]["name"]
    )
    workers["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "events-workers-7d9f" has timed out progressing.',
        }
    ]
    found = conditions(observed(hda, RecordedCache(live)))
    assert found["Degraded"]["status"] == "True"
    assert found["Degraded"]["reason"] == "ProgressDeadlineExceeded"
    assert "has timed out progressing" in found["Degraded"]["message"]
    assert found["Progressing"]["status"] == "False"
    assert found["Progressing"]["reason"] == "ProgressDeadlineExceeded"


def valkey_claim(hda: HyperDriveAccelerator, storage_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"]}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": f"data-{child_names(hda).valkey_statefulset}-0",
            "namespace": hda.namespace,
        },
        "spec": spec,
        "status": {"phase": "Pending"},
    }


def test_valkey_claim_without_a_default_storage_class_is_named() -> None:
    hda = example()
    live = [*rolled_out(children(hda), ready=0), valkey_claim(hda, None)]
    found = conditions(observed(hda, RecordedCache(live, storage_classes={"slow": False})))
    claim = f"data-{child_names(hda).valkey_statefulset}-0"
    assert found["BufferReady"]["reason"] == "StorageClassMissing"
    assert found["Degraded"]["status"] == "True"
    assert found["Degraded"]["reason"] == "StorageClassMissing"
    assert claim in found["Degraded"]["message"]
    assert "no default StorageClass" in found["Degraded"]["message"]


def test_valkey_claim_naming_a_missing_storage_class_is_named() -> None:
    hda = example()
    live = [*rolled_out(children(hda), ready=0), valkey_claim(hda, "gold")]
    found = conditions(observed(hda, RecordedCache(live)))
    assert found["Degraded"]["reason"] == "StorageClassMissing"
    assert "StorageClass gold" in found["Degraded"]["message"]


def test_pending_valkey_claim_with_a_default_storage_class_is_not_a_problem() -> None:
    hda = example()
    live = [*rolled_out(children(hda)), valkey_claim(hda, None)]
    found = conditions(observed(hda, RecordedCache(live)))
    assert found["Degraded"]["status"] == "False"


def test_many_problems_are_counted_not_listed() -> None:
    hda = example()
    live = rolled_out(children(hda))
    stuck = [pod(f"w-{i}", waiting=IMAGE_PULL_BACK_OFF) for i in range(5)]
    message = conditions(observed(hda, RecordedCache(live, stuck)))["Degraded"]["message"]
    assert message.count("cannot pull image") == 3
    assert message.endswith("(and 2 more)")
