"""Output pods only on Fibre Channel nodes; static FC PersistentVolumes from the LUN inventory."""

from __future__ import annotations

from typing import Any

from tests.unit.test_specs_support import NAMESPACE, children, edited, example, find

from hda.api.consts import FC_NODE_LABEL, LABEL_ACCELERATOR, NFD_FC_NODE_LABEL
from hda.specs import LABEL_NAMESPACE, child_names


def output_pod(hda_file: str = "hda.yaml", edit: Any = None) -> dict[str, Any]:
    hda = example(hda_file) if edit is None else edited(example(hda_file), edit)
    pod: dict[str, Any] = find(children(hda), "StatefulSet", "-output")["spec"]["template"]["spec"]
    return pod


def persistent_volumes(hda_file: str = "hda-full.yaml") -> list[dict[str, Any]]:
    return [obj for obj in children(example(hda_file)) if obj["kind"] == "PersistentVolume"]


def required_expressions(pod: dict[str, Any]) -> list[list[dict[str, Any]]]:
    node_affinity = pod["affinity"]["nodeAffinity"]
    terms = node_affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return [term["matchExpressions"] for term in terms]


def test_output_pods_select_fc_nodes_by_default_label() -> None:
    assert output_pod()["nodeSelector"] == {FC_NODE_LABEL: "true"}


def test_output_pods_require_fc_nodes_through_node_affinity() -> None:
    assert required_expressions(output_pod()) == [
        [{"key": FC_NODE_LABEL, "operator": "In", "values": ["true"]}]
    ]


def test_output_pods_use_the_spec_node_selector() -> None:
    assert output_pod("hda-full.yaml")["nodeSelector"] == {NFD_FC_NODE_LABEL: "true"}


def test_user_affinity_keeps_the_fc_requirement_in_every_term() -> None:
    def zones(wire: dict[str, Any]) -> None:
        zone_terms = [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": [zone]}]}
            for zone in ("a", "b")
        ]
        wire["spec"]["template"] = {
            "output": {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": zone_terms
                        }
                    }
                }
            }
        }

    fc = {"key": FC_NODE_LABEL, "operator": "In", "values": ["true"]}
    for expressions in required_expressions(output_pod(edit=zones)):
        assert fc in expressions
    assert len(required_expressions(output_pod(edit=zones))) == 2


def test_user_node_selector_cannot_drop_the_fc_label() -> None:
    def override(wire: dict[str, Any]) -> None:
        wire["spec"]["template"] = {"output": {"nodeSelector": {FC_NODE_LABEL: "false", "a": "b"}}}

    assert output_pod(edit=override)["nodeSelector"] == {FC_NODE_LABEL: "true", "a": "b"}


def test_output_user_affinity_is_kept() -> None:
    pod = output_pod("hda-full.yaml")

    assert "podAntiAffinity" in pod["affinity"]


def test_output_claims_use_the_fc_storage_class_and_size() -> None:
    output = find(children(example("hda-full.yaml")), "StatefulSet", "-output")
    claim = output["spec"]["volumeClaimTemplates"][0]

    assert claim["spec"]["storageClassName"] == "hda-fibre-channel"
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    mounts = output["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/var/lib/hda/output"} in mounts


def test_output_statefulset_is_parallel_with_the_spec_retention_policy() -> None:
    output = find(children(example("hda-full.yaml")), "StatefulSet", "-output")

    assert output["spec"]["podManagementPolicy"] == "Parallel"
    assert output["spec"]["replicas"] == 2
    assert output["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }


def test_no_persistent_volumes_without_an_inventory() -> None:
    assert persistent_volumes("hda.yaml") == []


def test_one_persistent_volume_per_inventory_entry() -> None:
    names = [pv["metadata"]["name"] for pv in persistent_volumes()]

    assert names == list(child_names(example("hda-full.yaml")).fc_volumes)
    assert len(names) == 2


def test_persistent_volume_by_wwid() -> None:
    assert persistent_volumes()[0]["spec"]["fc"] == {
        "wwids": ["3600508b400105e210000900000490000"],
        "fsType": "xfs",
    }


def test_persistent_volume_by_target_wwns_and_lun() -> None:
    assert persistent_volumes()[1]["spec"]["fc"] == {
        "targetWWNs": ["500a0981891b8dc5", "500a0981991b8dc5"],
        "lun": 2,
        "fsType": "xfs",
    }


def test_persistent_volume_requires_fc_nodes() -> None:
    affinity = persistent_volumes()[0]["spec"]["nodeAffinity"]

    assert affinity == {
        "required": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": NFD_FC_NODE_LABEL, "operator": "In", "values": ["true"]}
                    ]
                }
            ]
        }
    }


def test_persistent_volume_is_limited_to_its_zoned_nodes() -> None:
    expressions = persistent_volumes()[1]["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][
        0
    ]

    assert {"key": "kubernetes.io/hostname", "operator": "In", "values": ["fc-node-1"]} in (
        expressions["matchExpressions"]
    )


def test_persistent_volume_is_retained_and_matches_the_claims() -> None:
    spec = persistent_volumes()[0]["spec"]

    assert spec["persistentVolumeReclaimPolicy"] == "Retain"
    assert spec["accessModes"] == ["ReadWriteOnce"]
    assert spec["storageClassName"] == "hda-fibre-channel"
    assert spec["capacity"] == {"storage": "100Gi"}


def test_persistent_volume_i_is_reserved_for_output_pod_i() -> None:
    hda = example("hda-full.yaml")
    claims = [pv["spec"]["claimRef"] for pv in persistent_volumes()]

    assert [(claim["namespace"], claim["name"]) for claim in claims] == [
        (NAMESPACE, child_names(hda).output_claim(0)),
        (NAMESPACE, child_names(hda).output_claim(1)),
    ]
    assert claims[0]["name"] == "data-telemetry-output-0"


def test_persistent_volumes_are_labelled_for_their_hda() -> None:
    for pv in persistent_volumes():
        assert pv["metadata"]["labels"][LABEL_ACCELERATOR] == "telemetry"
        assert pv["metadata"]["labels"][LABEL_NAMESPACE] == NAMESPACE


def test_persistent_volumes_carry_no_argocd_tracking_label() -> None:
    # PVs have no owner reference, so Argo CD's default tracking label would make them prunable.
    for pv in persistent_volumes():
        assert "app.kubernetes.io/instance" not in pv["metadata"]["labels"]
