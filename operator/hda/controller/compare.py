"""Is a live object already what we would apply? (pure)

Server-side apply makes the operator the owner of exactly the fields it sends. So a child needs no
write when every field of the desired manifest already has the desired value in the live object:
the desired object is a *subset* of the live one. Extra live fields (defaults filled in by the
apiserver, fields owned by other managers, status) do not matter. Two details make the check
exact without false alarms:

- the apiserver drops empty values (`nodeSelector: {}`, `hostNetwork: false`), so a desired
  empty value matches a missing live one;
- quantities are canonicalised (`0.5` becomes `500m`), so resource quantities compare by value.

A field the operator stopped sending is caught by the `hda.shitops.dev/applied-hash`
annotation, which changes whenever the desired manifest changes.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from hda.api.consts import GROUP
from hda.api.v1alpha1.types import parse_quantity

APPLIED_HASH: Final = f"{GROUP}/applied-hash"

# Keys under which string values are Kubernetes quantities.
_QUANTITY_PARENTS: Final = frozenset({"requests", "limits", "capacity", "hard"})


def manifest_hash(obj: dict[str, Any]) -> str:
    """A short stable hash of a manifest (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_applied_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of `obj` whose metadata carries the hash of the rest of it."""
    digest = manifest_hash(obj)
    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_HASH: digest}
    return {**obj, "metadata": meta}


def _is_empty(value: Any) -> bool:
    return value is None or value is False or value in ({}, [], "")


def _same_quantity(desired: Any, live: Any) -> bool:
    if not isinstance(live, str | int | float) or not isinstance(desired, str | int | float):
        return False
    try:
        return parse_quantity(str(desired)) == parse_quantity(str(live))
    except (ValueError, InvalidOperation):
        return False


def first_difference(desired: Any, live: Any, path: str = "", parent: str = "") -> str | None:
    """The path of the first desired field the live object lacks or holds differently, or None."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return None if _is_empty(desired) and _is_empty(live) else path or "."
        for key, value in desired.items():
            sub = f"{path}.{key}"
            if key not in live:
                if _is_empty(value):
                    continue
                return sub
            found = first_difference(value, live[key], sub, key)
            if found is not None:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list):
            return None if _is_empty(desired) and _is_empty(live) else path
        if len(desired) != len(live):
            return f"{path}[len {len(desired)} != {len(live)}]"
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            found = first_difference(want, have, f"{path}[{index}]", parent)
            if found is not None:
                return found
        return None
    if desired == live and type(desired) is type(live):
        return None
    if _is_empty(desired) and _is_empty(live):
        return None
    quantity = parent in _QUANTITY_PARENTS or path.endswith((".storage", ".cpu", ".memory"))
    if quantity and _same_quantity(desired, live):
        return None
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (desired, live))
    if numbers and Decimal(str(desired)) == Decimal(str(live)):
        return None
    return path
