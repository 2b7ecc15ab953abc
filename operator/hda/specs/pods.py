"""Pieces every pod template shares: restricted security, resources, probes, user overrides."""

from __future__ import annotations

import copy
import posixpath
from typing import Any, Final

from hda.api.consts import (
    ENV_INGEST_TOKEN,
    ENV_LOG_FORMAT,
    ENV_POD_NAME,
    ENV_REDIS_PASSWORD,
    ENV_REDIS_URL,
    REDIS_PORT,
    RUNTIME_CONFIG_PATH,
    SENTINEL_PORT,
)
from hda.api.v1alpha1 import (
    SENTINELS,
    HyperDriveAccelerator,
    PodTemplate,
    ResourceRequirements,
    parse_quantity,
)

from .hashing import CONFIG_HASH_ANNOTATION
from .images import Images
from .labels import Component, standard_labels
from .names import VALKEY_MASTER_NAME, child_names

RUNTIME_UID: Final = 10001
VALKEY_UID: Final = 999  # the `valkey` user of the official image

TMP_VOLUME: Final = "tmp"

# Requests follow the API's documented defaults; limits keep a runaway pod from starving a node.
DEFAULT_RUNTIME_RESOURCES: Final[dict[str, dict[str, str]]] = {
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"cpu": "2", "memory": "1Gi"},
}
DEFAULT_VALKEY_RESOURCES: Final[dict[str, dict[str, str]]] = {
    "requests": {"cpu": "250m", "memory": "512Mi"},
    "limits": {"cpu": "2", "memory": "1Gi"},
}


def pod_override(hda: HyperDriveAccelerator, component: Component) -> PodTemplate | None:
    """`spec.template.<component>`: the user's per-component pod overrides."""
    templates = hda.spec.template
    return {
        Component.VALKEY: templates.redis,
        # Sentinels go where Valkey may go (tolerations, node selectors), with their own sizes.
        Component.SENTINEL: templates.redis,
        Component.INGEST: templates.ingest,
        Component.WORKERS: templates.workers,
        Component.OUTPUT: templates.output,
    }.get(component)


def component_resources(
    hda: HyperDriveAccelerator, component: Component
) -> ResourceRequirements | None:
    """`spec.<component>.resources`."""
    spec = hda.spec
    return {
        Component.VALKEY: spec.redis.resources,
        Component.INGEST: None,  # IngestSpec has no resources; spec.template.ingest does
        Component.WORKERS: spec.workers.resources,
        Component.OUTPUT: spec.output.resources,
    }.get(component)


def resources(hda: HyperDriveAccelerator, component: Component) -> dict[str, dict[str, str]]:
    """Requests and limits: defaults, then spec.<component>.resources, then the template's.

    Keys merge one by one. A limit the user did not set is raised to the request when the
    default would be lower, so a larger request never yields an invalid pod.
    """
    defaults = (
        DEFAULT_VALKEY_RESOURCES if component is Component.VALKEY else DEFAULT_RUNTIME_RESOURCES
    )
    requests = dict(defaults["requests"])
    limits = dict(defaults["limits"])
    user_limits: set[str] = set()
    override = pod_override(hda, component)
    for source in (component_resources(hda, component), override.resources if override else None):
        if source is None:
            continue
        requests.update(source.requests or {})
        limits.update(source.limits or {})
        user_limits.update(source.limits or {})
    for key, request in requests.items():
        limit = limits.get(key)
        if key not in user_limits and (
            limit is None or parse_quantity(limit) < parse_quantity(request)
        ):
            limits[key] = request
    return {"requests": dict(sorted(requests.items())), "limits": dict(sorted(limits.items()))}


def memory_limit_bytes(resource_spec: dict[str, dict[str, str]]) -> int | None:
    limit = resource_spec["limits"].get("memory")
    return None if limit is None else int(parse_quantity(limit).to_integral_value())


