"""The operator's hands on a replicated or cluster buffer: a background probe of the Valkey nodes
(fail-soft and rate-limited, like the lag probe), and one step per reconcile that forms the
cluster, reshards it, takes removed shards out, or rolls a Valkey pod, as `buffer_topology`
decides. A resharding runs as a background task (one per HDA): it can take minutes.

A step acts only on a probe taken after its previous action, so a failover is never asked for
twice on one stale view.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from hda.api.consts import REDIS_PORT, SENTINEL_PORT
from hda.api.v1alpha1 import HyperDriveAccelerator, Topology
from hda.runtime.topology.reshard import ReshardProgress
from hda.specs import ChildNames
from hda.specs.configmaps import SENTINEL_FAILOVER_TIMEOUT_MILLISECONDS
from hda.specs.names import valkey_shard_statefulset
from hda.specs.pods import pod_address, sentinel_hosts, valkey_pods

from .buffer_commands import Action, PodDeleter, execute, probe_buffer
from .buffer_topology import (
    BufferProbe,
    Failover,
    ForgetNodes,
    GroupRollout,
    NodeAddress,
    PodView,
    Reshard,
    Resharded,
    Wait,
    cluster_plan,
    orphan_node_ids,
    primary_of,
    replicas_behind,
    reshard_backoff,
    reshard_blocker,
    reshard_moves,
    reshard_retry_at,
    resharding_ended,
    retire_plan,
    retired,
    rollout_plan,
)
from .observe import PodSummary
from .status_write import rfc3339_now

log = logging.getLogger("hda.controller")

PROBE_OFF = "not asked: the operator runs with --no-buffer-probe"
# Sentinel's failover-timeout: a failover that has not moved the primary by then is over.
FAILOVER_TIMEOUT_SECONDS = SENTINEL_FAILOVER_TIMEOUT_MILLISECONDS / 1000
# While a probe is unsettled (a node down: a failover may be under way) the next one comes this
# soon, for at most UNSETTLED_FAST_SECONDS; then at the usual interval (a node lost for good).
UNSETTLED_PROBE_SECONDS = 2.0
UNSETTLED_FAST_SECONDS = 120.0
# After a Valkey pod changed (deleted, unready, back) probes come as often, for this long: the
# API often says a pod is gone before its process is, so the first probe may still find it.
POD_CHANGE_FAST_SECONDS = 30.0


def buffer_nodes(hda: HyperDriveAccelerator, names: ChildNames) -> list[list[NodeAddress]]:
    """Every Valkey pod the spec asks for, one list per StatefulSet, pod 0 first."""
    return [
        [NodeAddress(pod, statefulset, host, REDIS_PORT) for pod, host in pods]
        for statefulset, pods in zip(names.valkey_statefulsets, valkey_pods(hda), strict=True)
    ]


def leaving_nodes(
    hda: HyperDriveAccelerator, names: ChildNames, live_shards: int
) -> list[list[NodeAddress]]:
    """The Valkey pods of the shards the spec no longer has (shard `spec.shards` up to
    `live_shards`, the StatefulSets still there), one list per StatefulSet, pod 0 first."""
    pods = 1 + hda.spec.redis.replica_count
    groups = []
    for shard in range(hda.spec.redis.shard_count, live_shards):
        statefulset = valkey_shard_statefulset(hda, shard)
        groups.append(
            [
                NodeAddress(
                    f"{statefulset}-{ordinal}",
                    statefulset,
                    pod_address(hda, f"{statefulset}-{ordinal}", names.valkey_headless_service),
                    REDIS_PORT,
                )
                for ordinal in range(pods)
            ]
        )
    return groups


def removed_shards_kept(
    leaving: Sequence[Sequence[NodeAddress]], probe: BufferProbe | None
) -> frozenset[tuple[str, str]]:
    """(plural, name) of the StatefulSets and budgets of removed shards (`leaving`) that must
    not be deleted yet: all of them until `probe` (taken after the last action) shows every
    removed pod empty and out of the cluster; never released on no probe or a failed one."""
    if probe is not None and probe.error is None and retired(leaving, probe):
        return frozenset()
    return frozenset(
        (plural, group[0].group)
        for group in leaving
        for plural in ("statefulsets", "poddisruptionbudgets")
    )


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


# Each Valkey pod's (name, ready, terminating), of those that exist.
PodsView = tuple[tuple[str, bool, bool], ...]


def buffer_pods_view(
    groups: Sequence[Sequence[NodeAddress]], pods: Sequence[PodSummary]
) -> PodsView:
    """What the API server says of `groups`' pods: when it changes (a pod deleted, not ready,
    back), the last probe is out of date, whatever its age."""
    wanted = {address.pod for group in groups for address in group}
    return tuple(
        sorted((pod.name, pod.ready, pod.terminating) for pod in pods if pod.name in wanted)
    )


@dataclasses.dataclass(frozen=True)
class ProbeSeen:
    """A probe, when it was taken (monotonic), and the pods it was taken with."""

    at: float
    probe: BufferProbe
    pods: PodsView = ()

    def stale(self, now: float, *, due: float, acted: float, pods: PodsView) -> bool:
        """Whether a new probe is needed: this one is `due` seconds old, older than the last
        action's effect (`acted`), or the pods changed since."""
        return now - self.at >= due or self.at < acted or pods != self.pods


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
        self._seen: dict[str, ProbeSeen] = {}
        self._acted: dict[str, float] = {}
        # HDA -> StatefulSet -> (the primary a failover was asked to replace, until when)
        self._failovers: dict[str, dict[str, tuple[str, float]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._reshards: dict[str, tuple[Reshard, asyncio.Task[None]]] = {}
        self._resharded: dict[str, Resharded] = {}
        self._reshard_progress: dict[str, ReshardProgress] = {}
        self._unsettled_since: dict[str, float] = {}
        self._pods_changed_at: dict[str, float] = {}
        # HDA -> the wake at which a failed resharding is due again
        self._retry_wakes: dict[str, asyncio.TimerHandle] = {}

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)
        self._acted.pop(key, None)
        self._unsettled_since.pop(key, None)
        self._pods_changed_at.pop(key, None)
        self._cancel_retry_wake(key)
        self._failovers.pop(key, None)
        self._resharded.pop(key, None)
        self._reshard_progress.pop(key, None)
        for task in (self._tasks.pop(key, None), self._reshards.pop(key, (None, None))[1]):
            if task is not None:
                task.cancel()

    def resharding(self, key: str) -> Reshard | None:
        """The resharding running in the background for `key`, if any."""
        running = self._reshards.get(key)
        return running[0] if running is not None else None

    def reshard_progress(self, key: str) -> ReshardProgress | None:
        """How far the resharding running for `key` is (None: none runs, or not started)."""
        return self._reshard_progress.get(key)

    def reshard_progressed(
        self, key: str, wake: Callable[[], None], progress: ReshardProgress
    ) -> None:
        """Remember how far the resharding is; wake the HDA (for status) when a move starts,
        ends, or changes state (not at every poll)."""
        before = self._reshard_progress.get(key)
        self._reshard_progress[key] = progress
        if before is None or (before.moves_done, before.state) != (
            progress.moves_done,
            progress.state,
        ):
            wake()

    def resharded(self, key: str) -> Resharded | None:
        """How the last resharding this operator ran for `key` ended (None: none ended yet)."""
        return self._resharded.get(key)

    def start_reshard(
        self,
        key: str,
        action: Reshard,
        run: Callable[[], Awaitable[None]],
        wake: Callable[[], None],
        *,
        previous: Resharded | None,
        shards: int,
    ) -> None:
        """Run `run` (the resharding to `shards` shards) in the background unless one runs
        already; when it ends, record how (counting failures in a row on from `previous`), and
        wake the HDA to probe the new slot map."""
        if key in self._reshards:
            return
        task = asyncio.create_task(
            self._reshard(key, action, run, wake, previous=previous, shards=shards)
        )
        self._reshards[key] = (action, task)

    async def _reshard(
        self,
        key: str,
        action: Reshard,
        run: Callable[[], Awaitable[None]],
        wake: Callable[[], None],
        *,
        previous: Resharded | None,
        shards: int,
    ) -> None:
        started = time.monotonic()
        failed = False
        try:
            await run()
            outcome = f"moved {action.describe()} in {time.monotonic() - started:.1f}s"
            log.info("resharding done", extra={"hda": key, "outcome": outcome})
        except Exception as error:  # reported in status; re-planned from the live map later
            failed = True
            outcome = f"failed after {time.monotonic() - started:.1f}s: {error}"
            log.warning("resharding failed", extra={"hda": key, "error": str(error)})
        finally:
            self._reshards.pop(key, None)
            self._reshard_progress.pop(key, None)
        self._resharded[key] = resharding_ended(
            previous, rfc3339_now(), outcome, failed=failed, shards=shards
        )
        self.acted(key)
        wake()

    def wake_for_retry(self, key: str, seconds: float, wake: Callable[[], None]) -> None:
        """Call `wake` in `seconds`, when a failed resharding of `key` is due again (replacing
        any earlier such wake): a pass before then only reports the back-off."""
        self._cancel_retry_wake(key)
        self._retry_wakes[key] = asyncio.get_running_loop().call_later(max(seconds, 0.0), wake)

    def retry_wake_in(self, key: str) -> float | None:
        """Seconds until the wake that retries a failed resharding of `key` (None: none due)."""
        handle = self._retry_wakes.get(key)
        if handle is None or handle.cancelled():
            return None
        return max(handle.when() - asyncio.get_running_loop().time(), 0.0)

    def _cancel_retry_wake(self, key: str) -> None:
        handle = self._retry_wakes.pop(key, None)
        if handle is not None:
            handle.cancel()

    def probe(
        self,
        key: str,
        hda: HyperDriveAccelerator,
        names: ChildNames,
        *,
        password: str | None,
        wake: Callable[[], None],
        leaving: Sequence[Sequence[NodeAddress]] = (),
        pods: PodsView = (),
    ) -> BufferProbe | None:
        """The last probe (None before the first); a stale one starts a new one. `leaving`:
        the pods of removed shards, probed too until they are out of the cluster. `pods`:
        `buffer_pods_view` now; a probe taken with another is stale."""
        if not self._enabled:
            return BufferProbe((), error=PROBE_OFF)
        seen = self._seen.get(key)
        now = time.monotonic()
        if seen is not None and pods != seen.pods:
            self._pods_changed_at[key] = now
        stale = seen is None or seen.stale(
            now, due=self._due(key), acted=self._acted.get(key, 0.0), pods=pods
        )
        if stale and key not in self._tasks:
            self._tasks[key] = asyncio.create_task(
                self._refresh(key, hda, names, password, wake, leaving=leaving, pods=pods)
            )
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
        *,
        leaving: Sequence[Sequence[NodeAddress]],
        pods: PodsView,
    ) -> None:
        try:
            # An action's effect (a failover, a meet) takes a moment to show.
            delay = self._acted.get(key, 0.0) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            nodes = [a for group in [*buffer_nodes(hda, names), *leaving] for a in group]
            started = time.monotonic()
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
        now = time.monotonic()
        self._seen[key] = ProbeSeen(now, probe, pods)
        if probe.unsettled:
            self._unsettled_since.setdefault(key, now)
        else:
            self._unsettled_since.pop(key, None)
        if previous is None or previous.probe != probe:
            log.info(
                "buffer probe changed",
                extra={
                    "hda": key,
                    "seconds": round(now - started, 3),
                    "unreachable": [n.pod for n in probe.nodes if not n.reachable],
                    "primaries": [
                        n.pod for n in probe.nodes if n.reachable and n.role == "primary"
                    ],
                    "sentinel_primary": probe.sentinel_primary,
                    "error": probe.error,
                },
            )
            wake()
        if self._due(key) < self._interval:
            # A failover may be under way: a pass soon probes again.
            asyncio.get_running_loop().call_later(self._due(key), wake)

    def _due(self, key: str) -> float:
        return probe_interval(
            time.monotonic(),
            self._interval,
            unsettled_since=self._unsettled_since.get(key),
            pods_changed_at=self._pods_changed_at.get(key),
        )


