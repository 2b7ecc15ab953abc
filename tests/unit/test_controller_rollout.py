"""Workers first: ingest and output move to a new runtime image only after the workers did."""

from __future__ import annotations

from typing import Any

import pytest

from hda.controller.rollout import rolled_out_to, workers_first
from hda.specs import Component, Images

OLD = "registry.test/hda/runtime:1.0.0"
NEW = "registry.test/hda/runtime:2.0.0"
TARGET = Images(runtime=NEW, valkey="registry.test/valkey:9.1")


def workload(
    image: str, *, replicas: int = 2, generation: int = 4, status: dict[str, int] | None = None
) -> dict[str, Any]:
    """A live Deployment or StatefulSet; by default fully rolled out."""
    done = {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": replicas,
        "readyReplicas": replicas,
    }
    return {
        "metadata": {"generation": generation},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "c", "image": image}]}},
        },
        "status": {**done, **(status or {})},
    }


def test_new_pipeline_runs_the_target_everywhere() -> None:
    assert workers_first(TARGET, workers=None, ingest=None, output=None) == TARGET


def test_workers_still_on_the_old_image_hold_ingest_and_output() -> None:
    images = workers_first(
        TARGET, workers=workload(OLD), ingest=workload(OLD), output=workload(OLD)
    )

    assert images.of(Component.WORKERS) == NEW
    assert images.of(Component.INGEST) == OLD
    assert images.of(Component.OUTPUT) == OLD
    assert images.of(Component.VALKEY) == TARGET.valkey


@pytest.mark.parametrize(
    "unfinished",
    [
        {"observedGeneration": 3},  # the Deployment controller has not seen the new template
        {"updatedReplicas": 1},  # one pod still to replace
        {"replicas": 3},  # an old pod still terminating
        {"availableReplicas": 1},  # a new pod not available yet
    ],
    ids=["not-observed", "not-updated", "old-pod-left", "not-available"],
)
def test_workers_mid_rollout_still_hold(unfinished: dict[str, int]) -> None:
    workers = workload(NEW, status=unfinished)

    assert not rolled_out_to(workers, NEW)
    images = workers_first(TARGET, workers=workers, ingest=workload(OLD), output=workload(OLD))
    assert images.of(Component.INGEST) == OLD
    assert images.of(Component.OUTPUT) == OLD


def test_workers_rolled_out_release_ingest_and_output() -> None:
    images = workers_first(
        TARGET, workers=workload(NEW), ingest=workload(OLD), output=workload(OLD)
    )

    assert images == TARGET


def test_workers_scaled_to_zero_count_as_rolled_out() -> None:
    assert rolled_out_to(workload(NEW, replicas=0), NEW)


def test_a_component_already_on_the_target_is_not_held() -> None:
    images = workers_first(
        TARGET, workers=workload(OLD), ingest=workload(NEW), output=workload(OLD)
    )

    assert images.of(Component.INGEST) == NEW
    assert images.of(Component.OUTPUT) == OLD


def test_missing_ingest_is_created_with_the_target() -> None:
    images = workers_first(TARGET, workers=workload(OLD), ingest=None, output=workload(OLD))

    assert images.of(Component.INGEST) == NEW
