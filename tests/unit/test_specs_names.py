"""Child names: derived from the HDA, unique, and within Kubernetes' length limits."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.test_specs_support import children, example

from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.specs import child_names
from hda.specs.labels import image_version

DNS_LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
LONG_NAME = st.from_regex(r"[a-z0-9]([-a-z0-9]{60,250}[a-z0-9])", fullmatch=True)


def named(name: str, namespace: str = "ns", file_name: str = "hda.yaml") -> HyperDriveAccelerator:
    hda = example(file_name)
    hda.metadata.update(name=name, namespace=namespace)
    return hda


def test_default_names() -> None:
    names = child_names(example())

    assert names.valkey_statefulset == "logs-valkey"
    assert names.buffer_password_secret == "logs-valkey-password"
    assert names.ingest_deployment == "logs-ingest"
    assert names.workers_deployment == "logs-workers"
    assert names.output_statefulset == "logs-output"
    assert names.runtime_configmap == "logs-config"
    assert names.fc_volumes == ()


@given(name=LONG_NAME, namespace=DNS_LABEL)
def test_long_names_stay_within_limits(name: str, namespace: str) -> None:
    names = child_names(named(name, namespace, "hda-full.yaml"))

    for field in dataclasses.fields(names):
        value = getattr(names, field.name)
        if field.name == "fc_volumes":
            assert all(len(pv) <= 253 for pv in value)
        elif isinstance(value, str) and field.name != "buffer_password_secret":
            assert len(value) <= 52, field.name


@given(name=LONG_NAME)
def test_label_values_of_long_names_stay_within_63(name: str) -> None:
    for obj in children(named(name)):
        assert all(len(value) <= 63 for value in obj["metadata"]["labels"].values())


def test_truncated_names_stay_distinct() -> None:
    base = "a" * 60
    first, second = child_names(named(base + "x")), child_names(named(base + "y"))

    assert first.ingest_deployment != second.ingest_deployment


def test_pv_names_differ_when_hyphens_make_namespace_and_name_read_alike() -> None:
    def inventory(name: str, namespace: str) -> tuple[str, ...]:
        return child_names(named(name, namespace, "hda-full.yaml")).fc_volumes

    assert set(inventory("c", "a-b")).isdisjoint(inventory("b-c", "a"))


def test_pv_name_names_namespace_hda_and_lun() -> None:
    (first, second) = child_names(named("telemetry", "obs", "hda-full.yaml")).fc_volumes

    assert first.startswith("hda-obs-telemetry-")
    assert first.endswith("-lun-0")
    assert second.endswith("-lun-1")


def test_namespaced_names_are_unique_per_kind() -> None:
    objects = children(example("hda-full.yaml"))
    keys = [(obj["kind"], obj["metadata"]["name"]) for obj in objects]

    assert len(keys) == len(set(keys))


def test_image_version_label() -> None:
    assert image_version("valkey/valkey:8.1") == "8.1"
    assert image_version("registry:5000/hda") == "latest"
    assert image_version("ghcr.io/x/hda:1.0@sha256:abc") == "1.0"
