"""Generate the CustomResourceDefinition from the pydantic models.

pydantic emits JSON Schema with `$ref`s and `anyOf` for optional fields; Kubernetes wants a
structural schema. `structural()` inlines references, drops the null branches and the keys the
apiserver refuses, and keeps the Kubernetes extensions the models declare.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from hda.api import consts
from hda.api.v1alpha1.spec import HyperDriveAcceleratorSpec
from hda.api.v1alpha1.status import HyperDriveAcceleratorStatus

# JSON Schema keys that a CRD's openAPIV3Schema does not accept or that only add noise.
_DROPPED_KEYS = {"title", "$defs"}

# Rules on the whole object: they see metadata.name, which derived child names are built from.
_ROOT_RULES = [
    {
        "rule": "size(self.metadata.name) <= 40",
        "message": "metadata.name must be at most 40 characters: child object names add a suffix",
    },
]


def _resolve(schema: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(schema, list):
        return [_resolve(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = copy.deepcopy(definitions[schema["$ref"].split("/")[-1]])
        # Field-level keys (description, default, extensions) win over the referenced model's.
        overrides = {k: v for k, v in schema.items() if k != "$ref"}
        if field_rules := overrides.pop("x-kubernetes-validations", None):
            target["x-kubernetes-validations"] = (
                target.get("x-kubernetes-validations", []) + field_rules
            )
        target.update(overrides)
        return _resolve(target, definitions)
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [branch for branch in any_of if branch != {"type": "null"}]
        merged = {k: v for k, v in schema.items() if k != "anyOf"}
        if len(rest) == 1:
            inner = rest[0]
            merged = {**inner, **merged} if "$ref" not in inner else {**merged, **inner}
        else:
            merged["anyOf"] = rest
        if merged.get("default", 0) is None:
            del merged["default"]
        return _resolve(merged, definitions)
    return {key: _resolve(value, definitions) for key, value in schema.items()}


def _clean(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_clean(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas forbid properties + additionalProperties together
        if key == "default" and value is None:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020 writes the bound here; OpenAPI v3.0 wants minimum + a flag.
            cleaned[key.replace("exclusiveM", "m")] = value
            cleaned[key] = True
            continue
        if key == "properties":
            cleaned[key] = {name: _clean(sub) for name, sub in value.items()}
            continue
        cleaned[key] = _clean(value)
    if "properties" in cleaned and "type" not in cleaned:
        cleaned["type"] = "object"
    return cleaned


def structural(model: type[Any]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    result: dict[str, Any] = _clean(_resolve(raw, definitions))
    return result


def openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the whole HyperDriveAccelerator object."""
    spec = structural(HyperDriveAcceleratorSpec)
    status = structural(HyperDriveAcceleratorStatus)
    return {
        "type": "object",
        "description": "HyperDriveAccelerator turns one resource into a real-time ingest pipeline: "
        "a Valkey Streams buffer, REST/WebSocket ingest, lag-scaled workers and durable output "
        "on Fibre Channel storage.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": _ROOT_RULES,
    }


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition for HyperDriveAccelerator."""
    ready = '.status.conditions[?(@.type=="Ready")]'
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": consts.CRD_NAME,
            "labels": {
                consts.LABEL_NAME: "hyperdrive-accelerator",
                consts.LABEL_PART_OF: "hyperdrive-accelerator",
            },
        },
        "spec": {
            "group": consts.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": consts.KIND,
                "listKind": f"{consts.KIND}List",
                "plural": consts.PLURAL,
                "singular": consts.SINGULAR,
                "shortNames": list(consts.SHORT_NAMES),
                "categories": ["all", "hda"],
            },
            "versions": [
                {
                    "name": consts.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.workers.replicas",
                            "statusReplicasPath": ".status.components.workers.replicas",
                            "labelSelectorPath": ".status.components.workers.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
                        {
                            "name": "Reason",
                            "type": "string",
                            "jsonPath": f"{ready}.reason",
                            "priority": 1,
                        },
                        {
                            "name": "Workers",
                            "type": "string",
                            "jsonPath": ".status.workersReady",
                            "description": "Ready/desired worker pods",
                        },
                        {
                            "name": "Lag",
                            "type": "integer",
                            "jsonPath": ".status.totalLag",
                            "description": "Undelivered plus pending entries over all streams",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as YAML, exactly what `hda crd` prints and `crds/` holds."""
    header = "# Generated by `hda crd` from operator/hda/api/v1alpha1. Do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
