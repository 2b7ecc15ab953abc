"""The Secrets an HDA's pods read: fetched by name on every pass, never listed or watched.

Their digests go into the pod templates (`hda.specs.with_secret_digests`), so new content rolls
exactly the pods that read it within one resync interval. Their values are checked first: a
password or token the pods could never use is refused with a message naming the Secret and the
field that points at it, and nothing is applied until it is fixed.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.specs import PASSWORD_KEY, ChildNames, secret_digest

from .kube import ApiError, Kube, kind_of

SECRET: Final = kind_of({"apiVersion": "v1", "kind": "Secret"})


@dataclasses.dataclass(frozen=True)
class WantedSecret:
    """One Secret key the pods read; `field` is the spec field naming it (None: generated)."""

    name: str
    key: str
    field: str | None
    use: str  # what breaks when the value ends with a line break


def wanted_secrets(hda: HyperDriveAccelerator, names: ChildNames) -> list[WantedSecret]:
    wanted = [
        WantedSecret(
            names.buffer_password_secret,
            PASSWORD_KEY,
            None if names.buffer_password_secret_is_generated else "spec.redis.auth.existingSecret",
            "Valkey's start script drops it, so clients sending it would be refused",
        )
    ]
    token = hda.spec.ingest.token_secret
    if token is not None:
        wanted.append(
            WantedSecret(
                token.name,
                token.key,
                "spec.ingest.tokenSecret",
                "producers cannot send it in an Authorization header",
            )
        )
    return wanted


def check_secret(wanted: WantedSecret, body: Mapping[str, Any] | None) -> str | None:
    """Why the pods could not use `wanted` as found in `body`; None when they can."""
    if wanted.field is None:
        return None  # the operator's own: created when missing, never edited
    if body is None:
        return f"{wanted.field}: Secret {wanted.name} not found"
    raw = (body.get("data") or {}).get(wanted.key)
    if raw is None:
        return f"{wanted.field}: Secret {wanted.name} has no key {wanted.key}"
    try:
        value = base64.b64decode(str(raw), validate=True)
    except (binascii.Error, ValueError):
        return f"{wanted.field}: key {wanted.key} of Secret {wanted.name} is not base64"
    if not value:
        return f"{wanted.field}: key {wanted.key} of Secret {wanted.name} is empty"
    if value.endswith((b"\n", b"\r")):
        return (
            f"{wanted.field}: the value of key {wanted.key} in Secret {wanted.name} ends with a "
            f"line break ({wanted.use}); store it without one, e.g. kubectl create secret "
            f"generic {wanted.name} --from-literal={wanted.key}=..."
        )
    return None


@dataclasses.dataclass(frozen=True)
class SecretInputs:
    """The Secrets read in one pass (name -> body, None when absent) and what is wrong."""

    namespace: str
    bodies: Mapping[str, dict[str, Any] | None]
    errors: tuple[str, ...] = ()

    def with_body(self, name: str, body: dict[str, Any]) -> SecretInputs:
        return dataclasses.replace(self, bodies={**self.bodies, name: body})

    @property
    def digests(self) -> dict[str, str]:
        return {
            name: secret_digest(self.namespace, name, (body or {}).get("data"))
            for name, body in self.bodies.items()
        }

    def value(self, name: str, key: str) -> str | None:
        raw = ((self.bodies.get(name) or {}).get("data") or {}).get(key)
        if raw is None:
            return None
        try:
            return base64.b64decode(str(raw)).decode()
        except (binascii.Error, ValueError):
            return None


async def read_secrets(kube: Kube, hda: HyperDriveAccelerator, names: ChildNames) -> SecretInputs:
    """GET each Secret the pods read, by name, and check it."""
    bodies: dict[str, dict[str, Any] | None] = {}
    errors: list[str] = []
    for wanted in wanted_secrets(hda, names):
        if wanted.name not in bodies:
            try:
                bodies[wanted.name] = await kube.get(SECRET, hda.namespace, wanted.name)
            except ApiError as error:
                errors.append(f"Secret/{wanted.name}: {error}")
                continue
        problem = check_secret(wanted, bodies[wanted.name])
        if problem is not None:
            errors.append(problem)
    return SecretInputs(hda.namespace, bodies, tuple(errors))
