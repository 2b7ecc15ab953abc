"""The operator's hands on a replicated or cluster buffer: a background probe of the Valkey nodes
(fail-soft and rate-limited, like the lag probe), and one step per reconcile that forms the
cluster or rolls a Valkey pod, as `valkey_topology` decides.

A step acts only on a probe taken after its previous action, so a failover is never asked for
twice on one stale view.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hda.api.consts import REDIS_PORT, SENTINEL_PORT
from hda.api.v1alpha1 import HyperDriveAccelerator, Topology
from hda.specs import ChildNames
from hda.specs.configmaps import SENTINEL_FAILOVER_TIMEOUT_MILLISECONDS
from hda.specs.pods import sentinel_hosts, valkey_pods

from .observe import PodSummary
from .valkey_nodes import Action, PodDeleter, execute, probe_buffer
from .valkey_topology import (
    BufferProbe,
    Failover,
    GroupRollout,
    NodeAddress,
    PodView,
    Wait,
    cluster_plan,
    primary_of,
    reshard_plan,
    rollout_plan,
)

log = logging.getLogger("hda.controller")

PROBE_OFF = "not asked: the operator runs with --no-valkey-probe"
# Sentinel's failover-timeout: a failover that has not moved the primary by then is over.
FAILOVER_TIMEOUT_SECONDS = SENTINEL_FAILOVER_TIMEOUT_MILLISECONDS / 1000


def buffer_nodes(hda: HyperDriveAccelerator, names: ChildNames) -> list[list[NodeAddress]]:
    """Every Valkey pod the spec asks for, one list per StatefulSet, pod 0 first."""
    return [
        [NodeAddress(pod, statefulset, host, REDIS_PORT) for pod, host in pods]
        for statefulset, pods in zip(names.valkey_statefulsets, valkey_pods(hda), strict=True)
    ]


def sentinel_addresses(hda: HyperDriveAccelerator) -> list[tuple[str, int]]:
    if hda.spec.redis.topology != "replicated":
        return []
    return [(host, SENTINEL_PORT) for host in sentinel_hosts(hda)]


def group_rollouts(
    groups: Sequence[Sequence[NodeAddress]],
    statefulsets: Mapping[str, Mapping[str, Any]],
    pods: Sequence[PodSummary],
) -> list[GroupRollout]:
    """Each Valkey StatefulSet's update revision and live pods, for `rollout_plan`."""
    by_name = {pod.name: pod for pod in pods}
    rollouts = []
    for group in groups:
        live = statefulsets.get(group[0].group)
        revision = str(((live or {}).get("status") or {}).get("updateRevision") or "")
        if not revision:
            continue  # the StatefulSet controller has not seen it yet
        views = tuple(
            PodView(pod.name, pod.revision, pod.ready, pod.terminating)
            for address in group
            if (pod := by_name.get(address.pod)) is not None
        )
        rollouts.append(GroupRollout(group[0].group, len(group), revision, views, tuple(group)))
    return rollouts


@dataclasses.dataclass
class _Seen:
    at: float
    probe: BufferProbe


class BufferWatch:
    """Probes each HDA's Valkey nodes in the background, at most every `interval` seconds."""

    def __init__(
        self,
        *,
        interval: float = 15.0,
        settle: float = 2.0,
        timeout: float = 2.0,
        enabled: bool = True,
    ) -> None:
        self._enabled = enabled
        self._interval = interval
        self._settle = settle  # after an action, what a probe must wait for to see its effect
        self._timeout = timeout
        self._seen: dict[str, _Seen] = {}
        self._acted: dict[str, float] = {}
        # HDA -> StatefulSet -> (the primary a failover was asked to replace, until when)
        self._failovers: dict[str, dict[str, tuple[str, float]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)
        self._acted.pop(key, None)
        self._failovers.pop(key, None)
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    def probe(
        self,
        key: str,
        hda: HyperDriveAccelerator,
        names: ChildNames,
        *,
        password: str | None,
        wake: Callable[[], None],
    ) -> BufferProbe | None:
        """The last probe (None before the first); a stale one starts a new one."""
        if not self._enabled:
            return BufferProbe((), error=PROBE_OFF)
        seen = self._seen.get(key)
        acted = self._acted.get(key, 0.0)
        stale = seen is None or time.monotonic() - seen.at >= self._interval or seen.at < acted
        if stale and key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._refresh(key, hda, names, password, wake))
        return seen.probe if seen is not None else None

    def fresh(self, key: str) -> BufferProbe | None:
        """The last probe, if it was taken after the last action (and its settling time)."""
        if not self._enabled:
            return None
        seen = self._seen.get(key)
        if seen is None or seen.at < self._acted.get(key, 0.0):
            return None
        return seen.probe

    def acted(self, key: str) -> None:
        self._acted[key] = time.monotonic() + self._settle

    def failover_requested(self, key: str, group: str, primary: str) -> None:
        deadline = time.monotonic() + FAILOVER_TIMEOUT_SECONDS
        self._failovers.setdefault(key, {})[group] = (primary, deadline)

    def failing_over(
        self,
        key: str,
        topology: Topology,
        groups: Sequence[Sequence[NodeAddress]],
        probe: BufferProbe,
    ) -> dict[str, str]:
        """StatefulSet -> the primary a failover was asked to replace, while it still is the
        primary (and the failover has not timed out)."""
        pending = self._failovers.get(key, {})
        now = time.monotonic()
        for group in groups:
            name = group[0].group
            if name not in pending:
                continue
            old, deadline = pending[name]
            current = primary_of(topology, group, probe)
            if now > deadline or current not in (None, old):
                del pending[name]
        return {name: old for name, (old, _) in pending.items()}

    async def _refresh(
        self,
        key: str,
        hda: HyperDriveAccelerator,
        names: ChildNames,
        password: str | None,
        wake: Callable[[], None],
    ) -> None:
        try:
            # An action's effect (a failover, a meet) takes a moment to show.
            delay = self._acted.get(key, 0.0) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            nodes = [a for group in buffer_nodes(hda, names) for a in group]
            probe = await probe_buffer(
                hda.spec.redis.topology,
                nodes,
                sentinels=sentinel_addresses(hda),
                password=password,
                seconds=self._timeout,
            )
        finally:
            self._tasks.pop(key, None)
        previous = self._seen.get(key)
        self._seen[key] = _Seen(time.monotonic(), probe)
        if previous is None or previous.probe != probe:
            wake()


