"""Reconcile one HDA: build, compare with the live children, apply only what differs, observe,
and write status only when it changed.

One `Controller` serves every HDA. Each HDA has one kopf daemon that calls `Controller.run`: a
loop that reconciles, then sleeps until something relevant happens (a child or node event, a spec
change) or the resync interval passes. One loop per HDA means reconciles of an HDA never overlap.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import random
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import kopf
from pydantic import ValidationError

from hda.api.consts import LABEL_ACCELERATOR
from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.api.v1alpha1.resource import field_path
from hda.specs import (
    LABEL_NAMESPACE,
    ChildNames,
    child_names,
    desired_children,
    generated_password_secret,
)
from hda.specs.names import label_value

from . import events
from .compare import APPLIED_HASH, first_difference, with_applied_hash
from .kube import KINDS, ApiError, Kind, Kube, kind_of
from .metrics import OperatorMetrics
from .observe import Cache, LagProbe, lag_from_status, observe
from .scaling import ScalingState, clamp, recommend
from .status import Lag, Observation, compute_status, status_patch

log = logging.getLogger("hda.controller")

Key = tuple[str, str]  # (namespace, accelerator label value)

# An object we applied is trusted to be as applied for this long, while the watch catches up.
_SETTLE_SECONDS: Final = 5.0


def key_of(namespace: str, name: str) -> Key:
    return (namespace, label_value(name))


def child_key(body: Mapping[str, Any]) -> Key | None:
    """The HDA key a labelled child belongs to (PVs name their namespace in a label)."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    accelerator = labels.get(LABEL_ACCELERATOR)
    namespace = meta.get("namespace") or labels.get(LABEL_NAMESPACE)
    if not accelerator or not namespace:
        return None
    return (str(namespace), str(accelerator))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class Stats:
    """Counters for the benchmark and the logs."""

    reconciles: int = 0
    reconcile_seconds: float = 0.0
    applies: int = 0
    creates: int = 0
    deletes: int = 0
    status_writes: int = 0


@dataclasses.dataclass
class _State:
    """Per-HDA memory (lost on restart by design: everything is recomputed from the cluster)."""

    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    scaling: ScalingState = dataclasses.field(default_factory=ScalingState)
    applied: dict[tuple[str, str, str], tuple[str, float]] = dataclasses.field(default_factory=dict)
    errors: tuple[str, ...] = ()
    paused_logged: bool = False
    failures: int = 0


