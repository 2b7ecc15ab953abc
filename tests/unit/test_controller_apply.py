"""Which live objects are this HDA's: only those it made (owner reference, or labels for PVs)."""

from __future__ import annotations

from typing import Any

from tests.unit.test_specs_support import example

from hda.controller.apply import foreign
from hda.controller.kube import kind_of

CONFIGMAP = kind_of({"apiVersion": "v1", "kind": "ConfigMap"})
VOLUME = kind_of({"apiVersion": "v1", "kind": "PersistentVolume"})


def live(kind: str, **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x", **metadata}}


def test_namespaced_object_with_our_owner_reference_is_ours() -> None:
    hda = example().model_copy(update={"metadata": {**example().metadata, "uid": "u-1"}})
    obj = live("ConfigMap", ownerReferences=[{"uid": "u-1"}])
    assert foreign(obj, hda, CONFIGMAP) is None


def test_namespaced_object_without_our_owner_reference_is_a_conflict_by_name() -> None:
    hda = example().model_copy(update={"metadata": {**example().metadata, "uid": "u-1"}})
    obj = live("ConfigMap", ownerReferences=[{"uid": "someone-else"}])
    assert foreign(obj, hda, CONFIGMAP) == (
        "ConfigMap/x exists and is not owned by this HyperDriveAccelerator; rename or delete it"
    )


def test_volume_labelled_for_this_hda_is_ours_and_any_other_is_a_conflict() -> None:
    hda = example()
    ours = {"hda.shitops.dev/accelerator": hda.name, "hda.shitops.dev/namespace": hda.namespace}
    assert foreign(live("PersistentVolume", labels=ours), hda, VOLUME) is None
    elsewhere = {**ours, "hda.shitops.dev/namespace": "other"}
    assert foreign(live("PersistentVolume", labels=elsewhere), hda, VOLUME) is not None
    assert foreign(live("PersistentVolume"), hda, VOLUME) is not None


def test_nothing_live_is_no_conflict() -> None:
    assert foreign(None, example(), CONFIGMAP) is None
