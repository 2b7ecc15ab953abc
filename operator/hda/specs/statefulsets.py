"""StatefulSets: the Valkey buffer, and output on Fibre Channel nodes."""

from __future__ import annotations

from typing import Any, Final

from hda.api.consts import (
    CLUSTER_BUS_PORT,
    ENV_OUTPUT_DIR,
    ENV_OUTPUT_PEER_URL,
    LABEL_SHARD,
    OUTPUT_DATA_DIR,
    OUTPUT_PORT,
    REDIS_PORT,
    SENTINEL_PORT,
)
from hda.api.v1alpha1 import SENTINELS, HyperDriveAccelerator, PvcRetentionPolicy

from .configmaps import (
    SENTINEL_CONF_KEY,
    VALKEY_AUTH_DIR,
    VALKEY_CONF_KEY,
    VALKEY_DATA_DIR,
    buffer_config_hash,
    runtime_config_hash,
    sentinel_config_hash,
)
from .images import Images
from .labels import Component, object_metadata, selector_labels
from .names import OUTPUT_DATA_VOLUME, VALKEY_DATA_VOLUME, child_names, valkey_shard_statefulset
from .pods import (
    RUNTIME_UID,
    VALKEY_UID,
    container_security_context,
    ingest_token_env,
    password_env,
    pod_template,
    resources,
    runtime_container,
    runtime_volumes,
    tmp_mount,
    tmp_volume,
)
from .scripts import (
    VALKEY_CLI_AUTH_ENV,
    VALKEY_CONF_DIR,
    VALKEY_PASSWORD_ENV,
    sentinel_start_script,
    valkey_start_script,
)

VALKEY_READINESS_SCRIPT: Final = f'[ "$(valkey-cli -h 127.0.0.1 -p {REDIS_PORT} ping)" = PONG ]'
# A long AOF replay answers LOADING: alive, so not restarted into another replay.
VALKEY_LIVENESS_SCRIPT: Final = f'case "$(valkey-cli -h 127.0.0.1 -p {REDIS_PORT} ping)" in PONG|*LOADING*) exit 0;; esac; exit 1'
# A replica answers MASTERDOWN while its link to the primary is down or still syncing
# (replica-serve-stale-data no): not ready, so a rollout waits for it, but alive.
REPLICA_LIVENESS_SCRIPT: Final = f'case "$(valkey-cli -h 127.0.0.1 -p {REDIS_PORT} ping)" in PONG|*LOADING*|*MASTERDOWN*) exit 0;; esac; exit 1'


def _claim_template(name: str, size: str, storage_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": spec,
    }


def _retention_policy(policy: PvcRetentionPolicy) -> dict[str, str]:
    return {"whenDeleted": policy.when_deleted, "whenScaled": policy.when_scaled}


def _valkey_container(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    ports = [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}]
    standalone = hda.spec.redis.topology == "standalone"
    liveness = VALKEY_LIVENESS_SCRIPT if standalone else REPLICA_LIVENESS_SCRIPT
    if hda.spec.redis.topology == "cluster":
        ports.append({"name": "cluster-bus", "containerPort": CLUSTER_BUS_PORT, "protocol": "TCP"})
    return {
        "name": "valkey",
        "image": images.of(Component.VALKEY),
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", valkey_start_script(hda)],
        "env": [
            password_env(hda, VALKEY_PASSWORD_ENV),
            password_env(hda, VALKEY_CLI_AUTH_ENV),
        ],
        "ports": ports,
        "resources": resources(hda, Component.VALKEY),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": VALKEY_DATA_VOLUME, "mountPath": VALKEY_DATA_DIR},
            {"name": "config", "mountPath": VALKEY_CONF_DIR, "readOnly": True},
            {"name": "auth", "mountPath": VALKEY_AUTH_DIR},
            tmp_mount(),
        ],
        "readinessProbe": {
            "exec": {"command": ["sh", "-c", VALKEY_READINESS_SCRIPT]},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "exec": {"command": ["sh", "-c", liveness]},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }


