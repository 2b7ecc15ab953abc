"""Storage for real nodes: Fibre Channel stand-ins on loop devices, and local volumes for Valkey.

There is no FC fabric here. An FC LUN is stood in for by a loop device over a sparse file,
formatted ext4, offered as a static `local` PersistentVolume of the FC StorageClass with node
affinity to the FC-labelled real node: the kubelet really mounts the block device into the output
pod, so the mount path is real; only the HBA and the fabric are simulated. Valkey's claims get a
default StorageClass with directory-backed `local` volumes on the real nodes, as kind's default
class gives any claim a node-local volume.

The manifest builders are pure; `attach_loop_device` and `detach_loop_devices` run `losetup`.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Final

from hda.cluster.errors import ClusterError

log = logging.getLogger(__name__)

FC_STORAGE_CLASS: Final = "hda-fibre-channel"
LOCAL_STORAGE_CLASS: Final = "hda-local"
_FS_TYPE: Final = "ext4"
#: Marks every PV the plane made, so `down` and tests can tell them from a user's.
PLANE_VOLUME_LABEL: Final = "hda.shitops.dev/local-plane-volume"
#: FC stand-in LUNs per FC-labelled real node: enough for the e2e tier's HDAs (a claim's volume
#: is retained after its HDA is gone, so each HDA of a run takes fresh ones): 10 in one run of
#: the whole tier (its topology tests deploy 7 HDAs, one output claim each).
FC_VOLUMES_PER_NODE: Final = 12
#: Sparse: a LUN takes the disk space its ext4 metadata and data use, not its size.
FC_VOLUME_SIZE: Final = "128Gi"
_FC_VOLUME_BYTES: Final = 128 * 1024**3
#: Directory volumes of the default class (Valkey's claims), all on one node: a standalone HDA
#: takes one, a replicated one 3, a cluster of 3 shards with 1 replica each 6 (8 while it grows
#: to 4); a claim's volume is retained after its HDA is gone. One run of the whole e2e tier
#: takes 37 (24 ran out in its seventh topology test).
LOCAL_VOLUMES: Final = 48
LOCAL_VOLUME_SIZE: Final = "64Gi"


def storage_class(name: str, *, default: bool) -> dict[str, Any]:
    """A class without provisioner: claims bind to the static volumes the plane creates."""
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "annotations": annotations},
        "provisioner": "kubernetes.io/no-provisioner",
        # Bind only once the pod is scheduled, so the claim follows the pod's node constraints.
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain",
    }


def local_volume(
    name: str,
    *,
    node: str,
    path: str,
    size: str,
    storage_class_name: str,
    block_device: bool,
) -> dict[str, Any]:
    """A static `local` PV pinned to `node`; a block device is formatted and mounted by kubelet."""
    local: dict[str, Any] = {"path": path}
    if block_device:
        local["fsType"] = _FS_TYPE
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {PLANE_VOLUME_LABEL: "true"}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class_name,
            "local": local,
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


def _run(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise ClusterError(
            f"{argv[0]} is not installed (apt-get install util-linux e2fsprogs)"
        ) from error
    if result.returncode != 0:
        raise ClusterError(
            f"{' '.join(argv)} failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout.strip()


def attach_loop_device(backing_file: Path, size_bytes: int) -> str:
    """A loop device over a sparse `backing_file`, formatted ext4 once; returns `/dev/loopN`.

    Reuses the device already attached to the same file (an `up` after a crash).
    """
    attached = _run(["losetup", "--associated", str(backing_file)]) if backing_file.exists() else ""
    if attached:
        return attached.split(":", 1)[0]
    fresh = not backing_file.exists()
    backing_file.parent.mkdir(parents=True, exist_ok=True)
    with backing_file.open("ab") as handle:
        os.ftruncate(handle.fileno(), size_bytes)
    if fresh:  # lazy init and a small journal: seconds, and megabytes of real disk
        _run(["mkfs.ext4", "-q", "-F", "-J", "size=16", "-E", "lazy_itable_init=1,lazy_journal_init=1",
              "-L", backing_file.stem[:16], str(backing_file)])  # fmt: skip
    device = _run(["losetup", "--find", "--show", str(backing_file)])
    log.info("attached %s over %s", device, backing_file)
    return device


def detach_loop_devices(directory: Path) -> list[str]:
    """Detach every loop device whose backing file lies under `directory`; the devices freed."""
    if not directory.exists():
        return []
    freed: list[str] = []
    for backing_file in sorted(directory.rglob("*.img")):
        for line in _run(["losetup", "--associated", str(backing_file)]).splitlines():
            device = line.split(":", 1)[0]
            _run(["losetup", "--detach", device])
            freed.append(device)
    if freed:
        log.info("detached %s", ", ".join(freed))
    return freed


def provision_volumes(volumes_dir: Path, nodes: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    """Make the backing devices and directories on this host; the classes and PVs to create.

    `nodes` are the real nodes as (name, fc). Each FC node gets `FC_VOLUMES_PER_NODE` LUN
    stand-ins; the default class's directory volumes live on the first FC node (else the first
    node), so Valkey and output share that node and the others stay free to drain.
    """
    if not nodes:
        return []
    fc_nodes = [name for name, fc in nodes if fc]
    local_node = fc_nodes[0] if fc_nodes else nodes[0][0]
    manifests = [
        storage_class(LOCAL_STORAGE_CLASS, default=True),
        storage_class(FC_STORAGE_CLASS, default=False),
    ]
    for index in range(LOCAL_VOLUMES):
        path = volumes_dir / local_node / f"local-{index}"
        path.mkdir(parents=True, exist_ok=True)
        manifests.append(
            local_volume(
                f"{local_node}-local-{index}",
                node=local_node,
                path=str(path),
                size=LOCAL_VOLUME_SIZE,
                storage_class_name=LOCAL_STORAGE_CLASS,
                block_device=False,
            )
        )
    for node in fc_nodes:
        for index in range(FC_VOLUMES_PER_NODE):
            device = attach_loop_device(
                volumes_dir / node / f"fc-lun-{index}.img", _FC_VOLUME_BYTES
            )
            manifests.append(
                local_volume(
                    f"{node}-fc-lun-{index}",
                    node=node,
                    path=device,
                    size=FC_VOLUME_SIZE,
                    storage_class_name=FC_STORAGE_CLASS,
                    block_device=True,
                )
            )
    return manifests
