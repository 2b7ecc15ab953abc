"""Status computation: conditions from observations, transitions, unchanged status is stable."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hda.api.v1alpha1.status import ImagesStatus
from hda.controller.observe import lag_from_status
from hda.controller.status import (
    CONDITION_TYPES,
    Claim,
    Lag,
    Observation,
    StreamLag,
    Workload,
    compute_status,
    status_patch,
)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"


def workload(name: str, desired: int, ready: int | None = None) -> Workload:
    ready = desired if ready is None else ready
    return Workload(name, True, desired, ready, desired, desired, True)


def healthy(**changes: Any) -> Observation:
    base = Observation(
        generation=3,
        buffer=workload("v", 1),
        ingest=workload("i", 2),
        workers=workload("w", 2),
        output=workload("o", 2),
        fc_node_selector="hda.shitops.dev/fibre-channel=true",
        fc_nodes=2,
        storage_class="hda-fibre-channel",
        claims=(Claim("data-o-0", "Bound"), Claim("data-o-1", "Bound")),
        lag=Lag(error="Valkey not reachable"),
        worker_selector="a=b",
    )
    return Observation(**{**base.__dict__, **changes})


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_healthy_pipeline_is_ready_and_reports_every_condition() -> None:
    status, transitions = compute_status(healthy(), None, T0)
    found = conditions(status)
    assert list(found) == list(CONDITION_TYPES)
    assert found["Ready"]["status"] == "True"
    assert found["Ready"]["reason"] == "AllComponentsReady"
    assert found["Degraded"]["status"] == "False"
    assert found["Progressing"]["status"] == "False"
    assert found["WorkersKeepingUp"]["status"] == "Unknown"
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert status["observedGeneration"] == 3
    assert status["workersReady"] == "2/2"
    assert status["components"]["workers"] == {
        "desiredReplicas": 2,
        "readyReplicas": 2,
        "replicas": 2,
        "selector": "a=b",
    }
    assert "totalLag" not in status
    assert len(transitions) == len(CONDITION_TYPES)


def test_unchanged_observation_keeps_times_and_needs_no_write() -> None:
    first, _ = compute_status(healthy(), None, T0)
    second, transitions = compute_status(healthy(), first, T1)
    assert transitions == []
    assert second == first
    assert status_patch(second, first) is None


def test_transition_updates_only_the_changed_conditions_time() -> None:
    first, _ = compute_status(healthy(), None, T0)
    later, transitions = compute_status(healthy(workers=workload("w", 2, 1)), first, T1)
    found = conditions(later)
    assert found["WorkersReady"]["status"] == "False"
    assert found["WorkersReady"]["lastTransitionTime"] == T1
    assert found["BufferReady"]["lastTransitionTime"] == T0
    assert {t.type for t in transitions} == {"WorkersReady", "Ready"}
    assert all(t.warning for t in transitions)
    assert later["workersReady"] == "1/2"


def test_no_fibre_channel_nodes() -> None:
    status, transitions = compute_status(
        healthy(
            fc_nodes=0, output=workload("o", 2, 0), claims=(Claim("data-o-0"), Claim("data-o-1"))
        ),
        None,
        T0,
    )
    found = conditions(status)
    assert found["Ready"]["status"] == "False"
    assert found["Ready"]["reason"] == "NoFibreChannelNodes"
    assert found["Degraded"]["status"] == "True"
    assert found["Degraded"]["reason"] == "NoFibreChannelNodes"
    assert "hda.shitops.dev/fibre-channel=true" in found["OutputReady"]["message"]
    assert found["OutputStorageBound"]["reason"] == "NoFibreChannelNodes"
    assert any(t.warning and t.reason == "NoFibreChannelNodes" for t in transitions)


def test_claim_without_a_volume_is_unavailable() -> None:
    status, _ = compute_status(
        healthy(
            output=workload("o", 2, 1),
            claims=(Claim("data-o-0", "Bound"), Claim("data-o-1", "Pending")),
            available_volumes=0,
        ),
        None,
        T0,
    )
    found = conditions(status)
    assert found["OutputStorageBound"]["reason"] == "FibreChannelVolumeUnavailable"
    assert "data-o-1" in found["OutputStorageBound"]["message"]
    assert found["Degraded"]["reason"] == "FibreChannelVolumeUnavailable"
    assert found["Ready"]["reason"] == "FibreChannelVolumeUnavailable"


def test_pending_claim_with_a_volume_waits_without_degrading() -> None:
    status, _ = compute_status(
        healthy(claims=(Claim("data-o-0", "Bound"), Claim("data-o-1")), available_volumes=1),
        None,
        T0,
    )
    found = conditions(status)
    assert found["OutputStorageBound"]["reason"] == "ClaimsPending"
    assert found["Degraded"]["status"] == "False"


def test_missing_storage_class_names_the_field() -> None:
    status, _ = compute_status(
        healthy(storage_class_exists=False, claims=(Claim("data-o-0"), Claim("data-o-1"))),
        None,
        T0,
    )
    message = conditions(status)["OutputStorageBound"]["message"]
    assert "spec.output.fibreChannel.storageClassName" in message


def test_invalid_spec_keeps_observed_replicas_and_names_the_field() -> None:
    first, _ = compute_status(healthy(), None, T0)
    status, transitions = compute_status(
        Observation(generation=4, spec_error="spec.workers.replicas: must be >= 0"), first, T1
    )
    found = conditions(status)
    assert found["Ready"] == {
        "type": "Ready",
        "status": "False",
        "observedGeneration": 4,
        "lastTransitionTime": T1,
        "reason": "InvalidSpec",
        "message": "spec.workers.replicas: must be >= 0",
    }
    assert status["components"] == first["components"]
    assert status["observedGeneration"] == 4
    assert any(t.warning and t.reason == "InvalidSpec" for t in transitions)


def test_apply_errors_degrade() -> None:
    status, _ = compute_status(healthy(apply_errors=("Deployment/x: 403 Forbidden: no",)), None, T0)
    found = conditions(status)
    assert found["Degraded"]["reason"] == "ApplyFailed"
    assert found["Ready"]["status"] == "False"


def test_rollout_is_progressing() -> None:
    rolling = Workload("w", True, 2, 2, 1, 3, True)
    status, _ = compute_status(healthy(workers=rolling), None, T0)
    found = conditions(status)
    assert found["Progressing"]["status"] == "True"
    assert found["Progressing"]["reason"] == "RollingOut"


IMAGES = ImagesStatus(runtime="registry.test/hda/runtime:2.0.0", valkey="valkey/valkey:9.1")


def test_status_shows_the_images_in_use() -> None:
    status, _ = compute_status(healthy(images=IMAGES), None, T0)

    assert status["images"] == {
        "runtime": "registry.test/hda/runtime:2.0.0",
        "valkey": "valkey/valkey:9.1",
    }


def test_unchanged_images_need_no_write_and_a_new_image_does() -> None:
    first, _ = compute_status(healthy(images=IMAGES), None, T0)
    same, _ = compute_status(healthy(images=IMAGES), first, T1)
    newer = IMAGES.model_copy(update={"runtime": "registry.test/hda/runtime:3.0.0"})
    moved, _ = compute_status(healthy(images=newer), first, T1)

    assert status_patch(same, first) is None
    assert status_patch(moved, first) == {**moved, "images": newer.to_wire()}


def test_invalid_spec_keeps_the_images_in_use() -> None:
    first, _ = compute_status(healthy(images=IMAGES), None, T0)
    status, _ = compute_status(Observation(generation=4, spec_error="spec.image: bad"), first, T1)

    assert status["images"] == first["images"]


def test_components_waiting_for_the_workers_are_progressing() -> None:
    status, _ = compute_status(healthy(waiting_for_workers=("ingest", "output")), None, T0)
    progressing = conditions(status)["Progressing"]

    assert progressing["status"] == "True"
    assert progressing["reason"] == "RollingOutWorkersFirst"
    assert "ingest, output follow" in progressing["message"]


def test_missing_children_are_progressing() -> None:
    status, _ = compute_status(
        healthy(missing_children=("Deployment/w",), workers=Workload("w")), None, T0
    )
    found = conditions(status)
    assert found["Progressing"]["reason"] == "CreatingChildren"
    assert found["WorkersReady"]["reason"] == "WorkersMissing"


def test_known_lag_is_reported() -> None:
    lag = Lag(streams=(StreamLag("events", lag=30_000, pending=5, length=40_000),))
    status, _ = compute_status(healthy(lag=lag), None, T0)
    assert status["totalLag"] == 30_005
    assert status["streams"][0]["name"] == "events"
    assert conditions(status)["WorkersKeepingUp"]["reason"] == "LagAboveTarget"


def test_status_patch_deletes_vanished_keys() -> None:
    patch = status_patch({"a": 1, "b": {"c": 1}}, {"a": 1, "b": {"c": 1, "d": 2}, "e": 3})
    assert patch == {"a": 1, "b": {"c": 1, "d": None}, "e": None}


workloads = st.builds(
    Workload,
    name=st.just("x"),
    exists=st.booleans(),
    desired=st.integers(0, 5),
    ready=st.integers(0, 5),
    updated=st.integers(0, 5),
    current=st.integers(0, 6),
    rolled_out=st.booleans(),
)


@given(
    buffer=workloads,
    ingest=workloads,
    workers=workloads,
    output=workloads,
    fc_nodes=st.integers(0, 3),
    phases=st.lists(st.sampled_from([None, "Pending", "Bound", "Lost"]), max_size=5),
    available=st.integers(0, 3),
)
def test_any_observation_gives_a_valid_stable_status(  # noqa: PLR0917
    buffer: Workload,
    ingest: Workload,
    workers: Workload,
    output: Workload,
    fc_nodes: int,
    phases: list[str | None],
    available: int,
) -> None:
    obs = Observation(
        generation=1,
        buffer=buffer,
        ingest=ingest,
        workers=workers,
        output=output,
        fc_nodes=fc_nodes,
        claims=tuple(Claim(f"c{i}", p) for i, p in enumerate(phases)),
        available_volumes=available,
    )
    status, _ = compute_status(obs, None, T0)
    found = conditions(status)
    assert list(found) == list(CONDITION_TYPES)
    assert all(c["reason"][0].isupper() and c["reason"].isalnum() for c in found.values())
    # Ready is True exactly when every component condition is.
    parts = ["BufferReady", "IngestReady", "WorkersReady", "OutputReady", "OutputStorageBound"]
    assert (found["Ready"]["status"] == "True") == all(found[p]["status"] == "True" for p in parts)
    again, transitions = compute_status(obs, status, T1)
    assert again == status
    assert transitions == []


def test_lag_read_back_from_status_gives_the_same_status() -> None:
    """An unmeasured lag (a restart, a probe in flight) must leave the status untouched."""
    for lag in (
        Lag(error="Valkey at x:6379 not reachable"),
        Lag(streams=(StreamLag("events", lag=3, pending=4, length=9, dead_letters=1),)),
        Lag(streams=(StreamLag("events", lag=None, pending=4, length=9),)),
    ):
        first, _ = compute_status(healthy(lag=lag), None, T0)
        again, transitions = compute_status(healthy(lag=lag_from_status(first)), first, T1)
        assert again == first
        assert transitions == []