def _config_volumes(hda: HyperDriveAccelerator, key: str) -> list[dict[str, Any]]:
    """valkey.conf or sentinel.conf from the Valkey ConfigMap, the password emptyDir, /tmp."""
    return [
        {
            "name": "config",
            "configMap": {
                "name": child_names(hda).buffer_configmap,
                "items": [{"key": key, "path": key}],
            },
        },
        {"name": "auth", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        tmp_volume(),
    ]


def valkey_pod_labels(hda: HyperDriveAccelerator, shard: int | None) -> dict[str, str]:
    """Labels selecting the pods of one Valkey StatefulSet (one shard's, in a cluster)."""
    labels = selector_labels(hda, Component.VALKEY)
    if shard is not None:
        labels[LABEL_SHARD] = str(shard)
    return labels


def valkey_statefulset(
    hda: HyperDriveAccelerator, images: Images, shard: int | None = None
) -> dict[str, Any]:
    """Valkey pods with their AOF on a PVC; a valkey.conf change rolls them.

    standalone: one pod, rolled by the StatefulSet controller. replicated: the primary and its
    replicas; cluster: one StatefulSet per shard (`shard`), its primary and replicas. Those two
    roll `OnDelete`: the operator deletes replicas first and fails over before it deletes a
    primary (controller/valkey_rollout.py).
    """
    names = child_names(hda)
    redis = hda.spec.redis
    storage = redis.storage
    standalone = redis.topology == "standalone"
    name = names.valkey_statefulset if shard is None else valkey_shard_statefulset(hda, shard)
    labels = valkey_pod_labels(hda, shard)
    template = pod_template(
        hda,
        images,
        Component.VALKEY,
        containers=[_valkey_container(hda, images)],
        volumes=_config_volumes(hda, VALKEY_CONF_KEY),
        config_digest=buffer_config_hash(hda),
        uid=VALKEY_UID,
        # A primary and its replicas preferably on different nodes.
        spread_from=None if standalone else labels,
        # Time for the final AOF fsync on shutdown.
        termination_grace_seconds=60,
    )
    if shard is not None:
        template["metadata"]["labels"][LABEL_SHARD] = str(shard)
    metadata = object_metadata(hda, images, name, Component.VALKEY)
    if shard is not None:
        metadata["labels"][LABEL_SHARD] = str(shard)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata,
        "spec": {
            "replicas": 1 + redis.replica_count,
            "serviceName": names.valkey_headless_service,
            "selector": {"matchLabels": labels},
            # Replicas need not wait for pod 0: after a failover pod 0 is a replica too.
            "podManagementPolicy": "OrderedReady" if standalone else "Parallel",
            "updateStrategy": {"type": "RollingUpdate" if standalone else "OnDelete"},
            "revisionHistoryLimit": 5,
            # The spec has one claim policy; the buffer's claim follows it like output's.
            "persistentVolumeClaimRetentionPolicy": _retention_policy(storage.pvc_retention_policy),
            "template": template,
            "volumeClaimTemplates": [
                _claim_template(VALKEY_DATA_VOLUME, storage.size, storage.storage_class_name)
            ],
        },
    }


def valkey_statefulsets(hda: HyperDriveAccelerator, images: Images) -> list[dict[str, Any]]:
    """Every Valkey StatefulSet: one, or one per shard of a cluster topology."""
    if hda.spec.redis.topology != "cluster":
        return [valkey_statefulset(hda, images)]
    return [valkey_statefulset(hda, images, shard) for shard in range(hda.spec.redis.shard_count)]


# Sentinels hold a few kilobytes of state and answer a handful of commands a second.
SENTINEL_RESOURCES: Final = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "500m", "memory": "128Mi"},
}
SENTINEL_READINESS_SCRIPT: Final = (
    f'[ "$(valkey-cli -h 127.0.0.1 -p {SENTINEL_PORT} ping)" = PONG ]'
)


