"""Fake nodes, kubeconfig, PKI extensions and kwok stages of the local plane (pure builders)."""

from __future__ import annotations

import base64

import pytest
import yaml

from hda.cluster import pki
from hda.cluster.kwok_stages import KWOK_STAGES_YAML
from hda.cluster.manifests import (
    FC_LABEL,
    KWOK_NODE_ANNOTATION,
    NFD_FC_LABEL,
    NodeCapacity,
    NodeSpec,
    kubeconfig_manifest,
    node_manifest,
    node_specs,
)


def test_node_specs_put_fc_nodes_first() -> None:
    assert node_specs(3, 2) == [
        NodeSpec("fc-node-0", fc=True),
        NodeSpec("fc-node-1", fc=True),
        NodeSpec("node-0", fc=False),
    ]
    assert node_specs(2, 0) == [NodeSpec("node-0", fc=False), NodeSpec("node-1", fc=False)]
    assert node_specs(1, 1) == [NodeSpec("fc-node-0", fc=True)]


def test_node_specs_refuse_more_fc_nodes_than_nodes() -> None:
    with pytest.raises(ValueError, match="cannot exceed"):
        node_specs(1, 2)
    with pytest.raises(ValueError, match="negative"):
        node_specs(-1, 0)


def test_fc_node_carries_both_fc_labels() -> None:
    labels = node_manifest(NodeSpec("fc-node-0", fc=True))["metadata"]["labels"]
    assert labels[FC_LABEL] == "true"
    assert labels[NFD_FC_LABEL] == "true"
    assert labels["kubernetes.io/hostname"] == "fc-node-0"


def test_plain_node_has_no_fc_label() -> None:
    labels = node_manifest(NodeSpec("node-0", fc=False))["metadata"]["labels"]
    assert FC_LABEL not in labels
    assert NFD_FC_LABEL not in labels


def test_node_is_kwok_managed_untainted_and_realistic() -> None:
    node = node_manifest(NodeSpec("node-0", fc=False))
    assert node["metadata"]["annotations"][KWOK_NODE_ANNOTATION] == "fake"
    assert "taints" not in node["spec"]
    assert node["status"]["capacity"] == {
        "cpu": "16",
        "memory": "64Gi",
        "pods": "110",
        "ephemeral-storage": "200Gi",
    }
    assert node["status"]["allocatable"] == node["status"]["capacity"]
    custom = node_manifest(NodeSpec("n", fc=False), NodeCapacity(cpu="4", memory="8Gi"))
    assert custom["status"]["capacity"]["cpu"] == "4"


def test_kubeconfig_embeds_credentials() -> None:
    config = kubeconfig_manifest("dev", "https://127.0.0.1:1234", b"CA", b"CERT", b"KEY")
    assert config["current-context"] == "hda-dev"
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:1234"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA"
    user = config["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(user["client-key-data"]) == b"KEY"


def test_certificate_requests() -> None:
    by_file = {request.cert_file: request for request in pki.certificate_requests()}
    admin = by_file["admin.crt"]
    assert admin.subject == "/O=system:masters/CN=kubernetes-admin"
    assert admin.client
    assert not admin.server
    apiserver = by_file["apiserver.crt"]
    assert "127.0.0.1" in apiserver.ip_addresses
    assert "kubernetes.default.svc" in apiserver.dns_names
    assert apiserver.server


def test_extension_config() -> None:
    by_file = {request.cert_file: request for request in pki.certificate_requests()}
    server = pki.extension_config(by_file["apiserver.crt"])
    assert "extendedKeyUsage = serverAuth\n" in server
    assert "IP:127.0.0.1" in server
    assert "DNS:kubernetes.default.svc.cluster.local" in server
    client = pki.extension_config(by_file["admin.crt"])
    assert "extendedKeyUsage = clientAuth\n" in client
    assert "subjectAltName" not in client
    with pytest.raises(ValueError, match="server or client"):
        pki.extension_config(pki.CertRequest("x.crt", "x.key", "x"))


def test_kwok_stages_cover_nodes_and_pods() -> None:
    stages = list(yaml.safe_load_all(KWOK_STAGES_YAML))
    assert all(stage["kind"] == "Stage" for stage in stages)
    kinds = {stage["metadata"]["name"]: stage["spec"]["resourceRef"]["kind"] for stage in stages}
    assert kinds == {
        "node-initialize": "Node",
        "node-heartbeat-with-lease": "Node",
        "pod-ready": "Pod",
        "pod-complete": "Pod",
        "pod-delete": "Pod",
    }
