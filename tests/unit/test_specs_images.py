"""Images in the built children: the spec's pins, else the operator's defaults; held components."""

from __future__ import annotations

from typing import Any

from tests.unit.test_specs_support import DEFAULTS, children, edited, example, find, pod_templates

from hda.api.images import DefaultImages
from hda.specs import Component, Images, resolve_images

PINNED_RUNTIME = "registry.example.com/hda/runtime:0.9.0"
PINNED_VALKEY = "registry.example.com/valkey/valkey:9.0"


def pinned(wire: dict[str, Any]) -> None:
    wire["spec"]["image"] = PINNED_RUNTIME
    wire["spec"]["redis"]["image"] = PINNED_VALKEY


def images_by_workload(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {
        name.split("/")[0] + "/" + name.rsplit("-", 1)[-1]: template["spec"]["containers"][0][
            "image"
        ]
        for name, template in pod_templates(objects)
    }


def test_unpinned_hda_gets_the_operator_defaults() -> None:
    assert resolve_images(example().spec, DEFAULTS) == Images(DEFAULTS.runtime, DEFAULTS.valkey)
    assert images_by_workload(children(example())) == {
        "StatefulSet/valkey": DEFAULTS.valkey,
        "Deployment/ingest": DEFAULTS.runtime,
        "Deployment/workers": DEFAULTS.runtime,
        "StatefulSet/output": DEFAULTS.runtime,
    }


def test_pins_win_over_any_default() -> None:
    hda = edited(example(), pinned)
    other = DefaultImages(runtime="elsewhere.test/hda:9.9.9", valkey="elsewhere.test/valkey:10")

    assert resolve_images(hda.spec, other) == Images(PINNED_RUNTIME, PINNED_VALKEY)
    assert set(images_by_workload(children(hda)).values()) == {PINNED_RUNTIME, PINNED_VALKEY}


def test_each_image_is_pinned_on_its_own() -> None:
    def runtime_only(wire: dict[str, Any]) -> None:
        wire["spec"]["image"] = PINNED_RUNTIME

    resolved = resolve_images(edited(example(), runtime_only).spec, DEFAULTS)

    assert resolved == Images(PINNED_RUNTIME, DEFAULTS.valkey)


def test_a_new_default_changes_only_unpinned_children() -> None:
    newer = DefaultImages(runtime="registry.test/hda/runtime:3.0.0", valkey=DEFAULTS.valkey)
    hda = edited(example(), pinned)

    unpinned_before = children(example())
    unpinned_after = children(example(), with_images=resolve_images(example().spec, newer))
    pinned_before = children(hda)
    pinned_after = children(hda, with_images=resolve_images(hda.spec, newer))

    assert pinned_before == pinned_after
    assert images_by_workload(unpinned_after)["Deployment/workers"] == newer.runtime
    assert unpinned_before != unpinned_after


def test_version_label_is_the_tag_of_the_components_image() -> None:
    objects = children(example())
    valkey = find(objects, "StatefulSet", "-valkey")
    workers = find(objects, "Deployment", "-workers")

    assert valkey["metadata"]["labels"]["app.kubernetes.io/version"] == "9.1"
    assert workers["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "2.0.0"


def test_held_components_keep_their_image_while_the_workers_move() -> None:
    old = "registry.test/hda/runtime:1.0.0"
    held = (
        resolve_images(example().spec, DEFAULTS)
        .hold(Component.INGEST, old)
        .hold(Component.OUTPUT, old)
    )
    objects = children(example(), with_images=held)

    assert images_by_workload(objects) == {
        "StatefulSet/valkey": DEFAULTS.valkey,
        "Deployment/ingest": old,
        "Deployment/workers": DEFAULTS.runtime,
        "StatefulSet/output": old,
    }
    ingest = find(objects, "Deployment", "-ingest")
    assert ingest["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "1.0.0"


def test_holding_the_runtime_image_itself_holds_nothing() -> None:
    images = Images("r:1", "v:1")

    assert images.hold(Component.INGEST, "r:1") is images
    assert images.of(Component.INGEST) == "r:1"
