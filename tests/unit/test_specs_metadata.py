"""Owner references, labels and the Argo CD boundary on every child."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.test_specs_support import (
    EXAMPLE_FILES,
    NAMESPACE,
    UID,
    children,
    edited,
    example,
    images,
)

from hda.api.consts import LABEL_ACCELERATOR, LABEL_INSTANCE
from hda.specs import generated_password_secret, worker_selector

STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    LABEL_ACCELERATOR,
}


def namespaced(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] != "PersistentVolume"]


def argo_tracked(wire: dict[str, Any]) -> None:
    """Metadata Argo CD puts on an HDA it manages."""
    wire["metadata"]["labels"] = {LABEL_INSTANCE: "argo-app", "team": "observability"}
    wire["metadata"]["annotations"] = {
        "argocd.argoproj.io/tracking-id": "argo-app:hda.shitops.dev/HyperDriveAccelerator:x/y",
        "argocd.argoproj.io/sync-options": "Prune=false",
    }


def all_metadata(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The object's metadata and its pod template's."""
    found = [obj["metadata"]]
    template = obj.get("spec", {}).get("template")
    if template is not None:
        found.append(template["metadata"])
    return found


@pytest.mark.parametrize("file_name", EXAMPLE_FILES)
def test_every_namespaced_child_is_controlled_by_the_hda(file_name: str) -> None:
    for obj in namespaced(children(example(file_name))):
        assert obj["metadata"]["namespace"] == NAMESPACE
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "hda.shitops.dev/v1alpha1",
                "kind": "HyperDriveAccelerator",
                "name": example(file_name).name,
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], obj["metadata"]["name"]


@pytest.mark.parametrize("file_name", EXAMPLE_FILES)
def test_every_child_carries_the_standard_labels(file_name: str) -> None:
    for obj in children(example(file_name)):
        # PVs leave out app.kubernetes.io/instance (Argo CD's tracking label; they have no owner).
        expected = (
            STANDARD_LABELS - {"app.kubernetes.io/instance"}
            if obj["kind"] == "PersistentVolume"
            else STANDARD_LABELS
        )
        for metadata in all_metadata(obj):
            assert set(metadata["labels"]) >= expected, obj["metadata"]["name"]


def test_argo_cd_tracking_metadata_is_never_copied() -> None:
    hda = edited(example("hda-full.yaml"), argo_tracked)

    for obj in children(hda):
        for metadata in all_metadata(obj):
            # Our own instance label (the HDA's name), never the value Argo CD tracked it with.
            assert metadata["labels"].get(LABEL_INSTANCE, hda.name) == hda.name
            assert not any(key.startswith("argocd.argoproj.io/") for key in metadata["labels"])
            annotations = metadata.get("annotations", {})
            assert not any(key.startswith("argocd.argoproj.io/") for key in annotations)


def test_hda_labels_are_not_copied_to_children() -> None:
    hda = edited(example(), argo_tracked)

    for obj in children(hda):
        assert "team" not in obj["metadata"]["labels"]


def test_fc_persistent_volumes_have_no_owner_reference() -> None:
    volumes = [
        obj for obj in children(example("hda-full.yaml")) if obj["kind"] == "PersistentVolume"
    ]

    assert volumes
    assert all("ownerReferences" not in pv["metadata"] for pv in volumes)
    assert all("namespace" not in pv["metadata"] for pv in volumes)


def test_generated_password_secret_is_owned_and_opaque() -> None:
    secret = generated_password_secret(example(), images(example()), "s3cret")

    assert secret["type"] == "Opaque"
    assert secret["data"] == {"password": "czNjcmV0"}
    assert secret["metadata"]["name"] == "logs-valkey-password"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == UID


def test_generated_password_secret_is_not_among_desired_children() -> None:
    assert not [obj for obj in children(example()) if obj["kind"] == "Secret"]


def test_worker_selector_selects_exactly_the_worker_pods() -> None:
    objects = children(example())
    selector = worker_selector(example())

    selected = [
        name
        for obj in objects
        if obj["kind"] in ("Deployment", "StatefulSet")
        for name in [obj["metadata"]["name"]]
        if selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert selected == ["logs-workers"]


def test_workload_selectors_match_their_own_pod_labels() -> None:
    for obj in children(example("hda-full.yaml")):
        if obj["kind"] in ("Deployment", "StatefulSet"):
            selector = obj["spec"]["selector"]["matchLabels"]
            assert selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()


def test_template_labels_cannot_override_selector_labels() -> None:
    def hijack(wire: dict[str, Any]) -> None:
        wire["spec"]["template"] = {"workers": {"labels": {"app.kubernetes.io/component": "x"}}}

    workers = next(
        obj
        for obj in children(edited(example(), hijack))
        if obj["metadata"]["name"] == "logs-workers" and obj["kind"] == "Deployment"
    )

    assert (
        workers["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        == "workers"
    )