class Controller:
    """Reconciles every HDA the operator sees."""

    def __init__(
        self,
        kube: Kube,
        *,
        resync_seconds: float = 15.0,
        debounce_seconds: float = 0.3,
        lag_probe: LagProbe | None = None,
    ) -> None:
        self.kube = kube
        self.cache: Cache | None = None
        self.resync_seconds = resync_seconds
        self.debounce_seconds = debounce_seconds
        self.lag_probe = lag_probe or LagProbe(kube, interval=resync_seconds)
        self.stats = Stats()
        self.metrics = OperatorMetrics()
        self._states: dict[Key, _State] = {}
        self.ready = asyncio.Event()

    def render_metrics(self) -> str:
        stats = self.stats
        return self.metrics.render(
            reconciles=stats.reconciles,
            reconcile_seconds=stats.reconcile_seconds,
            applies=stats.applies,
            status_writes=stats.status_writes,
            lag_probe_seconds=self.lag_probe.busy_seconds,
        )

    # --- wake-ups --------------------------------------------------------------------------

    def _state(self, key: Key) -> _State:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
        return state

    def wake(self, key: Key | None) -> None:
        """Something an HDA depends on changed: reconcile it soon."""
        if key is not None and key in self._states:
            self._states[key].wake.set()

    def wake_all(self) -> None:
        for state in self._states.values():
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

    async def reconcile_safely(self, body: kopf.Body, key: Key, state: _State) -> float:
        """One reconcile; errors are logged, reported, and retried with back-off."""
        jitter = random.uniform(0.9, 1.1)  # noqa: S311 - spreading load, not security
        try:
            async with state.lock:
                await self.reconcile(body, key, state)
        except Exception as error:
            state.failures += 1
            delay = min(60.0, 2.0**state.failures)
            message = f"reconcile failed: {type(error).__name__}: {error}"
            log.exception(message, extra=_fields(key, retry_in=delay))
            events.error(body, "ReconcileFailed", message)
            return delay
        state.failures = 0
        return self.resync_seconds * jitter

    async def reconcile(self, body: kopf.Body, key: Key, state: _State) -> None:
        started = time.perf_counter()
        raw = copy.deepcopy(dict(body))  # a stable snapshot: the live body changes under us
        meta = raw.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return
        spec = raw.get("spec") or {}
        if spec.get("paused"):
            if not state.paused_logged:
                log.info("paused: no writes until spec.paused is false", extra=_fields(key))
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
        try:
            await self._reconcile_valid(body, raw, hda, key, state)
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
        await self._write_status(body, raw, key, obs)

    async def _reconcile_valid(
        self,
        body: kopf.Body,
        raw: dict[str, Any],
        hda: HyperDriveAccelerator,
        key: Key,
        state: _State,
    ) -> None:
        cache = self._require_cache()
        names = child_names(hda)
        accelerator = key[1]
        buffer_ready = _buffer_ready(cache, hda, names, accelerator)
        probed = self.lag_probe.lag(
            f"{key[0]}/{key[1]}",
            hda,
            names,
            cache,
            accelerator=accelerator,
            buffer_ready=buffer_ready,
            wake=lambda: self.wake(key),
        )
        lag = probed if probed is not None else lag_from_status(raw.get("status"))
        replicas = self._worker_replicas(hda, names, cache, accelerator, lag, state)
        self.metrics.observe_hda(key, hda, replicas=replicas, lag=lag)
        desired = [
            with_applied_hash(obj) for obj in desired_children(hda, worker_replicas=replicas)
        ]

        errors: list[str] = []
        written: list[str] = []
        uid = str(hda.metadata.get("uid", ""))
        for obj in desired:
            kind = kind_of(obj)
            name = obj["metadata"]["name"]
            live = _find(cache, kind, hda.namespace, accelerator, name)
            why = self._why_apply(obj, live, kind, state)
            if why is None:
                continue
            clash = _foreign(live, uid, kind)
            if clash is not None:
                errors.append(clash)
                continue
            try:
                result = await self.kube.apply(obj)
            except ApiError as error:
                if error.namespace_terminating:
                    # The namespace (and this HDA with it) is going away: nothing to restore.
                    log.info("namespace is being deleted", extra=_fields(key))
                    return
                errors.append(f"{obj['kind']}/{name}: {error}")
                continue
            self.stats.applies += 1
            state.applied[(kind.plural, hda.namespace, name)] = (
                obj["metadata"]["annotations"][APPLIED_HASH],
                time.monotonic(),
            )
            written.append(f"{obj['kind']}/{name} ({why})")
            log.info(
                "applied",
                extra=_fields(key, object=f"{obj['kind']}/{name}", reason=why),
            )
            leftover = first_difference(obj, result)
            if leftover is not None:
                log.warning(
                    "applied object still differs: comparison would not converge",
                    extra=_fields(key, object=f"{obj['kind']}/{name}", field=leftover),
                )

        if names.valkey_password_secret_is_generated:
            secret_kind = kind_of({"apiVersion": "v1", "kind": "Secret"})
            if (
                _find(cache, secret_kind, hda.namespace, accelerator, names.valkey_password_secret)
                is None
            ):
                try:
                    created = await self.kube.create(
                        generated_password_secret(hda, secrets.token_urlsafe(32))
                    )
                except ApiError as error:
                    if error.namespace_terminating:
                        log.info("namespace is being deleted", extra=_fields(key))
                        return
                    errors.append(f"Secret/{names.valkey_password_secret}: {error}")
                else:
                    if created is not None:
                        self.stats.creates += 1
                        written.append(f"Secret/{names.valkey_password_secret} (created once)")

        errors.extend(await self._prune(hda, names, desired, cache, key, written))

        if written:
            events.applied(body, written)
        new_errors = tuple(errors)
        if new_errors and new_errors != state.errors:
            for item in new_errors:
                events.error(body, "ApplyFailed", item)
        state.errors = new_errors

        if written:
            # The watch has not delivered what was just written: observing now would report
            # stale problems. The events of the writes wake this loop again in a moment.
            state.wake.set()
            return
        obs = observe(
            hda,
            names,
            cache,
            accelerator=accelerator,
            desired=desired,
            worker_replicas=replicas,
            apply_errors=new_errors,
            lag=lag,
        )
        await self._write_status(body, raw, key, obs)

    def _why_apply(
        self, obj: dict[str, Any], live: dict[str, Any] | None, kind: Kind, state: _State
    ) -> str | None:
        """None when the live object already is the desired one; else why it must be applied."""
        meta = obj["metadata"]
        if live is None:
            recent = state.applied.get((kind.plural, meta.get("namespace", ""), meta["name"]))
            if recent is not None and time.monotonic() - recent[1] < _SETTLE_SECONDS:
                return None  # just applied; the watch has not delivered it yet
            return "missing"
        difference = first_difference(obj, live)
        if difference is None:
            return None
        recent = state.applied.get((kind.plural, meta.get("namespace", ""), meta["name"]))
        wanted = meta["annotations"][APPLIED_HASH]
        if (
            recent is not None
            and recent[0] == wanted
            and time.monotonic() - recent[1] < _SETTLE_SECONDS
        ):
            return None
        if difference.startswith(f".metadata.annotations.{APPLIED_HASH}"):
            return "spec changed"
        return f"drift at {difference}"

    async def _prune(  # noqa: PLR0917
        self,
        hda: HyperDriveAccelerator,
        names: ChildNames,
        desired: list[dict[str, Any]],
        cache: Cache,
        key: Key,
        written: list[str],
    ) -> list[str]:
        """Delete children this HDA owns that the spec no longer asks for."""
        wanted = {(kind_of(o).plural, o["metadata"]["name"]) for o in desired}
        keep_kinds = {"Secret", "PersistentVolumeClaim"}  # created once / by the StatefulSets
        uid = str(hda.metadata.get("uid", ""))
        errors: list[str] = []
        for kind in KINDS:
            if kind.kind in keep_kinds:
                continue
            for live in cache.children(kind, hda.namespace, key[1]):
                name = str(live["metadata"]["name"])
                if (kind.plural, name) in wanted:
                    continue
                if kind.namespaced and _foreign(live, uid, kind) is not None:
                    continue
                if not kind.namespaced and (live.get("status") or {}).get("phase") == "Bound":
                    continue  # a PV still holding a claim's data stays until the claim goes
                if live["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    await self.kube.delete(kind, live["metadata"].get("namespace"), name)
                except ApiError as error:
                    errors.append(f"{kind.kind}/{name}: {error}")
                    continue
                self.stats.deletes += 1
                written.append(f"{kind.kind}/{name} (deleted: no longer in the spec)")
        return errors

    def _worker_replicas(  # noqa: PLR0917
        self,
        hda: HyperDriveAccelerator,
        names: ChildNames,
        cache: Cache,
        accelerator: str,
        lag: Lag,
        state: _State,
    ) -> int:
        policy = hda.spec.workers.autoscaling
        if policy is None:
            return hda.spec.workers.replicas
        kind = kind_of({"apiVersion": "apps/v1", "kind": "Deployment"})
        live = _find(cache, kind, hda.namespace, accelerator, names.workers_deployment)
        current = (
            int((live.get("spec") or {}).get("replicas", 0))
            if live is not None
            else clamp(hda.spec.workers.replicas, policy)
        )
        replicas, state.scaling = recommend(
            current=current,
            backlog=lag.total,
            policy=policy,
            state=state.scaling,
            now=time.monotonic(),
        )
        return replicas

    async def _write_status(
        self, body: kopf.Body, raw: dict[str, Any], key: Key, obs: Observation
    ) -> None:
        live_status = raw.get("status") or {}
        status, transitions = compute_status(obs, live_status, _now())
        patch = status_patch(status, live_status)
        if patch is None:
            return
        meta = raw["metadata"]
        try:
            await self.kube.patch_status(meta["namespace"], meta["name"], patch)
        except ApiError as error:
            if error.status == 404:
                return
            raise
        self.stats.status_writes += 1
        log.info(
            "status written",
            extra=_fields(key, transitions=len(transitions), changed=_changed(status, live_status)),
        )
        events.transitions(body, transitions)

    def _require_cache(self) -> Cache:
        if self.cache is None:
            raise RuntimeError("the watch cache is not ready")
        return self.cache

    # --- deletion ---------------------------------------------------------------------------

    async def release(self, body: kopf.Body) -> None:
        """Release this HDA's FC PersistentVolumes (the finalizer's work). Never blocks long:
        PVs whose claim is retained stay (they hold that claim's data); the rest are deleted."""
        meta = body["metadata"]
        key = key_of(meta["namespace"], meta["name"])
        state = self._state(key)
        cache = self._require_cache()
        retention = (
            ((body.get("spec") or {}).get("output") or {}).get("pvcRetentionPolicy") or {}
        ).get("whenDeleted", "Retain")
        pv_kind = kind_of({"apiVersion": "v1", "kind": "PersistentVolume"})
        pvc_kind = kind_of({"apiVersion": "v1", "kind": "PersistentVolumeClaim"})
        claims = {str(c["metadata"]["name"]) for c in cache.children(pvc_kind, key[0], key[1])}
        async with state.lock:
            for pv in cache.children(pv_kind, key[0], key[1]):
                name = str(pv["metadata"]["name"])
                ref = (pv.get("spec") or {}).get("claimRef") or {}
                bound = (pv.get("status") or {}).get("phase") == "Bound"
                if retention == "Retain" and bound and ref.get("name") in claims:
                    log.info(
                        "keeping PersistentVolume of a retained claim",
                        extra=_fields(
                            key, object=f"PersistentVolume/{name}", claim=ref.get("name")
                        ),
                    )
                    continue
                await self.kube.delete(pv_kind, None, name)
                self.stats.deletes += 1
                log.info("released", extra=_fields(key, object=f"PersistentVolume/{name}"))
        self._states.pop(key, None)
        self.metrics.forget(key)


def _changed(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """Which parts of the status differ: condition types and other top-level fields."""
    before = {c.get("type"): c for c in old.get("conditions") or []}
    changed = [str(c["type"]) for c in new.get("conditions") or [] if before.get(c["type"]) != c]
    changed += [
        k for k in sorted(set(new) | set(old)) if k != "conditions" and new.get(k) != old.get(k)
    ]
    return changed


def _fields(key: Key, **extra: Any) -> dict[str, Any]:
    return {"hda": f"{key[0]}/{key[1]}", **extra}


def _find(
    cache: Cache, kind: Kind, namespace: str, accelerator: str, name: str
) -> dict[str, Any] | None:
    for item in cache.children(kind, namespace, accelerator):
        if item["metadata"]["name"] == name:
            return item
    return None


def _foreign(live: dict[str, Any] | None, uid: str, kind: Kind) -> str | None:
    """A message when `live` belongs to something else than this HDA; None when it is ours."""
    if live is None or not kind.namespaced:
        return None
    owners = live["metadata"].get("ownerReferences") or []
    if any(o.get("uid") == uid for o in owners):
        return None
    return (
        f"{live.get('kind', kind.kind)}/{live['metadata']['name']} exists and is not owned by "
        "this HyperDriveAccelerator; rename or delete it"
    )


def _buffer_ready(
    cache: Cache, hda: HyperDriveAccelerator, names: ChildNames, accelerator: str
) -> bool:
    kind = kind_of({"apiVersion": "apps/v1", "kind": "StatefulSet"})
    live = _find(cache, kind, hda.namespace, accelerator, names.valkey_statefulset)
    return live is not None and int((live.get("status") or {}).get("readyReplicas") or 0) >= 1


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
