"""The few Kubernetes API calls the operator makes itself (kopf does the watching).

The official client is synchronous; every call runs in a worker thread so the event loop stays
free. Paths are built from a small table of the kinds the operator manages, so there is no
discovery round trip.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any, Final

import kubernetes
import urllib3

from hda.api.consts import FIELD_MANAGER, GROUP, PLURAL, VERSION


@dataclasses.dataclass(frozen=True)
class Kind:
    """Where one kind lives in the API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str | None, name: str | None = None) -> str:
        prefix = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        path = prefix
        if self.namespaced:
            path += f"/namespaces/{namespace}"
        path += f"/{self.plural}"
        if name is not None:
            path += f"/{name}"
        return path


# Every kind the builders produce, in apply order: what others depend on comes first.
KINDS: Final[tuple[Kind, ...]] = (
    Kind("v1", "ServiceAccount", "serviceaccounts", True),
    Kind("v1", "ConfigMap", "configmaps", True),
    Kind("v1", "Secret", "secrets", True),
    Kind("v1", "PersistentVolume", "persistentvolumes", False),
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims", True),
    Kind("v1", "Service", "services", True),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
    Kind("apps/v1", "StatefulSet", "statefulsets", True),
    Kind("apps/v1", "Deployment", "deployments", True),
)
_BY_KIND: Final = {(k.api_version, k.kind): k for k in KINDS}
APPLY_ORDER: Final = {(k.api_version, k.kind): i for i, k in enumerate(KINDS)}
HDA_KIND: Final = Kind(f"{GROUP}/{VERSION}", "HyperDriveAccelerator", PLURAL, True)


def kind_of(obj: dict[str, Any]) -> Kind:
    """The table entry for a manifest's apiVersion and kind."""
    key = (str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    try:
        return _BY_KIND[key]
    except KeyError:
        raise ValueError(f"the operator does not manage {key[1]} ({key[0]})") from None


class ApiError(Exception):
    """A failed API call, with the HTTP status and the server's message."""

    def __init__(
        self, status: int, reason: str, message: str, causes: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = causes

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted: nothing may be created in it any more."""
        return self.status == 403 and (
            "NamespaceTerminatingError" in self.causes
            or "because it is being terminated" in self.message
        )


def _error(status: int, data: bytes) -> ApiError:
    reason = message = ""
    causes: tuple[str, ...] = ()
    try:
        payload = json.loads(data or b"{}")
        message = str(payload.get("message") or "")
        reason = str(payload.get("reason") or "")
        details = payload.get("details") or {}
        causes = tuple(str(cause.get("reason") or "") for cause in details.get("causes") or [])
    except (ValueError, AttributeError):
        message = data.decode(errors="replace")[:500]
    return ApiError(status, reason, message, causes)


class Kube:
    """A thin asynchronous wrapper over one `kubernetes.client.ApiClient`."""

    def __init__(self, api_client: kubernetes.client.ApiClient, *, workers: int = 32) -> None:
        self._client = api_client
        # The client blocks: calls run on threads. Many HDAs created at once need more than the
        # default executor's few threads; the pool matches the connection pool.
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="kube")

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster credentials if present, else the current kubeconfig."""
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = 32
        return cls(kubernetes.client.ApiClient(configuration))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()  # type: ignore[no-untyped-call]

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        method, url, headers, payload, _ = self._client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(
                method, url, header_params=headers, body=payload, _request_timeout=30
            )
        except urllib3.exceptions.HTTPError as error:
            # Reported like any failed call (in status, on the next pass): the message names
            # the kind of failure only, so that it is the same on every attempt.
            raise ApiError(
                0, "Unreachable", f"the API server is not reachable ({type(error).__name__})"
            ) from error
        data = response.read() or b""  # type: ignore[no-untyped-call]
        if response.status >= 400:
            raise _error(int(response.status), data)
        return json.loads(data) if data else {}

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with the operator's field manager, forcing conflicts."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        path = kind.path(meta.get("namespace"), meta["name"])
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        result = await self._run(
            self._call,
            "PATCH",
            path,
            query=query,
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        return dict(result)

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when it already exists."""
        kind = kind_of(obj)
        path = kind.path(obj["metadata"].get("namespace"))
        try:
            result = await self._run(
                self._call, "POST", path, query=[("fieldManager", FIELD_MANAGER)], body=obj
            )
        except ApiError as error:
            if error.status == 409:
                return None
            raise
        return dict(result)

    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            result = await self._run(self._call, "GET", kind.path(namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return dict(result)

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        """Delete in the background; False when it was already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            await self._run(self._call, "DELETE", kind.path(namespace, name), body=body)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the HDA's status through the status subresource."""
        path = HDA_KIND.path(namespace, name) + "/status"
        await self._run(
            self._call,
            "PATCH",
            path,
            query=[("fieldManager", FIELD_MANAGER)],
            body={"status": status},
            content_type="application/merge-patch+json",
        )
