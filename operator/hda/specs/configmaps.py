"""ConfigMaps: valkey.conf for the buffer, and the HDA manifest every runtime pod reads."""

from __future__ import annotations

from typing import Any, Final

import yaml

from hda.api.consts import API_VERSION, KIND, REDIS_PORT, SENTINEL_PORT
from hda.api.v1alpha1 import HyperDriveAccelerator

from .hashing import config_hash
from .images import Images
from .labels import Component, object_metadata
from .names import child_names
from .pods import memory_limit_bytes, resources

VALKEY_CONF_KEY: Final = "valkey.conf"
SENTINEL_CONF_KEY: Final = "sentinel.conf"
RUNTIME_CONFIG_KEY: Final = "hda.yaml"
VALKEY_DATA_DIR: Final = "/data"
# The shell wrapper writes `requirepass` here (a memory-backed emptyDir), so the password is
# neither in the ConfigMap nor in any process's argv.
VALKEY_AUTH_DIR: Final = "/run/valkey"
VALKEY_AUTH_CONF: Final = f"{VALKEY_AUTH_DIR}/auth.conf"
# Written by the start script of a replicated or cluster pod: what only the pod knows (its own
# DNS name, and whom it replicates).
VALKEY_TOPOLOGY_CONF: Final = f"{VALKEY_AUTH_DIR}/topology.conf"
VALKEY_CLUSTER_CONFIG_FILE: Final = f"{VALKEY_DATA_DIR}/nodes.conf"
# How long an unreachable primary waits before sentinels or its cluster peers fail it over:
# long enough for a busy AOF fsync or a short network blip, short enough for ingest's retries.
FAILOVER_AFTER_MILLISECONDS: Final = 5000
# Sentinel's failover-timeout. A failover that found no replica fit to promote (one seen late
# after a TILT) is tried again after twice this: 40 s, not Sentinel's default 6 minutes.
SENTINEL_FAILOVER_TIMEOUT_MILLISECONDS: Final = 20000
# Sentinels that must agree a primary is down before one of them fails it over (of 3).
SENTINEL_QUORUM: Final = 2
# Valkey's memory ceiling as a share of the container limit: headroom for the AOF rewrite fork
# and client buffers, so writes get OOM errors (ingest pushes back) before the kernel kills it.
VALKEY_MAXMEMORY_SHARE: Final = 0.75
# Valkey's default: replicas ping every second, so 10 s is well past a healthy one's lag.
MIN_REPLICAS_MAX_LAG_SECONDS: Final = 10


def valkey_conf(hda: HyperDriveAccelerator) -> str:
    """valkey.conf: AOF on, RDB off, never evict stream entries; plus the topology's lines."""
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
    lines.extend(_topology_lines(hda))
    lines.append(f"include {VALKEY_AUTH_CONF}")
    return "\n".join(lines) + "\n"


def _topology_lines(hda: HyperDriveAccelerator) -> list[str]:
    topology = hda.spec.redis.topology
    if topology == "standalone":
        return []
    # Replicas and cluster peers are found by DNS name: a pod's IP changes when it restarts.
    lines = ["replica-serve-stale-data no", "replica-read-only yes"]
    if hda.spec.redis.min_replicas_to_write:
        lines += [
            f"min-replicas-to-write {hda.spec.redis.min_replicas_to_write}",
            # A replica that has not acknowledged the stream for this long no longer counts.
            f"min-replicas-max-lag {MIN_REPLICAS_MAX_LAG_SECONDS}",
        ]
    if topology == "cluster":
        lines += [
            "cluster-enabled yes",
            f"cluster-config-file {VALKEY_CLUSTER_CONFIG_FILE}",
            f"cluster-node-timeout {FAILOVER_AFTER_MILLISECONDS}",
            # MOVED and ASK name the pod's DNS name, which survives a restart.
            "cluster-preferred-endpoint-type hostname",
            # A shard that lost its primary does not stop the others.
            "cluster-require-full-coverage no",
            # Each replica stays in its shard's StatefulSet: the operator's rollout relies on it.
            "cluster-allow-replica-migration no",
        ]
    lines.append(f"include {VALKEY_TOPOLOGY_CONF}")
    return lines


def sentinel_conf(hda: HyperDriveAccelerator) -> str:
    """The static part of sentinel.conf; the start script appends the monitored primary (asked
    of the other sentinels first) and the password, then Sentinel rewrites its copy as it
    learns."""
    del hda  # one layout for every HDA today; the signature matches the other builders
    return (
        "\n".join(
            [
                f"port {SENTINEL_PORT}",
                "bind * -::*",
                f"dir {VALKEY_AUTH_DIR}",
                # Valkey pods are known by DNS name (replica-announce-ip), not by pod IP.
                "sentinel resolve-hostnames yes",
                "sentinel announce-hostnames yes",
            ]
        )
        + "\n"
    )


def buffer_configmap(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(
            hda, images, child_names(hda).buffer_configmap, Component.VALKEY
        ),
        "data": _valkey_config_data(hda),
    }


def _valkey_config_data(hda: HyperDriveAccelerator) -> dict[str, str]:
    data = {VALKEY_CONF_KEY: valkey_conf(hda)}
    if hda.spec.redis.topology == "replicated":
        data[SENTINEL_CONF_KEY] = sentinel_conf(hda)
    return data


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


def buffer_config_hash(hda: HyperDriveAccelerator) -> str:
    return config_hash(valkey_conf(hda))


def sentinel_config_hash(hda: HyperDriveAccelerator) -> str:
    return config_hash(sentinel_conf(hda))
