"""ConfigMaps: valkey.conf for the buffer, and the HDA manifest every runtime pod reads."""

from __future__ import annotations

from typing import Any, Final

import yaml

from hda.api.consts import API_VERSION, KIND, REDIS_PORT
from hda.api.v1alpha1 import HyperDriveAccelerator

from .hashing import config_hash
from .images import Images
from .labels import Component, object_metadata
from .names import child_names
from .pods import memory_limit_bytes, resources

VALKEY_CONF_KEY: Final = "valkey.conf"
RUNTIME_CONFIG_KEY: Final = "hda.yaml"
VALKEY_DATA_DIR: Final = "/data"
# The shell wrapper writes `requirepass` here (a memory-backed emptyDir), so the password is
# neither in the ConfigMap nor in any process's argv.
VALKEY_AUTH_DIR: Final = "/run/valkey"
VALKEY_AUTH_CONF: Final = f"{VALKEY_AUTH_DIR}/auth.conf"
# Valkey's memory ceiling as a share of the container limit: headroom for the AOF rewrite fork
# and client buffers, so writes get OOM errors (ingest pushes back) before the kernel kills it.
VALKEY_MAXMEMORY_SHARE: Final = 0.75


def valkey_conf(hda: HyperDriveAccelerator) -> str:
    """valkey.conf: AOF on, RDB off, never evict stream entries."""
    lines = [
        f"port {REDIS_PORT}",
        "bind * -::*",
        "protected-mode yes",
        f"dir {VALKEY_DATA_DIR}",
        "appendonly yes",
        f"appendfsync {hda.spec.redis.persistence.append_fsync}",
        'save ""',
        "maxmemory-policy noeviction",
    ]
    memory_limit = memory_limit_bytes(resources(hda, Component.VALKEY))
    if memory_limit is not None:
        lines.append(f"maxmemory {int(memory_limit * VALKEY_MAXMEMORY_SHARE)}")
    lines.append(f"include {VALKEY_AUTH_CONF}")
    return "\n".join(lines) + "\n"


def valkey_configmap(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(
            hda, images, child_names(hda).valkey_configmap, Component.VALKEY
        ),
        "data": {VALKEY_CONF_KEY: valkey_conf(hda)},
    }


def runtime_manifest(hda: HyperDriveAccelerator) -> dict[str, Any]:
    """The HDA as runtime pods load it: identity and spec, no status or server metadata."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": hda.name, "namespace": hda.namespace},
        "spec": hda.spec.to_wire(),
    }


def runtime_configmap(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    text = yaml.safe_dump(runtime_manifest(hda), sort_keys=True, default_flow_style=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(
            hda, images, child_names(hda).runtime_configmap, Component.RUNTIME
        ),
        "data": {RUNTIME_CONFIG_KEY: text},
    }


def _without(section: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in section.items() if key not in keys}


def runtime_config_inputs(hda: HyperDriveAccelerator, component: Component) -> dict[str, Any]:
    """The parts of the mounted manifest that `component` reads.

    The ConfigMap holds the whole spec, but hashing all of it would roll every pod on any
    change. Replica counts, autoscaling, Service exposure and resources are left out: they are
    the operator's business or already part of the pod template. Tracing counts only while
    enabled: off, the runtime ignores the section (and pods of HDAs that never trace keep
    their hash when the operator learns a new tracing field).
    """
    spec = hda.spec.to_wire()
    streams = spec["streams"]
    traced = (
        {"observability": spec["observability"]} if hda.spec.observability.tracing.enabled else {}
    )
    if component is Component.INGEST:
        ingest = _without(spec["ingest"], "replicas", "service")
        return {"streams": streams, "ingest": ingest, **traced}
    if component is Component.WORKERS:
        workers = _without(spec["workers"], "replicas", "autoscaling", "resources")
        return {"streams": streams, "workers": workers, **traced}
    if component is Component.OUTPUT:
        return {"streams": streams, "output": {"sinks": spec["output"]["sinks"]}, **traced}
    raise ValueError(f"{component} does not read the runtime manifest")


def runtime_config_hash(hda: HyperDriveAccelerator, component: Component) -> str:
    return config_hash(runtime_config_inputs(hda, component))


def valkey_config_hash(hda: HyperDriveAccelerator) -> str:
    return config_hash(valkey_conf(hda))
