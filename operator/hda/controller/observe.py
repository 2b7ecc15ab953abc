"""Observe an HDA's world: children, nodes, claims and volumes from kopf's watch-fed indexes
(no API request), and Valkey stream lag over the network (fail-soft, rate-limited).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from hda.api.consts import LABEL_COMPONENT, OUTPUT_PORT, REDIS_PORT
from hda.api.v1alpha1 import HyperDriveAccelerator, parse_quantity
from hda.api.v1alpha1.status import Endpoints, ImagesStatus
from hda.specs import ChildNames, Images, worker_selector
from hda.specs.names import VALKEY_DATA_VOLUME

from .kube import KINDS, Kind, kind_of
from .lag import BufferClient, Sample, measure_streams
from .reasons import Reason
from .status import (
    LAG_UNKNOWN_PREFIX,
    BufferObservation,
    Claim,
    Lag,
    Observation,
    Problem,
    StreamLag,
    Workload,
)

log = logging.getLogger("hda.controller")

REVISION_LABEL = "controller-revision-hash"


@dataclasses.dataclass(frozen=True)
class NodeSummary:
    """What matters about a node for FC placement."""

    name: str
    labels: Mapping[str, str]
    ready: bool
    schedulable: bool


@dataclasses.dataclass(frozen=True)
class VolumeSummary:
    """What matters about a PersistentVolume for binding output claims."""

    name: str
    storage_class: str
    phase: str
    capacity: Decimal
    claim: tuple[str, str] | None  # (namespace, name) it is reserved for or bound to


@dataclasses.dataclass(frozen=True)
class PodSummary:
    """What matters about one of an HDA's pods: its problems for status; its revision and
    readiness for the operator's own Valkey rollouts."""

    name: str
    component: str
    problems: tuple[Problem, ...]
    revision: str = ""  # the controller-revision-hash label of a StatefulSet's pod
    ready: bool = False
    terminating: bool = False


class Cache(Protocol):
    """The live objects the operator watches (kopf indexes in production, dicts in tests)."""

    def children(self, kind: Kind, namespace: str, accelerator: str) -> list[dict[str, Any]]: ...

    def nodes(self) -> list[NodeSummary]: ...

    def volumes(self, storage_class: str) -> list[VolumeSummary]: ...

    def storage_class_exists(self, name: str) -> bool: ...

    def default_storage_class_exists(self) -> bool: ...

    def namespace_terminating(self, namespace: str) -> bool: ...

    def pods(self, namespace: str, accelerator: str) -> list[PodSummary]: ...


def node_summary(body: Mapping[str, Any]) -> NodeSummary:
    conditions = (body.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return NodeSummary(
        name=str(body["metadata"]["name"]),
        labels=dict(body["metadata"].get("labels") or {}),
        ready=ready,
        schedulable=not (body.get("spec") or {}).get("unschedulable", False),
    )


def volume_summary(body: Mapping[str, Any]) -> VolumeSummary:
    spec = body.get("spec") or {}
    ref = spec.get("claimRef")
    try:
        capacity = parse_quantity(str((spec.get("capacity") or {}).get("storage", "0")))
    except ValueError:
        capacity = Decimal(0)
    return VolumeSummary(
        name=str(body["metadata"]["name"]),
        storage_class=str(spec.get("storageClassName") or ""),
        phase=str((body.get("status") or {}).get("phase") or "Pending"),
        capacity=capacity,
        claim=(str(ref.get("namespace")), str(ref.get("name"))) if ref else None,
    )


# Kubelet's waiting reasons for an image that cannot be pulled (ErrImagePull and ImagePullBackOff
# alternate while it retries: one reason for both keeps the status from flapping).
_IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
_CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})


def _container_problem(pod: str, component: str, status: Mapping[str, Any]) -> Problem | None:
    waiting = (status.get("state") or {}).get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    container = status.get("name", "?")
    image = status.get("image", "?")
    if reason in _IMAGE_PULL_REASONS:
        return Problem(
            component,
            Reason.IMAGE_PULL_FAILED,
            f"pod {pod} container {container}: cannot pull image {image} (ImagePull failed)",
        )
    if reason == "CrashLoopBackOff":
        last = (status.get("lastState") or {}).get("terminated") or {}
        exited = (
            f" (last exit code {last.get('exitCode')}, {last.get('reason') or 'no reason'})"
            if last
            else ""
        )
        return Problem(
            component,
            Reason.CRASH_LOOP_BACK_OFF,
            f"pod {pod} container {container} is in CrashLoopBackOff{exited}",
        )
    if reason in _CONFIG_REASONS:
        return Problem(
            component,
            Reason.CONTAINER_CONFIG_INVALID,
            f"pod {pod} container {container} cannot start: {reason}: "
            f"{waiting.get('message') or 'no message'}",
        )
    return None