def sentinel_statefulset(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    """The 3 Valkey Sentinels of a replicated topology: the Valkey image with `--sentinel`.

    A StatefulSet for stable DNS names (runtime pods and Valkey pods list every sentinel); no
    volume: a restarted sentinel asks the others for the primary and relearns the rest.
    """
    names = child_names(hda)
    probe = {"exec": {"command": ["sh", "-c", SENTINEL_READINESS_SCRIPT]}, "timeoutSeconds": 3}
    container = {
        "name": "sentinel",
        "image": images.of(Component.SENTINEL),
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", sentinel_start_script(hda)],
        "env": [
            password_env(hda, VALKEY_PASSWORD_ENV),
            password_env(hda, VALKEY_CLI_AUTH_ENV),
        ],
        "ports": [{"name": "sentinel", "containerPort": SENTINEL_PORT, "protocol": "TCP"}],
        "resources": SENTINEL_RESOURCES,
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": VALKEY_CONF_DIR, "readOnly": True},
            {"name": "auth", "mountPath": VALKEY_AUTH_DIR},
            tmp_mount(),
        ],
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {
            **probe,
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
    }
    labels = selector_labels(hda, Component.SENTINEL)
    template = pod_template(
        hda,
        images,
        Component.SENTINEL,
        containers=[container],
        volumes=_config_volumes(hda, SENTINEL_CONF_KEY),
        config_digest=sentinel_config_hash(hda),
        uid=VALKEY_UID,
        spread_from=labels,
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": object_metadata(hda, images, names.sentinel_statefulset, Component.SENTINEL),
        "spec": {
            "replicas": SENTINELS,
            "serviceName": names.sentinel_headless_service,
            "selector": {"matchLabels": labels},
            "podManagementPolicy": "Parallel",
            # One sentinel at a time: the other two keep the quorum of 2.
            "updateStrategy": {"type": "RollingUpdate"},
            "revisionHistoryLimit": 5,
            "template": template,
        },
    }


def output_peer_url(hda: HyperDriveAccelerator) -> str:
    """How an output pod reaches a peer (`{pod}`: its name) by its stable DNS name: the
    subscribe gateway merges ordinals 0..spec.output.replicas-1 (read from the mounted spec, so
    no replica count is in the pod template)."""
    names = child_names(hda)
    return f"http://{{pod}}.{names.output_headless_service}.{hda.namespace}.svc:{OUTPUT_PORT}"


def output_statefulset(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    """Output pods, only on Fibre Channel nodes, each on its own FC-backed claim."""
    names = child_names(hda)
    fibre_channel = hda.spec.output.fibre_channel
    container = runtime_container(
        hda,
        images,
        Component.OUTPUT,
        command="output",
        port_name="http",
        port=OUTPUT_PORT,
        extra_env=[
            {"name": ENV_OUTPUT_DIR, "value": OUTPUT_DATA_DIR},
            {"name": ENV_OUTPUT_PEER_URL, "value": output_peer_url(hda)},
            *ingest_token_env(hda),
        ],
        extra_mounts=[{"name": OUTPUT_DATA_VOLUME, "mountPath": OUTPUT_DATA_DIR}],
    )
    template = pod_template(
        hda,
        images,
        Component.OUTPUT,
        containers=[container],
        volumes=runtime_volumes(hda),
        config_digest=runtime_config_hash(hda, Component.OUTPUT),
        uid=RUNTIME_UID,
        required_node_labels=fibre_channel.node_selector,
        # Time to fsync and ack the batch in flight.
        termination_grace_seconds=60,
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": object_metadata(hda, images, names.output_statefulset, Component.OUTPUT),
        "spec": {
            "replicas": hda.spec.output.replicas,
            "serviceName": names.output_headless_service,
            "selector": {"matchLabels": selector_labels(hda, Component.OUTPUT)},
            # Pods share nothing but the consumer group: start and stop them all at once.
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "revisionHistoryLimit": 5,
            "persistentVolumeClaimRetentionPolicy": _retention_policy(
                hda.spec.output.pvc_retention_policy
            ),
            "template": template,
            "volumeClaimTemplates": [
                _claim_template(
                    OUTPUT_DATA_VOLUME, fibre_channel.size, fibre_channel.storage_class_name
                )
            ],
        },
    }
