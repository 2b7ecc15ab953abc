"""Desired-vs-live comparison: the reason a restart writes nothing and a hand edit is undone."""

from __future__ import annotations

from typing import Any

from hda.api.images import DefaultImages
from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.controller.compare import APPLIED_HASH, first_difference, with_applied_hash
from hda.specs import desired_children, resolve_images

DESIRED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "w", "labels": {"a": "b"}},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "nodeSelector": {},
                "hostNetwork": False,
                "containers": [
                    {
                        "name": "c",
                        "image": "x:1",
                        "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}},
                    }
                ],
            }
        },
    },
}


def live_of(desired: dict[str, Any]) -> dict[str, Any]:
    """What the apiserver returns: defaults added, empties dropped, quantities canonical."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "w",
            "labels": {"a": "b", "extra": "by-someone-else"},
            "resourceVersion": "7",
            "annotations": dict(desired["metadata"].get("annotations", {})),
        },
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "x:1",
                            "imagePullPolicy": "IfNotPresent",
                            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                        }
                    ],
                    "dnsPolicy": "ClusterFirst",
                }
            },
        },
        "status": {"replicas": 2},
    }


def test_live_with_defaults_matches() -> None:
    desired = with_applied_hash(DESIRED)
    assert first_difference(desired, live_of(desired)) is None


def test_hand_edited_image_is_found() -> None:
    desired = with_applied_hash(DESIRED)
    live = live_of(desired)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "x:2"
    assert first_difference(desired, live) == ".spec.template.spec.containers[0].image"


def test_removed_label_is_found() -> None:
    desired = with_applied_hash(DESIRED)
    live = live_of(desired)
    del live["metadata"]["labels"]["a"]
    assert first_difference(desired, live) == ".metadata.labels.a"


def test_changed_spec_changes_the_hash() -> None:
    old = with_applied_hash(DESIRED)
    new = with_applied_hash({**DESIRED, "spec": {**DESIRED["spec"], "replicas": 3}})
    assert (
        old["metadata"]["annotations"][APPLIED_HASH] != new["metadata"]["annotations"][APPLIED_HASH]
    )
    found = first_difference(new, live_of(old))
    assert found is not None
    assert found.startswith(".metadata.annotations")


def test_list_length_change_is_found() -> None:
    desired = with_applied_hash(DESIRED)
    live = live_of(desired)
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    assert first_difference(desired, live) is not None


def test_every_builder_output_matches_itself() -> None:
    hda = HyperDriveAccelerator.model_validate(
        {
            "metadata": {"name": "logs", "namespace": "ns", "uid": "u-1"},
            "spec": {
                "streams": [{"name": "events"}],
                "output": {"replicas": 1, "fibreChannel": {"volumes": [{"wwids": ["abc"]}]}},
            },
        }
    )
    for obj in desired_children(hda, resolve_images(hda.spec, DefaultImages()), worker_replicas=2):
        desired = with_applied_hash(obj)
        assert first_difference(desired, desired) is None