def pod_security_context(uid: int) -> dict[str, Any]:
    """Restricted Pod Security Standard at pod level; fsGroup makes PVCs writable."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Restricted Pod Security Standard at container level, plus a read-only root."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tmp_volume() -> dict[str, Any]:
    """Writable /tmp for a read-only root filesystem."""
    return {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}}


def tmp_mount() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}  # noqa: S108 - an emptyDir, not shared /tmp


def http_probes(port_name: str) -> dict[str, Any]:
    """Liveness on /healthz, readiness on /readyz: what every runtime component serves."""
    return {
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": port_name},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        # /readyz already waits out blips (a Valkey command gets 5 s before it counts as a
        # stall), so one failure is enough: the pod leaves its Service within 10 s of a stall.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": port_name},
            "periodSeconds": 2,
            "timeoutSeconds": 1,
            "failureThreshold": 1,
        },
    }


# The shards every cluster has (spec.redis.shards >= 3): their first pods seed the runtime's
# cluster client.
SEED_SHARDS = 3


def redis_url(hda: HyperDriveAccelerator) -> str:
    """Where runtime pods find Valkey (the form `hda.runtime.resp.RedisAddress.from_url` reads),
    namespace-qualified and cluster-domain free: standalone, the client Service; replicated,
    the sentinels and the name of the primary they monitor
    (`redis+sentinel://s0:26379,s1:26379,s2:26379/buffer/0`); cluster, pod 0 of the first
    three shards as seeds (`redis+cluster://s0-0:6379,s1-0:6379,s2-0:6379/0`): every cluster has
    them (shards >= 3), and the slot map names the rest, so changing `shards` or `replicas`
    does not change the runtime pods' template, and does not restart them."""
    topology = hda.spec.redis.topology
    if topology == "replicated":
        sentinels = ",".join(f"{host}:{SENTINEL_PORT}" for host in sentinel_hosts(hda))
        return f"redis+sentinel://{sentinels}/{VALKEY_MASTER_NAME}/0"
    if topology == "cluster":
        seeds = [shard[0][1] for shard in valkey_pods(hda)[:SEED_SHARDS]]
        return "redis+cluster://" + ",".join(f"{host}:{REDIS_PORT}" for host in seeds) + "/0"
    service = child_names(hda).buffer_service
    return f"redis://{service}.{hda.namespace}.svc:{REDIS_PORT}/0"


def pod_address(hda: HyperDriveAccelerator, pod: str, headless_service: str) -> str:
    """Stable DNS name of a StatefulSet pod, namespace-qualified and cluster-domain free."""
    return f"{pod}.{headless_service}.{hda.namespace}.svc"


def sentinel_hosts(hda: HyperDriveAccelerator) -> list[str]:
    """DNS names of every sentinel pod of a replicated topology."""
    names = child_names(hda)
    return [
        pod_address(hda, f"{names.sentinel_statefulset}-{ordinal}", names.sentinel_headless_service)
        for ordinal in range(SENTINELS)
    ]


def valkey_pods(hda: HyperDriveAccelerator) -> list[list[tuple[str, str]]]:
    """(pod name, DNS name) of every Valkey pod the spec asks for, one list per StatefulSet (per
    shard of a cluster), pod 0 (where the primary starts) first."""
    names = child_names(hda)
    pods = 1 + hda.spec.redis.replica_count
    return [
        [
            (pod, pod_address(hda, pod, names.valkey_headless_service))
            for pod in (f"{statefulset}-{ordinal}" for ordinal in range(pods))
        ]
        for statefulset in names.valkey_statefulsets
    ]


def password_env(hda: HyperDriveAccelerator, env_name: str) -> dict[str, Any]:
    """An env var read from the Valkey password Secret (key `password`)."""
    secret = child_names(hda).buffer_password_secret
    return {
        "name": env_name,
        "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}},
    }


def ingest_token_env(hda: HyperDriveAccelerator) -> list[dict[str, Any]]:
    """The bearer token (spec.ingest.tokenSecret) for the pods that check it: ingest, and
    output's subscribe; none when unset."""
    token = hda.spec.ingest.token_secret
    if token is None:
        return []
    return [
        {
            "name": ENV_INGEST_TOKEN,
            "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}},
        }
    ]


