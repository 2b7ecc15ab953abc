"""StatefulSets: the Valkey buffer, and output on Fibre Channel nodes."""

from __future__ import annotations

from typing import Any, Final

from hda.api.consts import (
    ENV_OUTPUT_DIR,
    ENV_OUTPUT_PEER_URL,
    OUTPUT_DATA_DIR,
    OUTPUT_PORT,
    REDIS_PORT,
)
from hda.api.v1alpha1 import HyperDriveAccelerator, PvcRetentionPolicy

from .configmaps import (
    VALKEY_AUTH_CONF,
    VALKEY_AUTH_DIR,
    VALKEY_CONF_KEY,
    VALKEY_DATA_DIR,
    runtime_config_hash,
    valkey_config_hash,
)
from .images import Images
from .labels import Component, object_metadata, selector_labels
from .names import OUTPUT_DATA_VOLUME, VALKEY_DATA_VOLUME, child_names
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

VALKEY_CONF_DIR: Final = "/etc/valkey"
VALKEY_PASSWORD_ENV: Final = "VALKEY_PASSWORD"  # noqa: S105 - a variable name
# valkey-cli reads its password from this variable, keeping it out of the probe's argv.
VALKEY_CLI_AUTH_ENV: Final = "REDISCLI_AUTH"

# Escapes `\` and `"` so any password survives valkey.conf's quoted-string parsing.
VALKEY_START_SCRIPT: Final = f"""set -eu
umask 077
escaped=$(printf '%s' "${VALKEY_PASSWORD_ENV}" | sed 's/[\\\\"]/\\\\&/g')
printf 'requirepass "%s"\\n' "$escaped" > {VALKEY_AUTH_CONF}
unset {VALKEY_PASSWORD_ENV}
exec valkey-server {VALKEY_CONF_DIR}/{VALKEY_CONF_KEY}
"""
VALKEY_READINESS_SCRIPT: Final = f'[ "$(valkey-cli -h 127.0.0.1 -p {REDIS_PORT} ping)" = PONG ]'
# A long AOF replay answers LOADING: alive, so not restarted into another replay.
VALKEY_LIVENESS_SCRIPT: Final = f'case "$(valkey-cli -h 127.0.0.1 -p {REDIS_PORT} ping)" in PONG|*LOADING*) exit 0;; esac; exit 1'


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
    return {
        "name": "valkey",
        "image": images.of(Component.VALKEY),
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", VALKEY_START_SCRIPT],
        "env": [
            password_env(hda, VALKEY_PASSWORD_ENV),
            password_env(hda, VALKEY_CLI_AUTH_ENV),
        ],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
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
            "exec": {"command": ["sh", "-c", VALKEY_LIVENESS_SCRIPT]},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }


def valkey_statefulset(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    """One Valkey pod with its AOF on a PVC; a valkey.conf change rolls it."""
    names = child_names(hda)
    storage = hda.spec.redis.storage
    volumes = [
        {
            "name": "config",
            "configMap": {
                "name": names.valkey_configmap,
                "items": [{"key": VALKEY_CONF_KEY, "path": VALKEY_CONF_KEY}],
            },
        },
        {"name": "auth", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        tmp_volume(),
    ]
    template = pod_template(
        hda,
        images,
        Component.VALKEY,
        containers=[_valkey_container(hda, images)],
        volumes=volumes,
        config_digest=valkey_config_hash(hda),
        uid=VALKEY_UID,
        # Time for the final AOF fsync on shutdown.
        termination_grace_seconds=60,
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": object_metadata(hda, images, names.valkey_statefulset, Component.VALKEY),
        "spec": {
            "replicas": 1,
            "serviceName": names.valkey_headless_service,
            "selector": {"matchLabels": selector_labels(hda, Component.VALKEY)},
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "revisionHistoryLimit": 5,
            # The spec has one claim policy; the buffer's claim follows it like output's.
            "persistentVolumeClaimRetentionPolicy": _retention_policy(
                hda.spec.redis.storage.pvc_retention_policy
            ),
            "template": template,
            "volumeClaimTemplates": [
                _claim_template(VALKEY_DATA_VOLUME, storage.size, storage.storage_class_name)
            ],
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
