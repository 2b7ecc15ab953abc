"""Lag-driven worker replica recommendation (pure), in the manner of the HorizontalPodAutoscaler.

Lag is counted in stream entries (each entry is one ingest batch of events), the unit of
`status.totalLag` and of `spec.workers.autoscaling.targetLagPerReplica`. The raw need is
`ceil(backlog / targetLagPerReplica)`, clamped to `[minReplicas, maxReplicas]`.

Stabilization looks back over recent raw recommendations: scaling up uses the *lowest* of the
scale-up window (a need must hold for the whole window before pods are added), scaling down uses
the *highest* of the scale-down window (pods go only after the lower need held for the whole
window). Unknown lag never changes the replica count.

The memory survives an operator restart: it is kept on the workers Deployment in an annotation,
in wall-clock seconds. It changes only when the raw recommendation changes or an old one leaves
the windows, so keeping it there costs no write per reconcile.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any, Final

from hda.api.consts import GROUP
from hda.api.v1alpha1 import Autoscaling, HyperDriveAccelerator, parse_duration

SCALING_ANNOTATION: Final = f"{GROUP}/scaling-history"


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """A raw recommendation and the last moment it was in force (epoch seconds)."""

    at: float
    replicas: int


@dataclasses.dataclass(frozen=True)
class ScalingState:
    """The raw recommendation in force now, and when each earlier one was last made.

    Only the newest moment of each value is kept: for the lowest or highest value of any window
    ending now, an older moment of the same value adds nothing.
    """

    current: int | None = None
    ended: tuple[Recommendation, ...] = ()
    # When `current` was last made; kept in memory only (stored, it would change every pass).
    # Unknown after a restart: `current` then counts as made until the next recommendation.
    seen: float | None = dataclasses.field(default=None, compare=False)


def clamp(replicas: int, policy: Autoscaling) -> int:
    return max(policy.min_replicas, min(policy.max_replicas, replicas))


def raw_recommendation(backlog: int, policy: Autoscaling) -> int:
    """Workers needed for a backlog of `backlog` entries, within the bounds."""
    return clamp(math.ceil(max(backlog, 0) / policy.target_lag_per_replica), policy)


def recommend(
    *,
    current: int,
    backlog: int | None,
    policy: Autoscaling,
    state: ScalingState,
    now: float,
) -> tuple[int, ScalingState]:
    """The replica count to run now, and the state to keep for next time."""
    up_window = parse_duration(policy.scale_up_stabilization)
    down_window = parse_duration(policy.scale_down_stabilization)
    current = clamp(current, policy)
    if backlog is None:
        return current, state
    raw = raw_recommendation(backlog, policy)
    horizon = max(up_window, down_window)
    ended = [r for r in state.ended if now - r.at <= horizon]
    if state.current is not None and state.current != raw:
        last = state.seen if state.seen is not None else now
        ended = [r for r in ended if r.replicas != state.current]
        ended.append(Recommendation(float(math.ceil(last)), state.current))
    ended = [r for r in ended if r.replicas != raw]
    kept = ScalingState(raw, tuple(sorted(ended, key=lambda r: (r.at, r.replicas))), seen=now)
    in_up = [r.replicas for r in kept.ended if now - r.at <= up_window] + [raw]
    in_down = [r.replicas for r in kept.ended if now - r.at <= down_window] + [raw]
    if raw > current:
        target = max(current, min(in_up))
    elif raw < current:
        target = min(current, max(in_down))
    else:
        target = current
    return clamp(target, policy), kept


def worker_replicas(
    hda: HyperDriveAccelerator,
    live_workers: Mapping[str, Any] | None,
    *,
    backlog: int | None,
    state: ScalingState | None,
    now: float,
) -> tuple[int, ScalingState | None]:
    """Workers to run: `spec.workers.replicas`, or the autoscaler's recommendation from the
    live Deployment's count when autoscaling is on. Without `state` (after a restart), the
    state stored on the live Deployment is used."""
    policy = hda.spec.workers.autoscaling
    if policy is None:
        return hda.spec.workers.replicas, None
    if state is None:
        state = stored_state(live_workers)
    current = (
        int((live_workers.get("spec") or {}).get("replicas", 0))
        if live_workers is not None
        else clamp(hda.spec.workers.replicas, policy)
    )
    return recommend(current=current, backlog=backlog, policy=policy, state=state, now=now)


def stored_state(live_workers: Mapping[str, Any] | None) -> ScalingState:
    """The state kept on the workers Deployment; empty when absent or unreadable."""
    annotations = ((live_workers or {}).get("metadata") or {}).get("annotations") or {}
    try:
        data = json.loads(annotations.get(SCALING_ANNOTATION) or "{}")
        current = data.get("current")
        return ScalingState(
            current=int(current) if current is not None else None,
            ended=tuple(Recommendation(float(at), int(n)) for at, n in data.get("ended") or []),
        )
    except (ValueError, TypeError, AttributeError):
        return ScalingState()


def with_scaling_state(deployment: dict[str, Any], state: ScalingState | None) -> dict[str, Any]:
    """The workers Deployment carrying `state` in its annotation (unchanged without one)."""
    if state is None:
        return deployment
    result = copy.deepcopy(deployment)
    value = json.dumps(
        {"current": state.current, "ended": [[int(r.at), r.replicas] for r in state.ended]},
        separators=(",", ":"),
    )
    result["metadata"].setdefault("annotations", {})[SCALING_ANNOTATION] = value
    return result
