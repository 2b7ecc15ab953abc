"""Status of an HDA computed from what was observed (pure: no I/O, no clock).

`compute_status` turns an `Observation` into the wire form of `HyperDriveAcceleratorStatus` plus
the list of condition transitions (each becomes a Kubernetes Event). A condition keeps its
`lastTransitionTime` while its status stays the same, so an unchanged world gives a byte-equal
status and the operator writes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final, Literal

from hda.api.v1alpha1 import HyperDriveAcceleratorStatus, Topology
from hda.api.v1alpha1.status import (
    BufferStatus,
    ComponentsStatus,
    ComponentStatus,
    Condition,
    Endpoints,
    ImagesStatus,
    StreamStatus,
    WorkersStatus,
)

from .buffer_topology import BufferProbe, NodeAddress, Resharded, buffer_status
from .reasons import COMPONENT_REASONS, PROBLEM_REASONS, Reason

Status = Literal["True", "False", "Unknown"]

READY: Final = "Ready"
PROGRESSING: Final = "Progressing"
DEGRADED: Final = "Degraded"
BUFFER_READY: Final = "BufferReady"
INGEST_READY: Final = "IngestReady"
WORKERS_READY: Final = "WorkersReady"
OUTPUT_READY: Final = "OutputReady"
OUTPUT_STORAGE_BOUND: Final = "OutputStorageBound"
WORKERS_KEEPING_UP: Final = "WorkersKeepingUp"

CONDITION_TYPES: Final = (
    READY,
    PROGRESSING,
    DEGRADED,
    BUFFER_READY,
    INGEST_READY,
    WORKERS_READY,
    OUTPUT_READY,
    OUTPUT_STORAGE_BOUND,
    WORKERS_KEEPING_UP,
)
# For these, "True" is bad news; for all others "False" is.
_TRUE_IS_BAD: Final = frozenset({DEGRADED})

LAG_UNKNOWN_PREFIX: Final = "stream lag unknown: "
# In an apply error, says that an object of a child's name belongs to someone else.
CONFLICT_MARKER: Final = "is not owned by this HyperDriveAccelerator"
# Degraded names this many problems, then counts the rest (the message stays short and stable).
SHOWN_PROBLEMS: Final = 3


@dataclasses.dataclass(frozen=True)
class Workload:
    """A Deployment or StatefulSet as observed."""

    name: str
    exists: bool = False
    desired: int = 0
    ready: int = 0
    updated: int = 0
    current: int = 0
    rolled_out: bool = False  # the controller observed the latest generation


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something that keeps a component from running as specified, e.g. a pod that cannot pull
    its image; `component` is the workload's label (valkey, ingest, workers, output)."""

    component: str
    reason: Reason
    message: str


@dataclasses.dataclass(frozen=True)
class Claim:
    """One output PersistentVolumeClaim: phase None when it does not exist yet."""

    name: str
    phase: str | None = None


@dataclasses.dataclass(frozen=True)
class StreamLag:
    name: str
    lag: int | None
    pending: int
    length: int
    dead_letters: int = 0
    ingest_rate: float = 0.0  # entries added per second (see hda.controller.lag)
    process_rate: float = 0.0  # entries acknowledged per second
    # The output stream, for output's consumer group: entries not yet durable. Never scales workers.
    output_lag: int | None = 0
    output_pending: int = 0

    @property
    def output_backlog(self) -> int:
        """Output-stream entries not yet durable: undelivered to output plus pending."""
        return (self.output_lag or 0) + self.output_pending


@dataclasses.dataclass(frozen=True)
class Lag:
    """Valkey stream lag, or why it is unknown."""

    streams: tuple[StreamLag, ...] = ()
    error: str | None = None

    @property
    def known(self) -> bool:
        return self.error is None

    @property
    def total(self) -> int | None:
        """The workers' input backlog: what autoscaling reads (never the output's)."""
        if not self.known:
            return None
        return sum((s.lag or 0) + s.pending for s in self.streams)

    @property
    def total_output(self) -> int | None:
        """Output-stream entries not yet durable, over all streams."""
        if not self.known:
            return None
        return sum(s.output_backlog for s in self.streams)


