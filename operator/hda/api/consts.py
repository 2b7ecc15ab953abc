"""Names shared by the API, the operator and the runtime: group, kinds, label and annotation keys."""

from __future__ import annotations

from typing import Final

GROUP: Final = "hda.shitops.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "HyperDriveAccelerator"
PLURAL: Final = "hyperdriveaccelerators"
SINGULAR: Final = "hyperdriveaccelerator"
SHORT_NAMES: Final = ("hda",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

FIELD_MANAGER: Final = "hda-operator"

# Labels the operator sets on every child; selectors use these, never Argo CD's tracking label.
LABEL_ACCELERATOR: Final = f"{GROUP}/accelerator"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_VERSION: Final = "app.kubernetes.io/version"

# On the operator's pods (set by the chart): lets the operator read stream lag from Valkey
# through each HDA's NetworkPolicy, whatever namespace the operator runs in.
LABEL_OPERATOR_POD: Final = f"{GROUP}/operator"

# On Valkey pods of a cluster topology: the shard (0-based) whose StatefulSet made the pod.
LABEL_SHARD: Final = f"{GROUP}/shard"

# Node labels that mark Fibre Channel attached nodes.
FC_NODE_LABEL: Final = f"{GROUP}/fibre-channel"
NFD_FC_NODE_LABEL: Final = "feature.node.kubernetes.io/pci-0c04.present"

# Where runtime pods find the rendered spec.
RUNTIME_CONFIG_PATH: Final = "/etc/hda/hda.yaml"

# --- The runtime contract: what the operator gives every runtime pod -------------------------
# Command: `hda ingest|worker|output --config /etc/hda/hda.yaml` (the ConfigMap holds the whole
# HyperDriveAccelerator manifest). Secrets and identity come from these environment variables.
# redis://<valkey client service>:6379/0; replicated topology:
# redis+sentinel://<sentinel 0>:26379,<sentinel 1>:26379,<sentinel 2>:26379/<primary name>/0;
# cluster topology: redis+cluster://<every Valkey pod>:6379/0. Sentinels ask for the same
# password as Valkey (HDA_REDIS_PASSWORD).
ENV_REDIS_URL: Final = "HDA_REDIS_URL"
ENV_REDIS_PASSWORD: Final = "HDA_REDIS_PASSWORD"  # noqa: S105 (a variable name, not a secret)
ENV_INGEST_TOKEN: Final = "HDA_INGEST_TOKEN"  # noqa: S105 (a variable name, not a secret)
ENV_POD_NAME: Final = "HDA_POD_NAME"  # consumer name of a worker or output pod
ENV_LOG_FORMAT: Final = "HDA_LOG_FORMAT"  # json (default in pods) or text
ENV_OUTPUT_DIR: Final = "HDA_OUTPUT_DIR"
# How an output pod reaches a peer: a URL with `{pod}` for the peer's pod name. The peers are
# ordinals 0..spec.output.replicas-1 of its own StatefulSet, read from the mounted spec when a
# subscriber connects (a count in the pod template would roll every output pod on a scale).
ENV_OUTPUT_PEER_URL: Final = "HDA_OUTPUT_PEER_URL"
# Or every peer explicitly, `CONSUMER=URL,...` (`hda run`, tests).
ENV_OUTPUT_PEERS: Final = "HDA_OUTPUT_PEERS"

REDIS_PORT: Final = 6379
SENTINEL_PORT: Final = 26379
CLUSTER_BUS_PORT: Final = 16379  # Valkey Cluster's node-to-node bus: REDIS_PORT + 10000
INGEST_PORT: Final = 8080  # REST + WebSocket; /healthz /readyz /metrics
OUTPUT_PORT: Final = 8081  # subscribe WebSocket; /healthz /readyz /metrics
WORKER_HEALTH_PORT: Final = 8082  # /healthz /readyz /metrics
OUTPUT_DATA_DIR: Final = "/var/lib/hda/output"
OPERATOR_HEALTH_PORT: Final = 8080  # kopf liveness endpoint /healthz
