"""Image references and the operator's default images: grammar, built-in fallbacks, the CRD."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tests.unit.test_api_crd import schema, walk

from hda import __version__
from hda.api.images import (
    BUILTIN_RUNTIME_IMAGE,
    BUILTIN_VALKEY_IMAGE,
    ENV_DEFAULT_RUNTIME_IMAGE,
    ENV_DEFAULT_VALKEY_IMAGE,
    IMAGE_REFERENCE_PATTERN,
    DefaultImages,
    image_reference_problem,
)
from hda.api.v1alpha1 import ManifestError, load_manifest
from hda.controller.cli import operator

CHART = Path(__file__).resolve().parents[2] / "charts" / "hda-operator"
DIGEST = "sha256:" + "0123456789abcdef" * 4

VALID = [
    "valkey/valkey:9.1",
    "busybox",
    "ghcr.io/shitops/hyperdrive-accelerator:0.1.0",
    "localhost:5000/hda/runtime:dev",
    "localhost/hda",
    "127.0.0.1:5000/a/b_c/d-e:1.0-rc.1",
    f"registry.example.com/hda@{DIGEST}",
    f"registry.example.com/hda:1.0@{DIGEST}",
]
INVALID = [
    "",
    "Valkey/valkey",  # upper case outside a registry host
    "valkey valkey",
    "valkey:",
    ":9.1",
    "valkey//valkey",
    "valkey@sha256:abc",  # digest too short
    "-valkey",
    "valkey:-9",
    "x" * 513,
]


@pytest.mark.parametrize("reference", VALID)
def test_valid_references_are_accepted(reference: str) -> None:
    assert image_reference_problem(reference) is None


@pytest.mark.parametrize("reference", INVALID)
def test_invalid_references_are_rejected_with_a_reason(reference: str) -> None:
    problem = image_reference_problem(reference)
    assert problem is not None
    assert problem.startswith("it ")


def test_built_in_defaults_are_the_operator_image_and_valkey_9() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())

    assert DefaultImages() == DefaultImages(BUILTIN_RUNTIME_IMAGE, BUILTIN_VALKEY_IMAGE)
    assert f"ghcr.io/shitops/hyperdrive-accelerator:{__version__}" == BUILTIN_RUNTIME_IMAGE
    assert __version__ == chart["appVersion"]
    assert BUILTIN_VALKEY_IMAGE == "valkey/valkey:9.1"


def test_default_images_reject_an_invalid_reference_naming_it() -> None:
    with pytest.raises(ValueError, match=r"default valkey image 'Valkey:9': .*lower case"):
        DefaultImages(valkey="Valkey:9")


@pytest.mark.parametrize("path", [".spec.image", ".spec.redis.image"])
def test_crd_image_fields_are_optional_pins_without_default(path: str) -> None:
    fields = dict(walk(schema()))
    field = fields[path]

    assert "default" not in field
    assert field["pattern"] == IMAGE_REFERENCE_PATTERN
    assert "Pin" in field["description"]
    parent, _, name = path.rpartition(".")
    assert name not in fields[parent].get("required", [])


def test_invalid_pinned_image_names_the_field_and_value() -> None:
    manifest = """
apiVersion: hda.shitops.dev/v1alpha1
kind: HyperDriveAccelerator
metadata: {name: x}
spec:
  streams: [{name: events}]
  redis: {image: "Valkey:9"}
"""
    with pytest.raises(ManifestError) as error:
        load_manifest(manifest)
    assert "spec.redis.image" in str(error.value)
    assert "'Valkey:9' is not an image reference" in str(error.value)


@pytest.mark.parametrize(
    ("env", "option"),
    [
        (ENV_DEFAULT_RUNTIME_IMAGE, "--default-runtime-image"),
        (ENV_DEFAULT_VALKEY_IMAGE, "--default-valkey-image"),
    ],
)
def test_operator_refuses_to_start_with_an_invalid_configured_image(env: str, option: str) -> None:
    result = CliRunner().invoke(operator, [], env={env: "not an image"})

    assert result.exit_code == 2
    assert option in result.output
    assert env in result.output
    assert "'not an image' is not an image reference" in result.output


def test_operator_refuses_an_invalid_image_flag() -> None:
    result = CliRunner().invoke(operator, ["--default-runtime-image", "x:"])

    assert result.exit_code == 2
    assert "'x:' is not an image reference" in result.output


def test_default_valkey_image_is_a_9_release_for_atomic_slot_migration() -> None:
    # CLUSTER MIGRATESLOTS (resharding a cluster topology) arrived in Valkey 9.0.
    chart_default = yaml.safe_load((CHART / "values.yaml").read_text())["defaultImages"]["valkey"]

    for image in (BUILTIN_VALKEY_IMAGE, chart_default):
        repository, _, tag = image.rpartition(":")
        assert repository == "valkey/valkey"
        assert int(tag.split(".")[0]) >= 9, image
