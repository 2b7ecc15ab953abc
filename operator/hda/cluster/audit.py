"""The API server's audit log, narrowed to chosen users, and what it says they did.

`audit_policy` is the pure builder of the policy file (`--audit-policy-file`): requests of the
given users are logged at Metadata level (who, verb, resource, response code; no bodies), every
other request not at all. `parse_audit_log` reads the JSON-lines log; `used_permissions` and
`refusals` summarise one user's events; `granted_permissions` flattens RBAC rules to the same
shape, so a test can compare what a role grants with what its holder really did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hda.cluster.errors import ClusterError

AUDIT_API_VERSION: Final = "audit.k8s.io/v1"
#: `RequestReceived` would duplicate each request; `ResponseStarted` (watches) and
#: `ResponseComplete` stay, so a watch still open when the log is read is in it already.
OMITTED_STAGES: Final = ("RequestReceived",)
#: Authorization annotation the API server adds to every audited request.
DECISION_ANNOTATION: Final = "authorization.k8s.io/decision"
CREATED: Final = 201


def service_account_user(namespace: str, name: str) -> str:
    """The user name the API server gives a ServiceAccount's tokens."""
    return f"system:serviceaccount:{namespace}:{name}"


def audit_policy(users: Sequence[str]) -> dict[str, Any]:
    """A Policy logging the requests of `users` at Metadata level and nothing else."""
    if not users:
        raise ValueError("audit_policy needs at least one user to log")
    for user in users:
        if not user or user != user.strip():
            raise ValueError(f"audit user {user!r} is empty or has surrounding blanks")
    return {
        "apiVersion": AUDIT_API_VERSION,
        "kind": "Policy",
        "omitStages": list(OMITTED_STAGES),
        "rules": [
            {"level": "Metadata", "users": list(users)},
            {"level": "None"},
        ],
    }


class Permission(NamedTuple):
    """One verb on one resource (`resource` or `resource/subresource`) of one API group."""

    verb: str
    api_group: str
    resource: str

    def __str__(self) -> str:
        group = self.api_group or "core"
        return f"{self.verb} {self.resource} ({group})"


class _User(BaseModel):
    model_config = ConfigDict(extra="ignore")
    username: str = ""


class _ObjectRef(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    resource: str = ""
    api_group: str = Field(default="", alias="apiGroup")
    subresource: str = ""
    namespace: str = ""
    name: str = ""


class _ResponseStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: int = 0
    reason: str = ""
    message: str = ""


class AuditEvent(BaseModel):
    """The fields of an `audit.k8s.io/v1` Event that the checks read."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    audit_id: str = Field(alias="auditID")
    stage: str
    verb: str
    request_uri: str = Field(default="", alias="requestURI")
    user: _User
    object_ref: _ObjectRef | None = Field(default=None, alias="objectRef")
    response_status: _ResponseStatus | None = Field(default=None, alias="responseStatus")
    annotations: dict[str, str] = Field(default_factory=dict)

    @property
    def permission(self) -> Permission | None:
        """The RBAC permission this request's verb needed; None for non-resource URLs."""
        ref = self.object_ref
        if ref is None or not ref.resource:
            return None
        resource = f"{ref.resource}/{ref.subresource}" if ref.subresource else ref.resource
        return Permission(self.verb, ref.api_group, resource)

    @property
    def permissions(self) -> tuple[Permission, ...]:
        """Every RBAC permission this request needed. A server-side apply that creates its
        object (a `patch` answered 201) is authorized for `create` too, which the event's verb
        does not show."""
        permission = self.permission
        if permission is None:
            return ()
        if permission.verb == "patch" and self.code == CREATED:
            return (permission, permission._replace(verb="create"))
        return (permission,)

    @property
    def code(self) -> int:
        return self.response_status.code if self.response_status is not None else 0

    def describe(self) -> str:
        status = self.response_status
        why = f" {status.reason}: {status.message}" if status is not None else ""
        decision = self.annotations.get(DECISION_ANNOTATION, "?")
        return f"{self.verb} {self.request_uri} -> {self.code} (authorization {decision}){why}"


def parse_audit_log(text: str, *, source: str = "audit log") -> list[AuditEvent]:
    """Every event of a JSON-lines audit log; a line that is not one names its number.

    A last line without its newline is a write in progress and is left out.
    """
    lines = text.split("\n")
    complete, partial = lines[:-1], lines[-1]
    events: list[AuditEvent] = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            events.append(AuditEvent.model_validate_json(line))
        except ValidationError as error:
            raise ClusterError(f"{source} line {number} is not an audit event: {error}") from None
    if partial.strip():
        with contextlib.suppress(ValidationError):  # complete, only its newline is missing
            events.append(AuditEvent.model_validate_json(partial))
    return events


def read_audit_log(path: Path) -> list[AuditEvent]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ClusterError(
            f"no audit log at {path}: was the plane started with audit users?"
        ) from None
    return parse_audit_log(text, source=str(path))


def events_of(events: Iterable[AuditEvent], user: str) -> list[AuditEvent]:
    return [event for event in events if event.user.username == user]


def used_permissions(events: Iterable[AuditEvent]) -> set[Permission]:
    """Every permission these requests exercised (whatever the answer was)."""
    return {permission for event in events for permission in event.permissions}


def refusals(events: Iterable[AuditEvent]) -> list[AuditEvent]:
    """Requests answered 401 or 403, one per request (a watch logs two stages)."""
    seen: set[str] = set()
    refused: list[AuditEvent] = []
    for event in events:
        if event.code in (401, 403) and event.audit_id not in seen:
            seen.add(event.audit_id)
            refused.append(event)
    return refused


def granted_permissions(documents: Iterable[dict[str, Any] | None]) -> set[Permission]:
    """Every (verb, group, resource) the Roles and ClusterRoles among `documents` grant.

    Wildcards and resourceNames cannot be compared with requests one by one: they are refused,
    naming the role.
    """
    granted: set[Permission] = set()
    for doc in documents:
        if not doc or doc.get("kind") not in ("Role", "ClusterRole"):
            continue
        role = f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
        for index, rule in enumerate(doc.get("rules") or []):
            where = f"{role} rule {index}"
            if rule.get("nonResourceURLs"):
                raise ValueError(f"{where}: nonResourceURLs are not compared")
            if rule.get("resourceNames"):
                raise ValueError(f"{where}: resourceNames are not compared")
            groups, resources, verbs = (
                rule.get(key) or [] for key in ("apiGroups", "resources", "verbs")
            )
            if "*" in [*groups, *resources, *verbs]:
                raise ValueError(f"{where}: wildcards are not compared")
            granted.update(
                Permission(str(verb), str(group), str(resource))
                for group in groups
                for resource in resources
                for verb in verbs
            )
    return granted
