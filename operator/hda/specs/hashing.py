"""Config-hash annotations: a pod template changes exactly when what its pods read changes."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from hda.api.consts import GROUP

CONFIG_HASH_ANNOTATION: Final = f"{GROUP}/config-hash"


def config_hash(obj: Any) -> str:
    """A short, stable digest of any JSON-serialisable value (key order does not matter)."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