@dataclasses.dataclass(frozen=True)
class Observation:
    """Everything the status is computed from."""

    generation: int
    spec_error: str | None = None
    apply_errors: tuple[str, ...] = ()
    # Secrets the pods read that they could not use (missing, no key, a trailing line break).
    secret_errors: tuple[str, ...] = ()
    missing_children: tuple[str, ...] = ()
    buffer: Workload = Workload("valkey")
    ingest: Workload = Workload("ingest")
    workers: Workload = Workload("workers")
    output: Workload = Workload("output")
    fc_node_selector: str = ""
    fc_nodes: int = 0
    storage_class: str = ""
    storage_class_exists: bool = True
    claims: tuple[Claim, ...] = ()
    available_volumes: int = 0  # PVs that could still bind a pending output claim
    lag: Lag = Lag(error="not observed yet")
    target_lag_per_replica: int = 10_000
    worker_selector: str = ""
    endpoints: Endpoints = dataclasses.field(default_factory=Endpoints)
    images: ImagesStatus | None = None
    # Runtime components kept on their image until the workers rolled out a new one.
    waiting_for_workers: tuple[str, ...] = ()
    # Pods, rollouts and the Valkey claim that cannot make progress (observe.py finds them).
    problems: tuple[Problem, ...] = ()
    buffer_topology: BufferObservation | None = None  # replicated and cluster topologies only


@dataclasses.dataclass(frozen=True)
class BufferObservation:
    """A replicated or cluster buffer as last probed, and what the operator is doing to it."""

    topology: Topology
    groups: tuple[tuple[NodeAddress, ...], ...]
    probe: BufferProbe | None
    activity: str | None = None
    resharded: Resharded | None = None  # how the last resharding this operator ran ended
    primary_moved: bool = False  # buffer_topology.primaries_seen on this probe


@dataclasses.dataclass(frozen=True)
class Transition:
    """A condition whose status changed (or appeared)."""

    type: str
    old: str | None
    new: str
    reason: str
    message: str

    @property
    def warning(self) -> bool:
        """Warning for a known problem, or for a condition that went from good to bad."""
        if self.type == PROGRESSING or self.new == "Unknown":
            return False
        if self.reason in PROBLEM_REASONS:
            return True
        good = "False" if self.type in _TRUE_IS_BAD else "True"
        return self.old == good and self.new != good


@dataclasses.dataclass(frozen=True)
class _Cond:
    status: Status
    reason: Reason
    message: str


def _problems_message(problems: list[Problem]) -> str:
    shown = "; ".join(p.message for p in problems[:SHOWN_PROBLEMS])
    hidden = len(problems) - SHOWN_PROBLEMS
    return shown + (f" (and {hidden} more)" if hidden > 0 else "")


def _component(label: str, prefix: str, workload: Workload, problems: list[Problem]) -> _Cond:
    missing, ready, not_ready = COMPONENT_REASONS[prefix]
    if not workload.exists:
        return _Cond("False", missing, f"{label} {workload.name} does not exist yet")
    if workload.desired == 0:
        return _Cond("True", Reason.SCALED_TO_ZERO, f"{label} {workload.name} is scaled to zero")
    summary = f"{workload.ready}/{workload.desired} {label} pods ready"
    if workload.ready >= workload.desired:
        return _Cond("True", ready, summary)
    if problems:
        return _Cond("False", problems[0].reason, f"{summary}: {_problems_message(problems)}")
    return _Cond("False", not_ready, summary)


def _storage(obs: Observation) -> _Cond:
    wanted = obs.output.desired
    if wanted == 0:
        return _Cond("True", Reason.NO_CLAIMS, "output is scaled to zero")
    claims = obs.claims[:wanted]
    bound = sum(1 for c in claims if c.phase == "Bound")
    if bound >= wanted:
        return _Cond("True", Reason.CLAIMS_BOUND, f"{bound}/{wanted} output claims Bound")
    waiting = [c for c in claims if c.phase != "Bound"]
    first = waiting[0].name if waiting else "?"
    if not obs.storage_class_exists:
        return _Cond(
            "False",
            Reason.FIBRE_CHANNEL_VOLUME_UNAVAILABLE,
            f"StorageClass {obs.storage_class} (spec.output.fibreChannel.storageClassName) "
            "does not exist",
        )
    if any(c.phase == "Lost" for c in claims):
        lost = next(c.name for c in claims if c.phase == "Lost")
        return _Cond(
            "False",
            Reason.FIBRE_CHANNEL_VOLUME_UNAVAILABLE,
            f"claim {lost} lost its PersistentVolume",
        )
    if obs.fc_nodes == 0:
        return _Cond(
            "False",
            Reason.NO_FIBRE_CHANNEL_NODES,
            f"{bound}/{wanted} output claims Bound; claims bind only once an output pod "
            f"can be scheduled on a node matching {obs.fc_node_selector}",
        )
    if obs.available_volumes < len(waiting):
        return _Cond(
            "False",
            Reason.FIBRE_CHANNEL_VOLUME_UNAVAILABLE,
            f"claim {first} cannot bind: {obs.available_volumes} Available PersistentVolumes of "
            f"StorageClass {obs.storage_class} for {len(waiting)} unbound claims",
        )
    return _Cond("False", Reason.CLAIMS_PENDING, f"{bound}/{wanted} output claims Bound")


