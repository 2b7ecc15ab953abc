"""Manifests of the plane's storage: FC stand-in volumes and the default local class."""

from __future__ import annotations

from hda.cluster import storage


def test_fc_volume_is_a_formatted_block_device_pinned_to_its_node() -> None:
    pv = storage.local_volume(
        "fc-0",
        node="real-fc-1",
        path="/dev/loop7",
        size="1Gi",
        storage_class_name=storage.FC_STORAGE_CLASS,
        block_device=True,
    )
    assert pv["spec"]["local"] == {"path": "/dev/loop7", "fsType": "ext4"}
    assert pv["spec"]["storageClassName"] == "hda-fibre-channel"
    term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0]["values"] == ["real-fc-1"]
    assert pv["metadata"]["labels"] == {storage.PLANE_VOLUME_LABEL: "true"}


def test_directory_volume_has_no_fs_type() -> None:
    pv = storage.local_volume(
        "local-0",
        node="real-1",
        path="/var/lib/x",
        size="1Gi",
        storage_class_name=storage.LOCAL_STORAGE_CLASS,
        block_device=False,
    )
    assert pv["spec"]["local"] == {"path": "/var/lib/x"}


def test_default_class_binds_when_the_pod_is_scheduled() -> None:
    sc = storage.storage_class(storage.LOCAL_STORAGE_CLASS, default=True)
    assert sc["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert (
        storage.storage_class(storage.FC_STORAGE_CLASS, default=False)["metadata"]["annotations"]
        == {}
    )
