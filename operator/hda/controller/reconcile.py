"""Reconcile one HDA: build, compare with the live children, apply only what differs, observe,
and write status only when it changed.

One `Controller` serves every HDA. Each HDA has one kopf daemon that calls `Controller.run`: a
loop that reconciles, then sleeps until something relevant happens (a child or node event, a spec
change) or the resync interval passes. One loop per HDA means reconciles of an HDA never overlap.

This module is the table of contents: it alone knows the order of the steps, each of which lives
in a module of its own (secret_inputs, scaling, apply, generated_secret, status_write, release).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from typing import Any

import kopf
from pydantic import ValidationError

from hda.api.images import DefaultImages
from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.api.v1alpha1.buffer import MAX_SHARDS
from hda.api.v1alpha1.resource import field_path
from hda.specs import (
    PASSWORD_KEY,
    ChildNames,
    child_names,
    desired_children,
    resolve_images,
    with_secret_digests,
)
from hda.specs.names import valkey_shard_statefulset

from . import events
from .apply import apply_children, prune
from .buffer_topology import (
    NodeAddress,
    last_resharding,
    primaries_seen,
    reshard_failure_event,
)
from .buffer_watch import (
    BufferWatch,
    buffer_nodes,
    buffer_pass,
    buffer_pods_view,
    group_rollouts,
    leaving_nodes,
    removed_shards_kept,
    sentinel_addresses,
)
from .compare import with_applied_hash
from .generated_secret import ensure_password_secret
from .kube import Kube, kind_of
from .metrics import OperatorMetrics, Totals
from .observe import Cache, LagProbe, find_child, lag_from_status, observe
from .reasons import Reason
from .release import release_volumes
from .rollout import workers_first
from .scaling import with_scaling_state, worker_replicas
from .secret_inputs import read_secrets
from .state import (
    HdaState,
    Key,
    NamespaceTerminatingError,
    Stats,
    Writes,
    key_of,
    log_fields,
)
from .status import CONFLICT_MARKER, BufferObservation, Observation
from .status_write import write_status

__all__ = ["Controller"]

log = logging.getLogger("hda.controller")


class Controller:
    """Reconciles every HDA the operator sees."""

    def __init__(
        self,
        kube: Kube,
        *,
        resync_seconds: float = 15.0,
        debounce_seconds: float = 0.3,
        lag_probe: LagProbe | None = None,
        default_images: DefaultImages | None = None,
        buffer_watch: BufferWatch | None = None,
    ) -> None:
        self.kube = kube
        self.default_images = default_images or DefaultImages()
        self.cache: Cache | None = None
        self.resync_seconds = resync_seconds
        self.debounce_seconds = debounce_seconds
        self.lag_probe = lag_probe or LagProbe(interval=resync_seconds)
        self.buffer_watch = buffer_watch or BufferWatch(interval=resync_seconds)
        self.stats = Stats()
        self.metrics = OperatorMetrics(self._totals)
        self._states: dict[Key, HdaState] = {}
        self.ready = asyncio.Event()

    def _totals(self) -> Totals:
        stats = self.stats
        return Totals(
            reconciles=stats.reconciles,
            reconcile_seconds=stats.reconcile_seconds,
            applies=stats.applies,
            status_writes=stats.status_writes,
            lag_probe_seconds=self.lag_probe.busy_seconds,
        )

    def render_metrics(self) -> bytes:
        return self.metrics.render()

    # --- wake-ups --------------------------------------------------------------------------

    def _state(self, key: Key) -> HdaState:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = HdaState()
        return state

    def wake(self, key: Key | None) -> None:
        """Something an HDA depends on changed: reconcile it soon."""
        if key is not None and key in self._states:
            self._states[key].wake.set()

    def wake_all(self) -> None:
        for state in self._states.values():
            state.wake.set()

    def wake_storage_classes(self, classes: set[str]) -> None:
        """Wake the HDAs whose Fibre Channel volumes are of one of `classes` (and those whose
        class is not known yet)."""
        for state in self._states.values():
            if state.fc_storage_class in classes or not state.fc_storage_class:
                state.wake.set()

    # --- the per-HDA loop ------------------------------------------------------------------

    async def run(self, body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
        """The daemon body: reconcile, then wait for a wake-up or the resync interval."""
        meta = body["metadata"]
        key = key_of(meta["namespace"], meta["name"])
        state = self._state(key)
        try:
            while not stopped:
                state.wake.clear()
                delay = await self.reconcile_safely(body, key, state)
                await _wait_any(state.wake, stopped, seconds=delay)
                if stopped:
                    break
                await asyncio.sleep(self.debounce_seconds)
        finally:
            if stopped:
                self._states.pop(key, None)
                self.metrics.forget(key)
                self.lag_probe.forget(f"{key[0]}/{key[1]}")
                self.buffer_watch.forget(f"{key[0]}/{key[1]}")

    async def reconcile_safely(self, body: kopf.Body, key: Key, state: HdaState) -> float:
        """One reconcile; errors are logged, reported, and retried with back-off."""
        jitter = random.uniform(0.9, 1.1)  # noqa: S311 - spreading load, not security
        try:
            async with state.lock:
                await self.reconcile(body, key, state)
        except Exception as error:
            state.failures += 1
            delay = min(60.0, 2.0**state.failures)
            message = f"reconcile failed: {type(error).__name__}: {error}"
            log.exception(message, extra=log_fields(key, retry_in=delay))
            events.error(body, "ReconcileFailed", message)
            return delay
        state.failures = 0
        return self.resync_seconds * jitter

    async def reconcile(self, body: kopf.Body, key: Key, state: HdaState) -> None:
        started = time.perf_counter()
        raw = copy.deepcopy(dict(body))  # a stable snapshot: the live body changes under us
        meta = raw.get("metadata") or {}
        if meta.get("deletionTimestamp") or self._require_cache().namespace_terminating(key[0]):
            return
        spec = raw.get("spec") or {}
        if spec.get("paused"):
            if not state.paused_logged:
                log.info("paused: no writes until spec.paused is false", extra=log_fields(key))
                state.paused_logged = True
            return
        state.paused_logged = False
        try:
            hda = HyperDriveAccelerator.model_validate(
                {k: raw[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in raw}
            )
        except ValidationError as error:
            await self._report_invalid(body, raw, key, error)
            return
        state.fc_storage_class = hda.spec.output.fibre_channel.storage_class_name
        try:
            await self._reconcile_valid(body, raw, hda, key, state)
        except NamespaceTerminatingError:
            # The namespace (and this HDA with it) is going away: nothing to restore.
            log.info("namespace is being deleted", extra=log_fields(key))
        finally:
            self.stats.reconciles += 1
            self.stats.reconcile_seconds += time.perf_counter() - started

    async def _report_invalid(
        self, body: kopf.Body, raw: dict[str, Any], key: Key, error: ValidationError
    ) -> None:
        first = error.errors()[0]
        location = tuple(p for p in first["loc"] if not str(p).startswith("function-"))
        path = (
            field_path(("spec", *location[1:]))
            if location[:1] == ("spec",)
            else field_path(location)
        )
        message = f"{path}: {first['msg'].removeprefix('Value error, ')}"
        obs = Observation(
            generation=int(raw["metadata"].get("generation") or 0), spec_error=message
        )
        await write_status(self.kube, body, raw, key, obs, self.stats)

    async def _reconcile_valid(
        self,
        body: kopf.Body,
        raw: dict[str, Any],
        hda: HyperDriveAccelerator,
        key: Key,
        state: HdaState,
    ) -> None:
        cache = self._require_cache()
        names = child_names(hda)

        # 1. Read what decides the build: the Secrets the pods read (by name), stream lag, and
        #    from it the worker count.
        found = await read_secrets(self.kube, hda, names)
        buffer_ready = _buffer_ready(cache, hda, names, key)
        probed = self.lag_probe.lag(
            f"{key[0]}/{key[1]}",
            hda,
            names,
            password=found.value(names.buffer_password_secret, PASSWORD_KEY),
            buffer_ready=buffer_ready,
            wake=lambda: self.wake(key),
        )
        lag = probed if probed is not None else lag_from_status(raw.get("status"))
        live_workers = find_child(
            cache, _DEPLOYMENT, hda.namespace, key[1], names.workers_deployment
        )
        replicas, state.scaling = worker_replicas(
            hda, live_workers, backlog=lag.total, state=state.scaling, now=time.time()
        )
        self.metrics.observe_hda(key, hda, replicas=replicas, lag=lag)

        # 2. Images: the spec's pins, else the operator's defaults; a new runtime image reaches
        #    ingest and output only after the workers rolled it out.
        images = workers_first(
            resolve_images(hda.spec, self.default_images),
            workers=live_workers,
            ingest=find_child(cache, _DEPLOYMENT, hda.namespace, key[1], names.ingest_deployment),
            output=find_child(cache, _STATEFULSET, hda.namespace, key[1], names.output_statefulset),
        )

        # 3. Create the generated Secret before anything reads it; build (pod templates carry
        #    the digests of the Secrets they read), apply what differs, prune the leftovers.
        #    A Secret the pods could not use stops here: status says which and why.
        writes = Writes()
        if not found.errors:
            created = await ensure_password_secret(
                self.kube, hda, images, names, found, self.stats, writes
            )
            if created is not None:
                found = found.with_body(names.buffer_password_secret, created)
        digests = found.digests
        desired = [
            with_applied_hash(with_secret_digests(_with_scaling(obj, names, state), digests))
            for obj in desired_children(hda, images, worker_replicas=replicas)
        ]
        if not found.errors:
            await apply_children(
                self.kube, hda, desired, cache, key, state.applied, self.stats, writes
            )
            await prune(
                self.kube,
                hda,
                desired,
                cache,
                key,
                self.stats,
                writes,
                retained=self._removed_shards_kept(hda, names, key),
            )
        self._report_writes(body, state, writes, found.errors)
        if writes.done:
            # The watch has not delivered what was just written: observing now would report
            # stale problems. The events of the writes wake this loop again in a moment.
            state.wake.set()
            return

        # 4. Replicated and cluster buffers: form the cluster, roll Valkey pods with failovers.
        buffer_topology = None
        if hda.spec.redis.topology != "standalone":
            buffer_topology = await self._buffer_step(
                body,
                hda,
                names,
                key,
                state,
                password=found.value(names.buffer_password_secret, PASSWORD_KEY),
                previous_buffer_status=(raw.get("status") or {}).get("redis"),
            )

        # 5. Observe the result and write the status if it changed.
        obs = observe(
            hda,
            names,
            cache,
            accelerator=key[1],
            desired=desired,
            images=images,
            worker_replicas=replicas,
            apply_errors=state.errors,
            secret_errors=found.errors,
            lag=lag,
            buffer_topology=buffer_topology,
        )
        await write_status(self.kube, body, raw, key, obs, self.stats)

    def _leaving(
        self, hda: HyperDriveAccelerator, names: ChildNames, key: Key
    ) -> list[list[NodeAddress]]:
        """The pods of cluster shards the spec no longer has whose StatefulSets are still here."""
        if hda.spec.redis.topology != "cluster":
            return []
        cache = self._require_cache()
        live = [
            shard
            for shard in range(hda.spec.redis.shard_count, MAX_SHARDS)
            if find_child(
                cache, _STATEFULSET, hda.namespace, key[1], valkey_shard_statefulset(hda, shard)
            )
        ]
        return leaving_nodes(hda, names, max(live) + 1) if live else []

    def _removed_shards_kept(
        self, hda: HyperDriveAccelerator, names: ChildNames, key: Key
    ) -> frozenset[tuple[str, str]]:
        """The removed shards' StatefulSets and budgets prune must leave (`removed_shards_kept`
        on the last probe taken after the last action)."""
        leaving = self._leaving(hda, names, key)
        if not leaving:
            return frozenset()
        return removed_shards_kept(leaving, self.buffer_watch.fresh(f"{key[0]}/{key[1]}"))

    async def _buffer_step(
        self,
        body: kopf.Body,
        hda: HyperDriveAccelerator,
        names: ChildNames,
        key: Key,
        state: HdaState,
        *,
        password: str | None,
        previous_buffer_status: dict[str, Any] | None,
    ) -> BufferObservation:
        """Probe the Valkey nodes in the background; on a probe taken after the last action,
        take the next step (`buffer_watch`). A resharding that failed is an Event saying when
        the next attempt is due (`previous_buffer_status`: status.redis, for the back-off)."""
        watch_key = f"{key[0]}/{key[1]}"
        groups = buffer_nodes(hda, names)
        leaving = self._leaving(hda, names, key)
        cache = self._require_cache()
        pods = cache.pods(hda.namespace, key[1])
        probe = self.buffer_watch.probe(
            watch_key,
            hda,
            names,
            password=password,
            wake=lambda: self.wake(key),
            leaving=leaving,
            pods=buffer_pods_view([*groups, *leaving], pods),
        )
        fresh = self.buffer_watch.fresh(watch_key)
        if fresh is not None:
            statefulsets = {
                name: live
                for name in names.valkey_statefulsets
                if (live := find_child(cache, _STATEFULSET, hda.namespace, key[1], name))
            }
            # Removed shards are not rolled: they only wait to be drained and deleted.
            rollouts = group_rollouts(groups, statefulsets, pods)
            _, state.buffer_activity = await buffer_pass(
                self.buffer_watch,
                watch_key,
                hda,
                fresh,
                rollouts,
                groups=groups,
                sentinels=sentinel_addresses(hda),
                password=password,
                kube=self.kube,
                leaving=leaving,
                wake=lambda: self.wake(key),
                last_reshard=last_resharding(previous_buffer_status),
            )
        resharded = self.buffer_watch.resharded(watch_key)
        if resharded is not None and resharded != state.reshard_reported:
            state.reshard_reported = resharded
            failure = reshard_failure_event(resharded)
            if failure is not None:
                events.error(body, "ReshardFailed", failure)
        moved, state.buffer_primaries = primaries_seen(
            hda.spec.redis.topology, groups, probe, state.buffer_primaries
        )
        return BufferObservation(
            topology=hda.spec.redis.topology,
            groups=tuple(tuple(group) for group in [*groups, *leaving]),
            probe=probe,
            activity=state.buffer_activity,
            resharded=resharded,
            primary_moved=moved,
        )

    @staticmethod
    def _report_writes(
        body: kopf.Body, state: HdaState, writes: Writes, secret_errors: tuple[str, ...]
    ) -> None:
        """One Event for what was written; one per error, when the errors changed."""
        if writes.done:
            events.applied(body, writes.done)
        errors = tuple(writes.errors)
        if errors and errors != state.errors:
            for item in errors:
                reason = (
                    Reason.CHILD_NAME_CONFLICT if CONFLICT_MARKER in item else Reason.APPLY_FAILED
                )
                events.error(body, reason, item)
        state.errors = errors
        if secret_errors and secret_errors != state.secret_errors:
            for item in secret_errors:
                events.error(body, Reason.SECRET_INVALID, item)
        state.secret_errors = secret_errors

    def _require_cache(self) -> Cache:
        if self.cache is None:
            raise RuntimeError("the watch cache is not ready")
        return self.cache

    # --- deletion ---------------------------------------------------------------------------

    async def release(self, body: kopf.Body) -> None:
        """The finalizer's work: release this HDA's FC PersistentVolumes, forget the HDA."""
        meta = body["metadata"]
        key = key_of(meta["namespace"], meta["name"])
        state = self._state(key)
        async with state.lock:
            await release_volumes(self.kube, body, self._require_cache(), key, self.stats)
        self._states.pop(key, None)
        self.metrics.forget(key)


_DEPLOYMENT = kind_of({"apiVersion": "apps/v1", "kind": "Deployment"})
_STATEFULSET = kind_of({"apiVersion": "apps/v1", "kind": "StatefulSet"})


def _with_scaling(obj: dict[str, Any], names: ChildNames, state: HdaState) -> dict[str, Any]:
    if obj["kind"] == "Deployment" and obj["metadata"]["name"] == names.workers_deployment:
        return with_scaling_state(obj, state.scaling)
    return obj


def _buffer_ready(cache: Cache, hda: HyperDriveAccelerator, names: ChildNames, key: Key) -> bool:
    """Every Valkey StatefulSet (each shard's) has a ready pod."""
    for name in names.valkey_statefulsets:
        live = find_child(cache, _STATEFULSET, hda.namespace, key[1], name)
        if live is None or int((live.get("status") or {}).get("readyReplicas") or 0) < 1:
            return False
    return True


async def _wait_any(event: asyncio.Event, stopped: kopf.DaemonStopped, *, seconds: float) -> None:
    waiters = {
        asyncio.ensure_future(event.wait()),
        asyncio.ensure_future(stopped.wait()),
    }
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