def probe_interval(
    now: float, interval: float, *, unsettled_since: float | None, pods_changed_at: float | None
) -> float:
    """Seconds a probe stays fresh: short while it is newly unsettled, or soon after a Valkey pod
    changed; else `interval`."""
    newly_unsettled = (
        unsettled_since is not None and now - unsettled_since <= UNSETTLED_FAST_SECONDS
    )
    pods_changed = pods_changed_at is not None and now - pods_changed_at <= POD_CHANGE_FAST_SECONDS
    if newly_unsettled or pods_changed:
        return min(interval, UNSETTLED_PROBE_SECONDS)
    return interval


def next_buffer_step(
    hda: HyperDriveAccelerator,
    groups: Sequence[Sequence[NodeAddress]],
    probe: BufferProbe,
    rollouts: Sequence[GroupRollout],
    failing_over: Mapping[str, str] | None = None,
    *,
    leaving: Sequence[Sequence[NodeAddress]] = (),
    resharding: Reshard | None = None,
    reshard_progress: ReshardProgress | None = None,
    reshard_wait: Wait | None = None,
) -> tuple[list[Action], str | None]:
    """The actions of this pass, and what the operator is doing to the buffer, for status.

    Cluster, in order: while a resharding runs (`resharding`), nothing else; form it; forget
    failed node IDs no pod has any more; reshard (once every shard's replicas are in sync, and
    unless failed ones back off: `reshard_wait`, and not from a slot map in motion:
    `reshard_blocker`) when the slots are not even over `groups` or removed shards (`leaving`)
    still serve some; take drained removed shards out. Then one rollout step.
    """
    topology = hda.spec.redis.topology
    notes = []
    if topology == "cluster":
        if resharding is not None:
            so_far = f"; {reshard_progress.describe()}" if reshard_progress is not None else ""
            return [], f"resharding: moving {resharding.describe()}{so_far}"
        formation = cluster_plan(groups, probe)
        if isinstance(formation, Wait):
            return [], f"forming the cluster: {formation.reason}"
        if formation:
            kinds = sorted({type(action).__name__ for action in formation})
            return list(formation), "forming the cluster: " + ", ".join(kinds)
        every = [*groups, *leaving]
        orphans = orphan_node_ids(every, probe)
        if orphans:
            on = tuple(a.pod for group in every for a in group)
            return [ForgetNodes(orphans, on=on)], (
                f"forgetting failed node IDs no pod has any more: {', '.join(orphans)}"
            )
        blocker = reshard_blocker(groups, leaving, probe)
        reshard = reshard_moves(groups, leaving, probe) if blocker is None else None
        if blocker is not None:
            notes.append(f"resharding waits: {blocker}")
        behind = replicas_behind(groups, probe)
        if reshard is not None and behind:
            return [], f"resharding waits for the replicas of {', '.join(behind)} to be in sync"
        if reshard is not None and reshard_wait is not None:
            return [], reshard_wait.reason
        if reshard is not None:
            return [reshard], f"resharding: moving {reshard.describe()}"
        retire = retire_plan(groups, leaving, probe)
        removed = ", ".join(group[0].group for group in leaving)
        if isinstance(retire, Wait):
            notes.append(f"removing shards {removed}: {retire.reason}")
        elif retire is not None:
            return [retire], f"removing shards {removed}: drained, forgetting their nodes"
        elif leaving and retired(leaving, probe):
            notes.append(f"removed shards {removed} drained and out of the cluster: deleting them")
    step = rollout_plan(topology, rollouts, probe, failing_over)
    if isinstance(step, Wait):
        notes.append(f"rolling Valkey: {step.reason}")
    elif step is not None:
        notes.append(f"rolling Valkey: {type(step).__name__} {_subject(step)}")
    actions: list[Action] = [] if step is None or isinstance(step, Wait) else [step]
    return actions, "; ".join(notes) or None


