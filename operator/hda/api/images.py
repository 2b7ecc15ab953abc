"""Container image references: their grammar, and the images the operator falls back to.

An HDA may pin its images (`spec.image`, `spec.redis.image`); when it does not, the operator's
own configuration decides (`hda operator --default-runtime-image/--default-valkey-image`, or the
environment variables below, which the Helm chart sets). Without any configuration the operator
uses its own image for the runtime and the official Valkey image.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from hda import __version__

ENV_DEFAULT_RUNTIME_IMAGE: Final = "HDA_DEFAULT_RUNTIME_IMAGE"
ENV_DEFAULT_VALKEY_IMAGE: Final = "HDA_DEFAULT_VALKEY_IMAGE"

RUNTIME_IMAGE_REPOSITORY: Final = "ghcr.io/shitops/hyperdrive-accelerator"
BUILTIN_RUNTIME_IMAGE: Final = f"{RUNTIME_IMAGE_REPOSITORY}:{__version__}"
BUILTIN_VALKEY_IMAGE: Final = "valkey/valkey:9.1"

# The distribution reference grammar: [domain[:port]/]path[:tag][@digest]. Written without
# look-arounds so the same pattern works in pydantic, Python `re` and the apiserver (RE2).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
# A first component is a registry only with a dot, a port, or as `localhost` (as Docker reads it).
_DOMAIN = (
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+(?::[0-9]+)?"
    rf"|{_DOMAIN_COMPONENT}:[0-9]+|localhost)"
)
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE_PATTERN: Final = (
    rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?$"
)
IMAGE_REFERENCE_MAX_LENGTH: Final = 512
IMAGE_REFERENCE_FORM: Final = "[registry[:port]/]name[:tag][@algorithm:digest], name in lower case"

_IMAGE_REFERENCE = re.compile(IMAGE_REFERENCE_PATTERN)


def image_reference_problem(value: str) -> str | None:
    """Why `value` is not an image reference, or None when it is one."""
    if not value:
        return "it is empty"
    if len(value) > IMAGE_REFERENCE_MAX_LENGTH:
        return f"it is longer than {IMAGE_REFERENCE_MAX_LENGTH} characters"
    if _IMAGE_REFERENCE.match(value) is None:
        return f"it is not of the form {IMAGE_REFERENCE_FORM}"
    return None


@dataclasses.dataclass(frozen=True)
class DefaultImages:
    """The images an HDA runs when its spec pins none: the operator's configuration."""

    runtime: str = BUILTIN_RUNTIME_IMAGE
    valkey: str = BUILTIN_VALKEY_IMAGE

    def __post_init__(self) -> None:
        for field, value in (("runtime", self.runtime), ("valkey", self.valkey)):
            problem = image_reference_problem(value)
            if problem is not None:
                raise ValueError(f"default {field} image {value!r}: {problem}")