def _output(obs: Observation, problems: list[Problem]) -> _Cond:
    if obs.output.desired > 0 and obs.fc_nodes == 0:
        return _Cond(
            "False",
            Reason.NO_FIBRE_CHANNEL_NODES,
            f"no Ready node matches the Fibre Channel node selector {obs.fc_node_selector} "
            "(spec.output.fibreChannel.nodeSelector)",
        )
    return _component("output", "Output", obs.output, problems)


def _keeping_up(obs: Observation) -> _Cond:
    total = obs.lag.total
    if total is None:
        return _Cond("Unknown", Reason.LAG_UNKNOWN, f"{LAG_UNKNOWN_PREFIX}{obs.lag.error}")
    capacity = max(obs.workers.ready, 1) * obs.target_lag_per_replica
    if total <= capacity:
        return _Cond("True", Reason.LAG_WITHIN_TARGET, "backlog within the workers' target")
    return _Cond(
        "False",
        Reason.LAG_ABOVE_TARGET,
        f"backlog above {obs.target_lag_per_replica} entries per ready worker",
    )


def _of(obs: Observation, component: str) -> list[Problem]:
    return [p for p in obs.problems if p.component == component]


def _conditions(obs: Observation) -> dict[str, _Cond]:
    components = {
        BUFFER_READY: _component("Valkey", "Valkey", obs.buffer, _of(obs, "valkey")),
        INGEST_READY: _component("ingest", "Ingest", obs.ingest, _of(obs, "ingest")),
        WORKERS_READY: _component("worker", "Workers", obs.workers, _of(obs, "workers")),
        OUTPUT_READY: _output(obs, _of(obs, "output")),
        OUTPUT_STORAGE_BOUND: _storage(obs),
    }
    blocking = [c for c in components.values() if c.reason in _BLOCKING]
    if obs.spec_error is not None:
        degraded = _Cond("True", Reason.INVALID_SPEC, obs.spec_error)
    elif obs.secret_errors:
        degraded = _Cond("True", Reason.SECRET_INVALID, "; ".join(obs.secret_errors))
    elif obs.apply_errors:
        degraded = _Cond("True", _apply_reason(obs.apply_errors), "; ".join(obs.apply_errors))
    elif blocking:
        degraded = _Cond("True", blocking[0].reason, blocking[0].message)
    elif obs.problems:
        problems = list(obs.problems)
        degraded = _Cond("True", problems[0].reason, _problems_message(problems))
    else:
        degraded = _Cond("False", Reason.AS_EXPECTED, "no problems observed")

    workloads = (obs.buffer, obs.ingest, obs.workers, obs.output)
    rolling = [
        w.name
        for w in workloads
        if w.exists and (not w.rolled_out or w.updated < w.desired or w.current > w.desired)
    ]
    stalled = [p for p in obs.problems if p.reason == Reason.PROGRESS_DEADLINE_EXCEEDED]
    if obs.spec_error is not None:
        progressing = _Cond("False", Reason.INVALID_SPEC, "the spec cannot be applied")
    elif stalled:
        progressing = _Cond("False", Reason.PROGRESS_DEADLINE_EXCEEDED, _problems_message(stalled))
    elif obs.missing_children:
        progressing = _Cond(
            "True", Reason.CREATING_CHILDREN, "waiting for " + ", ".join(obs.missing_children)
        )
    elif obs.waiting_for_workers:
        progressing = _Cond(
            "True",
            Reason.ROLLING_OUT_WORKERS_FIRST,
            "rolling out the workers' new image first; "
            + ", ".join(obs.waiting_for_workers)
            + " follow once the workers' rollout completed",
        )
    elif rolling:
        progressing = _Cond("True", Reason.ROLLING_OUT, "rolling out " + ", ".join(rolling))
    else:
        progressing = _Cond("False", Reason.RECONCILED, "every component runs the desired revision")

    if obs.spec_error is not None:
        ready = _Cond("False", Reason.INVALID_SPEC, obs.spec_error)
    elif obs.secret_errors or obs.apply_errors:
        ready = _Cond("False", degraded.reason, degraded.message)
    else:
        failing = [c for c in components.values() if c.status != "True"]
        if not failing:
            ready = _Cond(
                "True",
                Reason.ALL_COMPONENTS_READY,
                f"Valkey {obs.buffer.ready}/{obs.buffer.desired}, "
                f"ingest {obs.ingest.ready}/{obs.ingest.desired}, "
                f"workers {obs.workers.ready}/{obs.workers.desired}, "
                f"output {obs.output.ready}/{obs.output.desired} ready",
            )
        else:
            first = blocking[0] if blocking else failing[0]
            ready = _Cond("False", first.reason, first.message)
    return {
        READY: ready,
        PROGRESSING: progressing,
        DEGRADED: degraded,
        **components,
        WORKERS_KEEPING_UP: _keeping_up(obs),
    }


