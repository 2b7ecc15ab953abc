"""The generated CRD: committed copy in sync, structural, documented."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hda.api.crd import build_crd, render_crd

CRD_FILE = (
    Path(__file__).resolve().parents[2] / "crds" / "hyperdriveaccelerators.hda.shitops.dev.yaml"
)


def schema() -> dict[str, Any]:
    version: dict[str, Any] = build_crd()["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_is_what_hda_crd_prints() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "hda", "crd"], check=True, capture_output=True, text=True
    ).stdout
    assert printed == render_crd()
    assert CRD_FILE.read_text() == printed, (
        "regenerate: hda crd > crds/hyperdriveaccelerators.hda.shitops.dev.yaml"
    )


def test_schema_has_no_refs_or_nullable_unions() -> None:
    text = yaml.safe_dump(schema())
    assert "$ref" not in text
    for path, node in walk(schema()):
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path


def test_exclusive_bounds_use_the_openapi_v3_0_form() -> None:
    rate = schema()["properties"]["spec"]["properties"]["workers"]["properties"]["pipeline"]
    sample = rate["items"]["properties"]["sample"]["properties"]["rate"]
    assert sample["minimum"] == 0
    assert sample["exclusiveMinimum"] is True
    for path, node in walk(schema()):
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, True), bool), path


def test_every_field_is_typed() -> None:
    for path, node in walk(schema()):
        typed = (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        )
        assert typed, f"{path} has no type"


def test_every_spec_and_status_field_has_a_description() -> None:
    for root in ("spec", "status"):
        for path, node in walk(schema()["properties"][root], root):
            if path.endswith(("[]", "{}")):
                continue  # list items and map values are described by their parent
            assert node.get("description"), f"{path} has no description"


def test_streams_are_a_map_keyed_by_name() -> None:
    streams = schema()["properties"]["spec"]["properties"]["streams"]
    assert streams["x-kubernetes-list-type"] == "map"
    assert streams["x-kubernetes-list-map-keys"] == ["name"]
    assert streams["maxItems"] == 64


def test_partitions_transition_rule_is_published() -> None:
    stream = schema()["properties"]["spec"]["properties"]["streams"]["items"]
    rules = [rule["rule"] for rule in stream["x-kubernetes-validations"]]
    assert "self.partitions >= oldSelf.partitions" in rules


def test_nested_objects_default_to_empty_so_their_defaults_apply() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    for name in ("ingest", "workers", "output", "template"):
        assert spec[name]["default"] == {}, name


def test_redis_default_holds_what_its_cel_rules_read() -> None:
    # The apiserver evaluates the rules of spec.redis on its default without defaulting inside.
    redis = schema()["properties"]["spec"]["properties"]["redis"]

    assert redis["default"] == {"topology": "standalone", "acknowledge": "primary"}
    for field in redis["default"]:
        assert redis["properties"][field]["default"] == redis["default"][field]


def test_scale_subresource_points_at_workers() -> None:
    version = build_crd()["spec"]["versions"][0]
    scale = version["subresources"]["scale"]
    assert scale["specReplicasPath"] == ".spec.workers.replicas"
    assert scale["labelSelectorPath"] == ".status.components.workers.selector"
    assert "status" in version["subresources"]


def test_printer_columns() -> None:
    columns = [c["name"] for c in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Ready", "Reason", "Workers", "Lag", "Age"]


@pytest.mark.parametrize("path", [".spec.redis.storage.size", ".spec.output.fibreChannel.size"])
def test_sizes_are_quantities(path: str) -> None:
    node = schema()
    for part in path.strip(".").split("."):
        node = node["properties"][part]
    assert node["x-kubernetes-int-or-string"] is True
    assert "pattern" in node