def runtime_env(hda: HyperDriveAccelerator) -> list[dict[str, Any]]:
    """Environment every runtime container gets (the runtime contract in hda.api.consts)."""
    return [
        {"name": ENV_REDIS_URL, "value": redis_url(hda)},
        password_env(hda, ENV_REDIS_PASSWORD),
        {"name": ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": ENV_LOG_FORMAT, "value": "json"},
    ]


def _node_affinity_terms_with(affinity: dict[str, Any], required: dict[str, str]) -> dict[str, Any]:
    """`affinity` whose every required node selector term also demands the `required` labels."""
    merged = copy.deepcopy(affinity)
    expressions = [
        {"key": key, "operator": "In", "values": [value]} for key, value in sorted(required.items())
    ]
    node_affinity = merged.setdefault("nodeAffinity", {})
    selector = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = selector.get("nodeSelectorTerms") or [{}]
    selector["nodeSelectorTerms"] = [
        {**term, "matchExpressions": [*term.get("matchExpressions", []), *expressions]}
        for term in terms
    ]
    return merged


HOSTNAME_TOPOLOGY_KEY: Final = "kubernetes.io/hostname"
# Heavier than a typical user preference: keeping copies of the data apart matters most.
SPREAD_WEIGHT: Final = 100


def _spread_over_nodes(affinity: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """`affinity` that also prefers no two pods matching `labels` on one node.

    Preferred, not required: with fewer nodes than pods, the pods still run (doubled up)."""
    merged = copy.deepcopy(affinity)
    anti = merged.setdefault("podAntiAffinity", {})
    anti.setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).append(
        {
            "weight": SPREAD_WEIGHT,
            "podAffinityTerm": {
                "labelSelector": {"matchLabels": dict(labels)},
                "topologyKey": HOSTNAME_TOPOLOGY_KEY,
            },
        }
    )
    return merged


# A DNS query or answer lost costs glibc's 5 s resolver timeout, spent blocked where the lookup
# is synchronous: Valkey resolves its primary's name, and a Sentinel (resolve-hostnames) that
# waits over 2 s enters TILT for 30 s and may then find no replica good enough to promote.
# One second per try, three tries, keeps every lookup's stall under Sentinel's TILT trigger.
def dns_config() -> dict[str, Any]:
    return {"options": [{"name": "timeout", "value": "1"}, {"name": "attempts", "value": "3"}]}


def pod_template(
    hda: HyperDriveAccelerator,
    images: Images,
    component: Component,
    *,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    config_digest: str,
    uid: int,
    required_node_labels: dict[str, str] | None = None,
    spread_from: dict[str, str] | None = None,
    termination_grace_seconds: int = 30,
) -> dict[str, Any]:
    """A complete pod template with labels, hash annotation, security and user overrides.

    `required_node_labels` are enforced twice, as `nodeSelector` and as required node affinity,
    so a user's own affinity cannot loosen them. Pods matching `spread_from` are preferably kept
    on other nodes (a primary apart from its replicas), next to the user's own preferences.
    """
    override = pod_override(hda, component) or PodTemplate()
    # The operator's labels and annotations win over the user's: selectors depend on them.
    labels = {**(override.labels or {}), **standard_labels(hda, images, component)}
    annotations = {**(override.annotations or {}), CONFIG_HASH_ANNOTATION: config_digest}
    node_selector = {**(override.node_selector or {}), **(required_node_labels or {})}
    affinity: dict[str, Any] = dict(override.affinity or {})
    if required_node_labels:
        affinity = _node_affinity_terms_with(affinity, required_node_labels)
    if spread_from:
        affinity = _spread_over_nodes(affinity, spread_from)

    spec: dict[str, Any] = {
        "serviceAccountName": child_names(hda).service_account,
        "automountServiceAccountToken": False,
        # Service links would inject *_PORT variables of every Service in the namespace.
        "enableServiceLinks": False,
        "securityContext": pod_security_context(uid),
        "terminationGracePeriodSeconds": termination_grace_seconds,
        "dnsConfig": dns_config(),
        "containers": containers,
        "volumes": volumes,
    }
    if node_selector:
        spec["nodeSelector"] = dict(sorted(node_selector.items()))
    if affinity:
        spec["affinity"] = affinity
    if override.tolerations:
        spec["tolerations"] = [toleration.to_wire() for toleration in override.tolerations]
    if override.priority_class_name:
        spec["priorityClassName"] = override.priority_class_name
    return {
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": spec,
    }


CONFIG_VOLUME: Final = "config"


def runtime_container(
    hda: HyperDriveAccelerator,
    images: Images,
    component: Component,
    *,
    command: str,
    port_name: str,
    port: int,
    extra_env: list[dict[str, Any]] | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The one container of an ingest, worker or output pod: `hda <command> --config ...`."""
    return {
        "name": command,
        "image": images.of(component),
        "imagePullPolicy": "IfNotPresent",
        "command": ["hda"],
        "args": [command, "--config", RUNTIME_CONFIG_PATH],
        "env": [*runtime_env(hda), *(extra_env or [])],
        "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"}],
        "resources": resources(hda, component),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {
                "name": CONFIG_VOLUME,
                "mountPath": posixpath.dirname(RUNTIME_CONFIG_PATH),
                "readOnly": True,
            },
            tmp_mount(),
            *(extra_mounts or []),
        ],
        **http_probes(port_name),
    }


def runtime_volumes(hda: HyperDriveAccelerator) -> list[dict[str, Any]]:
    """The mounted HDA manifest and /tmp."""
    return [
        {
            "name": CONFIG_VOLUME,
            "configMap": {
                "name": child_names(hda).runtime_configmap,
                "items": [
                    {
                        "key": posixpath.basename(RUNTIME_CONFIG_PATH),
                        "path": posixpath.basename(RUNTIME_CONFIG_PATH),
                    }
                ],
            },
        },
        tmp_volume(),
    ]
