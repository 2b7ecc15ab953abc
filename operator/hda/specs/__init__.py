"""Pure builders: an HDA and its resolved images in, Kubernetes objects (plain dicts ready for
server-side apply) out.

One Kubernetes kind per module, no I/O, no kopf, no operator configuration: the images come in
as an `Images` value (`resolve_images`). The controller decides what to apply and when; these
functions only say what each child should look like.
"""

from .children import desired_children
from .configmaps import (
    buffer_configmap,
    runtime_configmap,
    runtime_manifest,
    sentinel_conf,
    valkey_conf,
)
from .deployments import ingest_deployment, workers_deployment
from .hashing import (
    CONFIG_HASH_ANNOTATION,
    SECRETS_HASH_ANNOTATION,
    config_hash,
    secret_digest,
    with_secret_digests,
)
from .images import Images, resolve_images
from .labels import (
    LABEL_NAMESPACE,
    Component,
    owner_reference,
    selector_labels,
    standard_labels,
    worker_selector,
)
from .names import ChildNames, child_names
from .networkpolicies import valkey_network_policy
from .persistentvolumes import fc_persistent_volumes, pv_selector
from .poddisruptionbudgets import pod_disruption_budget, valkey_pod_disruption_budgets
from .secrets import PASSWORD_KEY, generated_password_secret
from .serviceaccounts import runtime_service_account
from .services import (
    buffer_service,
    ingest_service,
    output_headless_service,
    output_service,
    sentinel_headless_service,
    sentinel_service,
    valkey_headless_service,
)
from .statefulsets import (
    output_peer_url,
    output_statefulset,
    sentinel_statefulset,
    valkey_statefulset,
    valkey_statefulsets,
)

__all__ = [
    "CONFIG_HASH_ANNOTATION",
    "LABEL_NAMESPACE",
    "PASSWORD_KEY",
    "SECRETS_HASH_ANNOTATION",
    "ChildNames",
    "Component",
    "Images",
    "buffer_configmap",
    "buffer_service",
    "child_names",
    "config_hash",
    "desired_children",
    "fc_persistent_volumes",
    "generated_password_secret",
    "ingest_deployment",
    "ingest_service",
    "output_headless_service",
    "output_peer_url",
    "output_service",
    "output_statefulset",
    "owner_reference",
    "pod_disruption_budget",
    "pv_selector",
    "resolve_images",
    "runtime_configmap",
    "runtime_manifest",
    "runtime_service_account",
    "secret_digest",
    "selector_labels",
    "sentinel_conf",
    "sentinel_headless_service",
    "sentinel_service",
    "sentinel_statefulset",
    "standard_labels",
    "valkey_conf",
    "valkey_headless_service",
    "valkey_network_policy",
    "valkey_pod_disruption_budgets",
    "valkey_statefulset",
    "valkey_statefulsets",
    "with_secret_digests",
    "worker_selector",
    "workers_deployment",
]