_BLOCKING: Final = frozenset(
    {
        Reason.NO_FIBRE_CHANNEL_NODES,
        Reason.FIBRE_CHANNEL_VOLUME_UNAVAILABLE,
        Reason.STORAGE_CLASS_MISSING,
    }
)


def _apply_reason(errors: tuple[str, ...]) -> Reason:
    """ChildNameConflict when every failure is an object of a child's name that is not ours."""
    if all(CONFLICT_MARKER in error for error in errors):
        return Reason.CHILD_NAME_CONFLICT
    return Reason.APPLY_FAILED


def _previous_conditions(previous: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for item in (previous or {}).get("conditions") or []:
        if isinstance(item, dict) and isinstance(item.get("type"), str):
            found[item["type"]] = item
    return found


def compute_status(
    obs: Observation, previous: dict[str, Any] | None, now: str
) -> tuple[dict[str, Any], list[Transition]]:
    """The wire status for `obs`, and the condition transitions since `previous`."""
    before = _previous_conditions(previous)
    conditions: list[Condition] = []
    transitions: list[Transition] = []
    for type_, cond in _conditions(obs).items():
        old = before.get(type_)
        old_status = old.get("status") if old else None
        if old is not None and old_status == cond.status and old.get("lastTransitionTime"):
            since = str(old["lastTransitionTime"])
        else:
            since = now
            transitions.append(
                Transition(type_, old_status, cond.status, cond.reason, cond.message)
            )
        conditions.append(
            Condition(
                type=type_,
                status=cond.status,
                observed_generation=obs.generation,
                last_transition_time=since,
                reason=cond.reason,
                message=cond.message[:32768],
            )
        )
    if obs.spec_error is not None:
        # Keep the last observed replicas and lag: an invalid spec changes nothing that runs.
        kept = HyperDriveAcceleratorStatus.model_validate(_without_conditions(previous))
        status = kept.model_copy(
            update={"observed_generation": obs.generation, "conditions": conditions}
        )
        return status.to_wire(), transitions

    streams = [
        StreamStatus(
            name=s.name,
            lag=s.lag,
            pending=s.pending,
            length=s.length,
            ingest_rate=s.ingest_rate,
            process_rate=s.process_rate,
            dead_letters=s.dead_letters,
            output_lag=s.output_lag,
            output_pending=s.output_pending,
        )
        for s in obs.lag.streams
    ]
    workers = obs.workers
    status = HyperDriveAcceleratorStatus(
        observed_generation=obs.generation,
        conditions=conditions,
        components=ComponentsStatus(
            buffer=ComponentStatus(
                desired_replicas=obs.buffer.desired, ready_replicas=obs.buffer.ready
            ),
            ingest=ComponentStatus(
                desired_replicas=obs.ingest.desired, ready_replicas=obs.ingest.ready
            ),
            workers=WorkersStatus(
                desired_replicas=workers.desired,
                ready_replicas=workers.ready,
                replicas=workers.current,
                selector=obs.worker_selector,
            ),
            output=ComponentStatus(
                desired_replicas=obs.output.desired, ready_replicas=obs.output.ready
            ),
        ),
        workers_ready=f"{workers.ready}/{workers.desired}",
        total_lag=obs.lag.total,
        total_output_backlog=obs.lag.total_output,
        streams=streams,
        endpoints=obs.endpoints,
        images=obs.images,
        redis=_buffer_status(obs.buffer_topology, previous, now),
    )
    return status.to_wire(), transitions


def _buffer_status(
    observed: BufferObservation | None, previous: dict[str, Any] | None, now: str
) -> BufferStatus | None:
    if observed is None:
        return None
    before = (previous or {}).get("redis")
    try:
        BufferStatus.model_validate(before or {"topology": observed.topology})
    except ValueError:
        before = None
    return buffer_status(
        observed.topology,
        observed.groups,
        observed.probe,
        before if isinstance(before, dict) else None,
        now,
        activity=observed.activity,
        resharded=observed.resharded,
        primary_moved=observed.primary_moved,
    )


def _without_conditions(previous: dict[str, Any] | None) -> dict[str, Any]:
    data = {k: v for k, v in (previous or {}).items() if k != "conditions"}
    try:
        HyperDriveAcceleratorStatus.model_validate(data)
    except ValueError:
        return {}
    return data


def status_patch(new: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any] | None:
    """The merge patch that turns `live` into `new`, or None when they are equal."""
    live = live or {}
    if _normalised(new) == _normalised(live):
        return None
    return _with_deletions(new, live)


def _with_deletions(new: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """`new`, plus an explicit null (merge patch: delete) for every key only `live` has."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        old = live.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            patch[key] = _with_deletions(value, old)
        else:
            patch[key] = value
    for key in live:
        if key not in new:
            patch[key] = None
    return patch


def _normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value
