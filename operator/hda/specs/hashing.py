"""Config-hash annotations: a pod template changes exactly when what its pods read changes."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from hda.api.consts import GROUP

CONFIG_HASH_ANNOTATION: Final = f"{GROUP}/config-hash"


def config_hash(obj: Any) -> str:
    """A short, stable digest of any JSON-serialisable value (key order does not matter)."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


SECRETS_HASH_ANNOTATION: Final = f"{GROUP}/secrets-hash"


def secret_digest(namespace: str, name: str, data: Mapping[str, str] | None) -> str:
    """A digest of a Secret's data, salted with its name: it changes when the content does and
    never reveals a value (a template annotation is readable by anyone who can read the pods)."""
    return config_hash({"secret": f"{namespace}/{name}", "data": dict(data or {})})


def referenced_secrets(pod_spec: Mapping[str, Any]) -> list[str]:
    """Names of every Secret a pod reads: env, envFrom and volumes, sorted."""
    names: set[str] = set()
    for container in [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]:
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(str(ref["name"]))
        for source in container.get("envFrom") or []:
            if source.get("secretRef"):
                names.add(str(source["secretRef"]["name"]))
    for volume in pod_spec.get("volumes") or []:
        if volume.get("secret"):
            names.add(str(volume["secret"]["secretName"]))
    return sorted(names)


def with_secret_digests(obj: dict[str, Any], digests: Mapping[str, str]) -> dict[str, Any]:
    """`obj` with, on a workload's pod template, a digest of the Secrets its pods read (from
    `digests`: name -> `secret_digest`), so that new Secret content rolls exactly those pods."""
    template = (obj.get("spec") or {}).get("template")
    if obj.get("kind") not in {"Deployment", "StatefulSet"} or not template:
        return obj
    names = referenced_secrets(template.get("spec") or {})
    if not names:
        return obj
    result = copy.deepcopy(obj)
    annotations = result["spec"]["template"]["metadata"].setdefault("annotations", {})
    annotations[SECRETS_HASH_ANNOTATION] = config_hash({n: digests.get(n, "") for n in names})
    return result
