"""Lag-driven worker replica recommendation (pure), in the manner of the HorizontalPodAutoscaler.

The raw need is `ceil(backlog / targetLagPerReplica)`, clamped to `[minReplicas, maxReplicas]`.
Stabilization keeps a short history of raw recommendations: scaling up uses the *lowest*
recommendation of the scale-up window (a brief spike does not add pods when the window is set),
scaling down uses the *highest* of the scale-down window (pods go only after the lower need held
for the whole window). Unknown lag never changes the replica count.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from hda.api.v1alpha1 import Autoscaling, HyperDriveAccelerator, parse_duration


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """A raw recommendation and when it was made (monotonic seconds)."""

    at: float
    replicas: int


@dataclasses.dataclass(frozen=True)
class ScalingState:
    """What the recommender remembers between observations."""

    history: tuple[Recommendation, ...] = ()


def clamp(replicas: int, policy: Autoscaling) -> int:
    return max(policy.min_replicas, min(policy.max_replicas, replicas))


def raw_recommendation(backlog: int, policy: Autoscaling) -> int:
    """Workers needed for `backlog` entries, within the bounds."""
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
    history = (*(r for r in state.history if now - r.at <= horizon), Recommendation(now, raw))
    in_up = [r.replicas for r in history if now - r.at <= up_window]
    in_down = [r.replicas for r in history if now - r.at <= down_window]
    if raw > current:
        target = max(current, min(in_up))
    elif raw < current:
        target = min(current, max(in_down))
    else:
        target = current
    return clamp(target, policy), ScalingState(history)


def worker_replicas(
    hda: HyperDriveAccelerator,
    live_workers: Mapping[str, Any] | None,
    *,
    backlog: int | None,
    state: ScalingState,
    now: float,
) -> tuple[int, ScalingState]:
    """Workers to run: `spec.workers.replicas`, or the autoscaler's recommendation from the
    live Deployment's count when autoscaling is on."""
    policy = hda.spec.workers.autoscaling
    if policy is None:
        return hda.spec.workers.replicas, state
    current = (
        int((live_workers.get("spec") or {}).get("replicas", 0))
        if live_workers is not None
        else clamp(hda.spec.workers.replicas, policy)
    )
    return recommend(current=current, backlog=backlog, policy=policy, state=state, now=now)