def pod_summary(body: Mapping[str, Any]) -> PodSummary:
    """The problems of one pod, from its status (pure: recorded pod objects are test input)."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name", "?"))
    component = str((meta.get("labels") or {}).get(LABEL_COMPONENT, ""))
    status = body.get("status") or {}
    problems: list[Problem] = []
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            problems.append(
                Problem(
                    component,
                    Reason.UNSCHEDULABLE,
                    f"pod {name} cannot be scheduled: {condition.get('message') or 'no message'}",
                )
            )
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            problem = _container_problem(name, component, container)
            if problem is not None:
                problems.append(problem)
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return PodSummary(
        name=name,
        component=component,
        problems=tuple(problems),
        revision=str((meta.get("labels") or {}).get(REVISION_LABEL, "")),
        ready=ready,
        terminating=bool(meta.get("deletionTimestamp")),
    )


def _rollout_problem(component: str, live: Mapping[str, Any] | None) -> Problem | None:
    """The Deployment controller's verdict that a rollout exceeded its progress deadline."""
    if live is None:
        return None
    for condition in (live.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing" and (
            condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return Problem(
                component,
                Reason.PROGRESS_DEADLINE_EXCEEDED,
                f"Deployment {live['metadata']['name']} exceeded its progress deadline: "
                f"{condition.get('message') or 'no message'}",
            )
    return None


def _valkey_claim_problem(
    hda: HyperDriveAccelerator, names: ChildNames, cache: Cache, accelerator: str
) -> Problem | None:
    """A Pending Valkey claim that cannot bind because its StorageClass does not exist."""
    claim_name = f"{VALKEY_DATA_VOLUME}-{names.valkey_statefulsets[0]}-0"
    claims = _by_name(cache.children(_kind("PersistentVolumeClaim"), hda.namespace, accelerator))
    claim = claims.get(claim_name)
    if claim is None or (claim.get("status") or {}).get("phase") != "Pending":
        return None
    storage_class = (claim.get("spec") or {}).get("storageClassName")
    if storage_class is None:
        if cache.default_storage_class_exists():
            return None
        message = (
            f"claim {claim_name} is Pending: it names no StorageClass and the cluster has no "
            "default StorageClass (set spec.redis.storage.storageClassName)"
        )
    elif storage_class and not cache.storage_class_exists(str(storage_class)):
        message = (
            f"claim {claim_name} is Pending: StorageClass {storage_class} "
            "(spec.redis.storage.storageClassName) does not exist"
        )
    else:
        return None
    return Problem("valkey", Reason.STORAGE_CLASS_MISSING, message)


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def selector_string(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _workload(name: str, live: dict[str, Any] | None, desired: int) -> Workload:
    if live is None:
        return Workload(name=name, desired=desired)
    status = live.get("status") or {}
    generation = int(live["metadata"].get("generation") or 0)
    return Workload(
        name=name,
        exists=True,
        desired=int((live.get("spec") or {}).get("replicas", desired)),
        ready=int(status.get("readyReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        current=int(status.get("replicas") or 0),
        rolled_out=int(status.get("observedGeneration") or 0) >= generation,
    )


def buffer_statefulsets(hda: HyperDriveAccelerator, names: ChildNames) -> tuple[str, ...]:
    """Every StatefulSet of the buffer: Valkey's (one per shard of a cluster) and the sentinels'."""
    sentinels = (names.sentinel_statefulset,) if hda.spec.redis.topology == "replicated" else ()
    return (*names.valkey_statefulsets, *sentinels)


def _buffer_workload(
    hda: HyperDriveAccelerator, names: ChildNames, live: Callable[[str], dict[str, Any] | None]
) -> Workload:
    """The buffer's StatefulSets as one workload: it exists when all do, counts are summed."""
    parts = [_workload(name, live(name), 1) for name in buffer_statefulsets(hda, names)]
    if len(parts) == 1:
        return parts[0]
    return Workload(
        name=", ".join(part.name for part in parts),
        exists=all(part.exists for part in parts),
        desired=sum(part.desired for part in parts),
        ready=sum(part.ready for part in parts),
        updated=sum(part.updated for part in parts),
        current=sum(part.current for part in parts),
        rolled_out=all(part.rolled_out for part in parts),
    )


def _by_name(items: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(i["metadata"]["name"]): i for i in items}


def find_child(
    cache: Cache, kind: Kind, namespace: str, accelerator: str, name: str
) -> dict[str, Any] | None:
    """The live child `name` of one HDA, from the cache."""
    for item in cache.children(kind, namespace, accelerator):
        if item["metadata"]["name"] == name:
            return item
    return None


def observe(
    hda: HyperDriveAccelerator,
    names: ChildNames,
    cache: Cache,
    *,
    accelerator: str,
    desired: list[dict[str, Any]],
    images: Images,
    worker_replicas: int,
    apply_errors: tuple[str, ...],
    lag: Lag,
    secret_errors: tuple[str, ...] = (),
    buffer_topology: BufferObservation | None = None,
) -> Observation:
    """Build the Observation of one HDA from the cache (no I/O)."""
    namespace = hda.namespace
    missing: list[str] = []
    for obj in desired:
        kind = kind_of(obj)
        present = _by_name(cache.children(kind, namespace, accelerator))
        if obj["metadata"]["name"] not in present:
            missing.append(f"{obj['kind']}/{obj['metadata']['name']}")

    def live(kind_name: str, name: str) -> dict[str, Any] | None:
        kind = next(k for k in _kinds() if k.kind == kind_name)
        return _by_name(cache.children(kind, namespace, accelerator)).get(name)

    spec = hda.spec
    fc = spec.output.fibre_channel
    fc_nodes = [
        n
        for n in cache.nodes()
        if n.ready and n.schedulable and matches(n.labels, fc.node_selector)
    ]
    claims_live = _by_name(cache.children(_kind("PersistentVolumeClaim"), namespace, accelerator))
    claims = tuple(
        Claim(
            name=names.output_claim(i),
            phase=(claims_live.get(names.output_claim(i)) or {}).get("status", {}).get("phase")
            if names.output_claim(i) in claims_live
            else None,
        )
        for i in range(spec.output.replicas)
    )
    wanted = {(namespace, c.name) for c in claims if c.phase != "Bound"}
    try:
        size = parse_quantity(fc.size)
    except ValueError:
        size = Decimal(0)
    available = sum(
        1
        for v in cache.volumes(fc.storage_class_name)
        if v.phase == "Available" and v.capacity >= size and (v.claim is None or v.claim in wanted)
    )
    autoscaling = spec.workers.autoscaling
    ingest_port = spec.ingest.service.port
    problems = [
        problem
        for problem in (
            _valkey_claim_problem(hda, names, cache, accelerator),
            _rollout_problem("ingest", live("Deployment", names.ingest_deployment)),
            _rollout_problem("workers", live("Deployment", names.workers_deployment)),
        )
        if problem is not None
    ]
    for pod in sorted(cache.pods(namespace, accelerator), key=lambda p: p.name):
        problems.extend(pod.problems)
    return Observation(
        generation=int(hda.metadata.get("generation") or 0),
        apply_errors=apply_errors,
        secret_errors=secret_errors,
        missing_children=tuple(missing),
        buffer=_buffer_workload(hda, names, lambda name: live("StatefulSet", name)),
        ingest=_workload(
            names.ingest_deployment,
            live("Deployment", names.ingest_deployment),
            spec.ingest.replicas,
        ),
        workers=_workload(
            names.workers_deployment,
            live("Deployment", names.workers_deployment),
            worker_replicas,
        ),
        output=_workload(
            names.output_statefulset,
            live("StatefulSet", names.output_statefulset),
            spec.output.replicas,
        ),
        fc_node_selector=selector_string(fc.node_selector),
        fc_nodes=len(fc_nodes),
        storage_class=fc.storage_class_name,
        storage_class_exists=cache.storage_class_exists(fc.storage_class_name),
        claims=claims,
        available_volumes=available,
        lag=lag,
        target_lag_per_replica=autoscaling.target_lag_per_replica if autoscaling else 10_000,
        worker_selector=selector_string(worker_selector(hda)),
        endpoints=Endpoints(
            ingest=f"http://{names.ingest_service}.{namespace}.svc:{ingest_port}",
            subscribe=f"ws://{names.output_service}.{namespace}.svc:{OUTPUT_PORT}",
            redis=f"{names.buffer_service}.{namespace}.svc:{REDIS_PORT}",
        ),
        images=ImagesStatus(runtime=images.runtime, valkey=images.valkey),
        waiting_for_workers=tuple(sorted(component.value for component in images.held)),
        problems=tuple(problems),
        buffer_topology=buffer_topology,
    )


def _kinds() -> tuple[Kind, ...]:
    return KINDS


def _kind(name: str) -> Kind:
    return next(k for k in _kinds() if k.kind == name)


# --- Valkey lag --------------------------------------------------------------------------------


class LagProbe:
    """Reads stream lag from an HDA's Valkey in the background, at most every `interval` seconds.

    Lag is advisory and never blocks a reconcile: `lag()` answers at once with the last result
    (None when there is none yet: the caller keeps what the status already says) and, when that
    result is stale, starts one background measurement that calls `wake` when it has news. Any
    failure (DNS, connection, auth, timeout) gives `Lag(error=...)` with a stable message.
    The last successful sample of each HDA is kept, so the next one reports rates
    (`hda.controller.lag`). The password comes from the reconcile, which reads it by name.
    """

    def __init__(
        self,
        *,
        interval: float = 15.0,
        timeout: float = 2.0,
        address: tuple[str, int] | None = None,
    ) -> None:
        self._address = address  # one Valkey for every HDA (an operator outside the cluster)
        self._interval = interval
        self._timeout = timeout
        self._last: dict[str, tuple[float, Lag]] = {}
        self._samples: dict[str, Sample] = {}  # the last successful one, for rates
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.busy_seconds = 0.0

    def forget(self, key: str) -> None:
        self._last.pop(key, None)
        self._samples.pop(key, None)
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    def lag(
        self,
        key: str,
        hda: HyperDriveAccelerator,
        names: ChildNames,
        *,
        password: str | None,
        buffer_ready: bool,
        wake: Callable[[], None],
    ) -> Lag | None:
        if not buffer_ready:
            self.forget(key)
            return Lag(error="Valkey is not ready")
        previous = self._last.get(key)
        stale = previous is None or time.monotonic() - previous[0] >= self._interval
        if stale and key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._refresh(key, hda, names, password, wake))
        return previous[1] if previous is not None else None

    async def _refresh(
        self,
        key: str,
        hda: HyperDriveAccelerator,
        names: ChildNames,
        password: str | None,
        wake: Callable[[], None],
    ) -> None:
        started = time.perf_counter()
        try:
            result = await self._measure(key, hda, names, password)
        finally:
            self.busy_seconds += time.perf_counter() - started
            self._tasks.pop(key, None)
        previous = self._last.get(key)
        self._last[key] = (time.monotonic(), result)
        if previous is None or previous[1] != result:
            wake()

    async def _measure(
        self, key: str, hda: HyperDriveAccelerator, names: ChildNames, password: str | None
    ) -> Lag:
        if password is None:
            return Lag(error=f"password Secret {names.buffer_password_secret} not found")
        host, port = self._address or (f"{names.buffer_service}.{hda.namespace}.svc", REDIS_PORT)
        client: BufferClient
        if hda.spec.redis.topology == "cluster":
            # Any node is a seed; the slot map sends each partition to its shard.
            client = RedisCluster(
                host=host,
                port=port,
                password=password,
                socket_connect_timeout=self._timeout,
                socket_timeout=self._timeout,
                require_full_coverage=False,
            )
        else:
            client = redis.Redis(
                host=host,
                port=port,
                password=password,
                socket_connect_timeout=self._timeout,
                socket_timeout=self._timeout,
            )
        try:
            async with asyncio.timeout(self._timeout * 2):
                sample, streams = await measure_streams(
                    client, hda.spec.streams, self._samples.get(key), time.monotonic()
                )
        except (OSError, RedisError, RedisClusterException, TimeoutError) as error:
            # The message must not vary with the kind of failure, or status would flap.
            log.debug("lag probe failed", extra={"host": host, "error": repr(error)})
            return Lag(error=f"Valkey at {host}:{port} not reachable")
        finally:
            await client.aclose()
        self._samples[key] = sample
        return Lag(streams=streams)


def lag_from_status(status: Mapping[str, Any] | None) -> Lag:
    """The lag a status reports, so that an unmeasured lag leaves the status as it is."""
    status = status or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "WorkersKeepingUp" and condition.get("status") == "Unknown":
            message = str(condition.get("message") or "")
            return Lag(error=message.removeprefix(LAG_UNKNOWN_PREFIX) or "not measured yet")
    streams = status.get("streams")
    if not isinstance(streams, list) or "totalLag" not in status:
        return Lag(error="not measured yet")
    return Lag(
        streams=tuple(
            StreamLag(
                name=str(s.get("name")),
                lag=s.get("lag"),
                pending=int(s.get("pending") or 0),
                length=int(s.get("length") or 0),
                dead_letters=int(s.get("deadLetters") or 0),
                ingest_rate=float(s.get("ingestRate") or 0.0),
                process_rate=float(s.get("processRate") or 0.0),
                output_lag=s.get("outputLag"),
                output_pending=int(s.get("outputPending") or 0),
            )
            for s in streams
            if isinstance(s, dict)
        )
    )
