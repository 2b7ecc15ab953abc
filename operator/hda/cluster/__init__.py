"""A local Kubernetes control plane built from the upstream binaries, for development and tests.

`hda cluster up|down|env` drives it from the shell; `LocalCluster` from Python.
"""

from __future__ import annotations

from hda.cluster.errors import BinariesNotFoundError, ClusterError, ComponentFailedError
from hda.cluster.layout import COMPONENTS, DEFAULT_NAME, ClusterLayout, Ports
from hda.cluster.manifests import FC_LABEL, FC_LABELS, NFD_FC_LABEL, NodeSpec
from hda.cluster.plane import LocalCluster

__all__ = [
    "COMPONENTS",
    "DEFAULT_NAME",
    "FC_LABEL",
    "FC_LABELS",
    "NFD_FC_LABEL",
    "BinariesNotFoundError",
    "ClusterError",
    "ClusterLayout",
    "ComponentFailedError",
    "LocalCluster",
    "NodeSpec",
    "Ports",
]