def _subject(action: Action) -> str:
    if isinstance(action, ForgetNodes):
        return ",".join(action.node_ids)
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
    leaving: Sequence[Sequence[NodeAddress]] = (),
    wake: Callable[[], None] = lambda: None,
    last_reshard: Resharded | None = None,
    now: datetime | None = None,
) -> tuple[list[Action], str | None]:
    """One pass on a fresh probe: decide (`next_buffer_step`), act (a resharding in the
    background, `wake` when it ends), remember a requested failover. `last_reshard`: how the
    last resharding ended as status recorded it, when this operator has not run one yet (for
    the back-off of failed ones). Returns what was done or started (without what failed) and
    the activity for status."""
    topology = hda.spec.redis.topology
    shards = hda.spec.redis.shard_count
    failing_over = watch.failing_over(key, topology, groups, probe)
    last_reshard = watch.resharded(key) or last_reshard
    now = now or datetime.now(UTC)
    retry_at = reshard_retry_at(last_reshard, shards)
    if retry_at is not None and retry_at > now:
        watch.wake_for_retry(key, (retry_at - now).total_seconds(), wake)
    actions, activity = next_buffer_step(
        hda,
        groups,
        probe,
        rollouts,
        failing_over,
        leaving=leaving,
        resharding=watch.resharding(key),
        reshard_progress=watch.reshard_progress(key),
        reshard_wait=reshard_backoff(last_reshard, shards, now),
    )
    every = [*groups, *leaving]
    nodes = [a for group in every for a in group]
    for action in actions:
        if isinstance(action, Reshard):
            watch.start_reshard(
                key,
                action,
                functools.partial(
                    execute,
                    action,
                    nodes,
                    password=password,
                    reshard_progress=functools.partial(watch.reshard_progressed, key, wake),
                ),
                wake,
                previous=last_reshard,
                shards=shards,
            )
    started: list[Action] = [a for a in actions if isinstance(a, Reshard)]
    done, errors = await run_buffer_step(
        watch,
        key,
        [a for a in actions if not isinstance(a, Reshard)],
        groups=every,
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
    return [*started, *done], "; ".join(errors) if errors else activity


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
