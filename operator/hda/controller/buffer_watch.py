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
from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.specs import ChildNames
from hda.specs.pods import pod_address, sentinel_hosts

from .kube import Kube
from .observe import PodSummary
from .valkey_nodes import Action, execute, probe_buffer
from .valkey_topology import (
    BufferProbe,
    GroupRollout,
    NodeAddress,
    PodView,
    Wait,
    cluster_plan,
    reshard_plan,
    rollout_plan,
)

log = logging.getLogger("hda.controller")

PROBE_OFF = "not asked: the operator runs with --no-valkey-probe"


def buffer_nodes(hda: HyperDriveAccelerator, names: ChildNames) -> list[list[NodeAddress]]:
    """Every Valkey pod the spec asks for, one list per StatefulSet, pod 0 first."""
    pods = 1 + hda.spec.redis.replica_count
    return [
        [
            NodeAddress(
                pod=f"{statefulset}-{ordinal}",
                group=statefulset,
                host=pod_address(hda, f"{statefulset}-{ordinal}", names.valkey_headless_service),
                port=REDIS_PORT,
            )
            for ordinal in range(pods)
        ]
        for statefulset in names.valkey_statefulsets
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
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)
        self._acted.pop(key, None)
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
    step = rollout_plan(topology, rollouts, probe)
    if isinstance(step, Wait):
        notes.append(f"rolling Valkey: {step.reason}")
    elif step is not None:
        notes.append(f"rolling Valkey: {type(step).__name__} {_subject(step)}")
    actions: list[Action] = [] if step is None or isinstance(step, Wait) else [step]
    return actions, "; ".join(notes) or None


def _subject(action: Action) -> str:
    pod = getattr(action, "pod", None) or getattr(action, "replica", None)
    return str(pod)


async def run_buffer_step(
    watch: BufferWatch,
    key: str,
    hda: HyperDriveAccelerator,
    actions: Sequence[Action],
    *,
    groups: Sequence[Sequence[NodeAddress]],
    password: str | None,
    kube: Kube,
) -> list[str]:
    """Carry out `actions`; returns the errors (each action is tried once per pass)."""
    if not actions:
        return []
    nodes = [a for group in groups for a in group]
    errors = []
    for action in actions:
        try:
            await execute(
                action,
                nodes,
                sentinels=sentinel_addresses(hda),
                password=password,
                kube=kube,
                namespace=hda.namespace,
            )
            log.info("buffer action", extra={"hda": key, "action": repr(action)})
        except Exception as error:
            errors.append(f"{type(action).__name__} {_subject(action)}: {error}")
    watch.acted(key)
    return errors