def next_buffer_step(
    hda: HyperDriveAccelerator,
    groups: Sequence[Sequence[NodeAddress]],
    probe: BufferProbe,
    rollouts: Sequence[GroupRollout],
    failing_over: Mapping[str, str] | None = None,
) -> tuple[list[Action], str | None]:
    """The actions of this pass (forming the cluster before anything else, then one rollout
    step), and what the operator is doing to the buffer, for status."""
    topology = hda.spec.redis.topology
    notes = []
    if topology == "cluster":
        formation = cluster_plan(groups, probe)
        if isinstance(formation, Wait):
            return [], f"forming the cluster: {formation.reason}"
        if formation:
            kinds = sorted({type(action).__name__ for action in formation})
            return list(formation), "forming the cluster: " + ", ".join(kinds)
        moves = reshard_plan(groups, probe)
        if moves:
            # TODO(issue 11): move them with the runtime's resharding function (CLUSTER
            # MIGRATESLOTS) once it exists; until then status says they are not moved.
            targets = sorted({move.target for move in moves})
            notes.append(
                f"resharding not done: {sum(m.count for m in moves)} slots should move to "
                f"{', '.join(targets)}; the operator does not move slots yet"
            )
    step = rollout_plan(topology, rollouts, probe, failing_over)
    if isinstance(step, Wait):
        notes.append(f"rolling Valkey: {step.reason}")
    elif step is not None:
        notes.append(f"rolling Valkey: {type(step).__name__} {_subject(step)}")
    actions: list[Action] = [] if step is None or isinstance(step, Wait) else [step]
    return actions, "; ".join(notes) or None


def _subject(action: Action) -> str:
    pod = getattr(action, "pod", None) or getattr(action, "replica", None)
    return str(pod)


async def buffer_pass(
    watch: BufferWatch,
    key: str,
    hda: HyperDriveAccelerator,
    probe: BufferProbe,
    rollouts: Sequence[GroupRollout],
    *,
    groups: Sequence[Sequence[NodeAddress]],
    sentinels: Sequence[tuple[str, int]],
    password: str | None,
    kube: PodDeleter,
) -> tuple[list[Action], str | None]:
    """One pass on a fresh probe: decide (`next_buffer_step`), act, remember a requested
    failover. Returns what was done (without what failed) and the activity for status."""
    topology = hda.spec.redis.topology
    failing_over = watch.failing_over(key, topology, groups, probe)
    actions, activity = next_buffer_step(hda, groups, probe, rollouts, failing_over)
    done, errors = await run_buffer_step(
        watch,
        key,
        actions,
        groups=groups,
        sentinels=sentinels,
        password=password,
        kube=kube,
        namespace=hda.namespace,
    )
    for action in done:
        if isinstance(action, Failover):
            group = next(g for g in groups if g[0].group == action.group)
            old = primary_of(topology, group, probe)
            if old is not None:
                watch.failover_requested(key, action.group, old)
    return done, "; ".join(errors) if errors else activity


async def run_buffer_step(
    watch: BufferWatch,
    key: str,
    actions: Sequence[Action],
    *,
    groups: Sequence[Sequence[NodeAddress]],
    sentinels: Sequence[tuple[str, int]],
    password: str | None,
    kube: PodDeleter,
    namespace: str,
) -> tuple[list[Action], list[str]]:
    """Carry out `actions`; returns those done and the errors (each is tried once per pass)."""
    if not actions:
        return [], []
    nodes = [a for group in groups for a in group]
    done: list[Action] = []
    errors = []
    for action in actions:
        try:
            await execute(
                action,
                nodes,
                sentinels=sentinels,
                password=password,
                kube=kube,
                namespace=namespace,
            )
            log.info("buffer action", extra={"hda": key, "action": repr(action)})
            done.append(action)
        except Exception as error:  # reported in status, and tried again on the next pass
            errors.append(f"{type(action).__name__} {_subject(action)}: {error}")
    watch.acted(key)
    return done, errors
