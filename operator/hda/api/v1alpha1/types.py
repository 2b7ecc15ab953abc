"""Shared field types of the v1alpha1 API: base model, quantities, durations, names.

Each type carries both its pydantic validation and the OpenAPI schema the CRD publishes, so the
model and the CRD cannot drift apart.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from hda.api.images import (
    IMAGE_REFERENCE_MAX_LENGTH,
    IMAGE_REFERENCE_PATTERN,
    image_reference_problem,
)

CEL_KEY = "x-kubernetes-validations"


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON form Kubernetes stores: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(
    rule: str, message: str, *, field_path: str | None = None, reason: str | None = None
) -> dict[str, str]:
    """One `x-kubernetes-validations` entry."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def cel_rules(*rules: dict[str, str]) -> ConfigDict:
    """Model config that publishes CEL rules on the model's schema."""
    published: list[JsonValue] = [dict(rule) for rule in rules]
    return ConfigDict(json_schema_extra={CEL_KEY: published})


# --- Quantities -------------------------------------------------------------------------------

# Kubernetes resource.Quantity, in the serialized forms users write (e.g. 10Gi, 500m, 1.5, 2e3).
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def _quantity_to_str(value: object) -> object:
    if isinstance(value, bool):
        return value  # let pydantic reject it with its own message
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and not _QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (examples: 10Gi, 500m, 2)")
    return value


def parse_quantity(value: str) -> Decimal:
    """The numeric value of a quantity string, e.g. `10Gi` -> 10737418240."""
    match = re.match(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9.]+)?)([KMGTPE]i|[numkMGTPE])?$", value)
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = match.group(1), match.group(2) or ""
    if suffix in _BINARY_SUFFIXES:
        return Decimal(number) * _BINARY_SUFFIXES[suffix]
    return Decimal(number) * _DECIMAL_SUFFIXES[suffix]


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]

# --- Durations --------------------------------------------------------------------------------

DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float:
    """Seconds in a Go-style duration such as `1h30m`, `45s` or `250ms`."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"{value!r} is not a duration (examples: 250ms, 30s, 5m, 1h30m)")
    return sum(int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(value))


def _check_duration(value: object) -> object:
    if isinstance(value, str):
        parse_duration(value)
    return value


Duration = Annotated[
    str,
    BeforeValidator(_check_duration),
    Field(max_length=32),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 32}),
]

# --- Names ------------------------------------------------------------------------------------

# Stream names end up in Valkey keys and URL paths: keep them to a DNS-label-like alphabet.
STREAM_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
StreamName = Annotated[str, Field(pattern=STREAM_NAME_PATTERN, min_length=1, max_length=63)]

# A field path inside an event, dotted: `resource.host.name`.
FIELD_PATH_PATTERN = r"^[A-Za-z0-9_@$-]+(\.[A-Za-z0-9_@$-]+)*$"
FieldPath = Annotated[str, Field(pattern=FIELD_PATH_PATTERN, min_length=1, max_length=253)]

# A Kubernetes object name (DNS subdomain).
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ObjectName = Annotated[str, Field(pattern=OBJECT_NAME_PATTERN, min_length=1, max_length=253)]

StringMap = Annotated[dict[str, str], Field(max_length=64)]


# --- Images -----------------------------------------------------------------------------------


def _check_image_reference(value: str) -> str:
    problem = image_reference_problem(value)
    if problem is not None:
        raise ValueError(f"{value!r} is not an image reference: {problem}")
    return value


ImageReference = Annotated[
    str,
    AfterValidator(_check_image_reference),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": IMAGE_REFERENCE_MAX_LENGTH,
            "pattern": IMAGE_REFERENCE_PATTERN,
        }
    ),
]
