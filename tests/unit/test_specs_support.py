"""Shared helpers of the builder tests (no tests here): examples, spec edits, object lookups."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hda.api.images import DefaultImages
from hda.api.v1alpha1 import HyperDriveAccelerator, load_manifest
from hda.specs import CONFIG_HASH_ANNOTATION, Images, desired_children, resolve_images

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = ("hda.yaml", "hda-full.yaml")
NAMESPACE = "pipelines"
UID = "5f0c1d9e-0000-4000-8000-000000000001"
POD_OWNERS = ("Deployment", "StatefulSet")
# The operator's configured defaults in the builder tests: not the built-in ones.
DEFAULTS = DefaultImages(
    runtime="registry.test/hda/runtime:2.0.0", valkey="registry.test/valkey:9.1"
)


def example(file_name: str = "hda.yaml") -> HyperDriveAccelerator:
    """An example manifest as the apiserver would hand it over: with namespace and uid."""
    hda = load_manifest((EXAMPLES / file_name).read_text(), source=file_name)
    hda.metadata.update(namespace=NAMESPACE, uid=UID)
    return hda


def edited(
    hda: HyperDriveAccelerator, edit: Callable[[dict[str, Any]], None]
) -> HyperDriveAccelerator:
    """A validated copy of `hda` after `edit` changed its wire form (camelCase dict)."""
    wire = {
        "apiVersion": hda.api_version,
        "kind": hda.kind,
        "metadata": copy.deepcopy(hda.metadata),
        "spec": hda.spec.to_wire(),
    }
    edit(wire)
    return HyperDriveAccelerator.model_validate(wire)


def images(hda: HyperDriveAccelerator) -> Images:
    """The images of `hda` under the test defaults."""
    return resolve_images(hda.spec, DEFAULTS)


def children(
    hda: HyperDriveAccelerator, worker_replicas: int = 2, *, with_images: Images | None = None
) -> list[dict[str, Any]]:
    return desired_children(hda, with_images or images(hda), worker_replicas=worker_replicas)


def find(objects: list[dict[str, Any]], kind: str, name_suffix: str) -> dict[str, Any]:
    """The one object of `kind` whose name ends with `name_suffix`."""
    matches = [
        obj
        for obj in objects
        if obj["kind"] == kind and obj["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(matches) == 1, f"{kind} *{name_suffix}: {len(matches)} matches"
    return matches[0]


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`Kind/name`, pod template) of every workload."""
    for obj in objects:
        if obj["kind"] in POD_OWNERS:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]


def pod_hashes(hda: HyperDriveAccelerator) -> dict[str, str]:
    """Config-hash annotation of every workload's pod template, by workload name."""
    return {
        workload: template["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
        for workload, template in pod_templates(children(hda))
    }
