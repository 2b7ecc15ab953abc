"""Lag-driven worker scaling: bounds, stabilization windows, unknown lag."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.test_specs_support import example

from hda.api.v1alpha1 import Autoscaling
from hda.controller.scaling import (
    SCALING_ANNOTATION,
    Recommendation,
    ScalingState,
    raw_recommendation,
    recommend,
    stored_state,
    with_scaling_state,
    worker_replicas,
)


def policy(**kwargs: object) -> Autoscaling:
    return Autoscaling.model_validate(
        {"minReplicas": 1, "maxReplicas": 10, "targetLagPerReplica": 100, **kwargs}
    )


def test_raw_recommendation_is_ceil_of_backlog_over_target() -> None:
    p = policy()
    assert raw_recommendation(0, p) == 1
    assert raw_recommendation(100, p) == 1
    assert raw_recommendation(101, p) == 2
    assert raw_recommendation(10_000, p) == 10


def test_scale_up_is_immediate_without_window() -> None:
    replicas, _ = recommend(
        current=1,
        backlog=450,
        policy=policy(scaleUpStabilization="0s"),
        state=ScalingState(),
        now=0,
    )
    assert replicas == 5


def test_scale_down_waits_for_the_window() -> None:
    p = policy(scaleDownStabilization="60s")
    state = ScalingState()
    replicas, state = recommend(current=5, backlog=500, policy=p, state=state, now=0)
    assert replicas == 5
    replicas, state = recommend(current=5, backlog=0, policy=p, state=state, now=30)
    assert replicas == 5  # the need of 5 at t=0 is still inside the window
    replicas, state = recommend(current=5, backlog=0, policy=p, state=state, now=61)
    assert replicas == 1


def test_scale_up_window_ignores_a_brief_spike() -> None:
    p = policy(scaleUpStabilization="30s")
    state = ScalingState()
    _, state = recommend(current=1, backlog=50, policy=p, state=state, now=0)
    replicas, state = recommend(current=1, backlog=900, policy=p, state=state, now=10)
    assert replicas == 1
    replicas, state = recommend(current=1, backlog=900, policy=p, state=state, now=41)
    assert replicas == 9


def test_unknown_lag_keeps_the_current_count() -> None:
    replicas, state = recommend(
        current=4, backlog=None, policy=policy(), state=ScalingState(), now=0
    )
    assert replicas == 4
    assert state == ScalingState()


def test_current_outside_bounds_is_clamped() -> None:
    replicas, _ = recommend(current=50, backlog=None, policy=policy(), state=ScalingState(), now=0)
    assert replicas == 10


@given(
    minimum=st.integers(0, 5),
    extra=st.integers(0, 20),
    target=st.integers(1, 1000),
    current=st.integers(0, 40),
    backlogs=st.lists(st.one_of(st.none(), st.integers(0, 100_000)), min_size=1, max_size=20),
    up=st.sampled_from(["0s", "15s", "1m"]),
    down=st.sampled_from(["0s", "30s", "5m"]),
)
def test_recommendations_stay_within_bounds_and_move_toward_the_need(  # noqa: PLR0917
    minimum: int,
    extra: int,
    target: int,
    current: int,
    backlogs: list[int | None],
    up: str,
    down: str,
) -> None:
    p = policy(
        minReplicas=minimum,
        maxReplicas=max(minimum, 1) + extra,
        targetLagPerReplica=target,
        scaleUpStabilization=up,
        scaleDownStabilization=down,
    )
    state = ScalingState()
    replicas = current
    for step, backlog in enumerate(backlogs):
        previous = max(p.min_replicas, min(p.max_replicas, replicas))
        replicas, state = recommend(
            current=replicas, backlog=backlog, policy=p, state=state, now=step * 10.0
        )
        assert p.min_replicas <= replicas <= p.max_replicas
        if backlog is not None:
            need = raw_recommendation(backlog, p)
            # Never overshoot: scaling goes toward the need, never past it.
            assert min(previous, need) <= replicas <= max(previous, need)


def workers_deployment(replicas: int, state: ScalingState | None) -> dict[str, object]:
    base = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"}}
    live = with_scaling_state({**base, "spec": {"replicas": replicas}}, state)
    return {**live, "spec": {"replicas": replicas}}


def test_stored_state_round_trips_through_the_annotation() -> None:
    state = ScalingState(
        2, (Recommendation(1_700_000_000.0, 5), Recommendation(1_700_000_030.0, 3))
    )
    assert stored_state(workers_deployment(5, state)) == state


def test_unreadable_or_missing_annotation_is_an_empty_history() -> None:
    assert stored_state(None) == ScalingState()
    broken = {"metadata": {"annotations": {SCALING_ANNOTATION: "{not json"}}}
    assert stored_state(broken) == ScalingState()


def test_restarted_operator_keeps_the_scale_down_window() -> None:
    hda = example().model_copy(deep=True)
    hda.spec.workers.autoscaling = policy(scaleDownStabilization="10m")
    t0 = 1_700_000_000.0
    # The first operator saw a backlog needing 5 workers, then none.
    replicas, state = worker_replicas(hda, None, backlog=500, state=None, now=t0)
    assert replicas == 5
    replicas, state = worker_replicas(
        hda, workers_deployment(5, state), backlog=0, state=state, now=t0 + 30
    )
    assert replicas == 5
    stored = workers_deployment(5, state)
    # A new operator (no memory) one minute later: the need of 5 is still inside the window.
    replicas, _ = worker_replicas(hda, stored, backlog=0, state=None, now=t0 + 90)
    assert replicas == 5
    # Once the window passed, it scales down.
    replicas, _ = worker_replicas(hda, stored, backlog=0, state=None, now=t0 + 30 + 601)
    assert replicas == 1


def test_steady_need_leaves_the_annotation_unchanged() -> None:
    """The history changes only with the need: a steady backlog causes no write."""
    p = policy(scaleDownStabilization="5m")
    _, state = recommend(current=3, backlog=300, policy=p, state=ScalingState(), now=0)
    first = workers_deployment(3, state)
    for now in range(10, 200, 10):
        _, state = recommend(current=3, backlog=300, policy=p, state=state, now=now)
        assert workers_deployment(3, state) == first
