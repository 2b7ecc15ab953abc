"""Static Fibre Channel PersistentVolumes from the LUN inventory in spec.output.fibreChannel.

They are cluster-scoped, so they carry labels naming the HDA instead of an owner reference;
the controller releases them (finalizer) when the HDA is deleted.
"""

from __future__ import annotations

from typing import Any, Final

from hda.api.consts import LABEL_ACCELERATOR, LABEL_INSTANCE
from hda.api.v1alpha1 import FibreChannelVolume, HyperDriveAccelerator

from .images import Images
from .labels import LABEL_NAMESPACE, Component, standard_labels
from .names import child_names, label_value

HOSTNAME_LABEL: Final = "kubernetes.io/hostname"


def pv_labels(hda: HyperDriveAccelerator, images: Images) -> dict[str, str]:
    """Labels that find every PV of one HDA (name alone is not unique across namespaces).

    No `app.kubernetes.io/instance`: it is Argo CD's default tracking label, and a PV has no
    owner reference to tell Argo CD it is not an Application's own resource to prune.
    """
    labels = standard_labels(hda, images, Component.STORAGE)
    del labels[LABEL_INSTANCE]
    labels[LABEL_NAMESPACE] = hda.namespace
    return labels


def pv_selector(hda: HyperDriveAccelerator) -> dict[str, str]:
    return {LABEL_ACCELERATOR: label_value(hda.name), LABEL_NAMESPACE: hda.namespace}


def _fc_source(volume: FibreChannelVolume, fs_type: str) -> dict[str, Any]:
    # Either wwids, or targetWWNs with lun: never both (the API enforces it).
    if volume.wwids is not None:
        return {"wwids": list(volume.wwids), "fsType": fs_type}
    return {"targetWWNs": list(volume.target_wwns or []), "lun": volume.lun, "fsType": fs_type}


def _node_affinity(node_selector: dict[str, str], node_names: list[str] | None) -> dict[str, Any]:
    """One term: every FC label, and one of the zoned nodes when the LUN names them."""
    expressions: list[dict[str, Any]] = [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in sorted(node_selector.items())
    ]
    if node_names:
        expressions.append({"key": HOSTNAME_LABEL, "operator": "In", "values": list(node_names)})
    return {"required": {"nodeSelectorTerms": [{"matchExpressions": expressions}]}}


def fc_persistent_volumes(hda: HyperDriveAccelerator, images: Images) -> list[dict[str, Any]]:
    """One PV per inventory entry, pre-bound to the output claim of the same ordinal."""
    fibre_channel = hda.spec.output.fibre_channel
    names = child_names(hda)
    volumes = fibre_channel.volumes or []
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "labels": pv_labels(hda, images)},
            "spec": {
                "capacity": {"storage": fibre_channel.size},
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Filesystem",
                "storageClassName": fibre_channel.storage_class_name,
                # In-tree fc has no deleter, and the data outlives the HDA unless an admin says.
                "persistentVolumeReclaimPolicy": "Retain",
                "fc": _fc_source(volume, fibre_channel.fs_type),
                "nodeAffinity": _node_affinity(fibre_channel.node_selector, volume.node_names),
                # PV i is reserved for output pod i, so a pod finds the LUN zoned to it.
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": hda.namespace,
                    "name": names.output_claim(index),
                },
            },
        }
        for index, (pv_name, volume) in enumerate(zip(names.fc_volumes, volumes, strict=True))
    ]
