"""Run the operator for real, with exactly the chart's permissions, and count its API requests.

Used by the cluster tests and the operator benchmark:

- `install_chart_rbac` renders the chart's ServiceAccount, ClusterRoles and bindings with
  `helm template` and applies them, so the operator gets what the chart grants and nothing more;
- `token_kubeconfig` writes a kubeconfig whose only credential is that ServiceAccount's token,
  pointing at a `CountingProxy`: a plain-HTTP pass-through to the API server on 127.0.0.1 that
  records the method, path and status of every request (watches are streamed through);
- `OperatorProcess` runs `hda operator` as a subprocess with that kubeconfig.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml
from aiohttp import web

WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "upgrade",
        "proxy-connection",
    }
)


@dataclasses.dataclass(frozen=True)
class Request:
    """One request the proxy passed on."""

    at: float
    method: str
    path: str
    query: str
    status: int
    #: For a 401/403: the Status reason and its causes (e.g. `Forbidden NamespaceTerminating`).
    refusal: str = ""

    @property
    def refused_by_rbac(self) -> bool:
        """Refused for want of a permission, not because its namespace is going away."""
        terminating = "NamespaceTerminating" in self.refusal or "being terminated" in self.refusal
        return self.status in (401, 403) and not terminating

    @property
    def write(self) -> bool:
        return self.method in WRITE_METHODS and "dryRun" not in self.query

    @property
    def watch(self) -> bool:
        return "watch=" in self.query and "watch=false" not in self.query


def _refusal(body: bytes) -> str:
    """`REASON CAUSE...` of a Kubernetes Status body; the raw text when it is not one."""
    try:
        status = json.loads(body)
        causes = [str(c.get("reason", "")) for c in (status.get("details") or {}).get("causes", [])]
        parts = [str(status.get("reason", "")), *causes, str(status.get("message", ""))]
        return " ".join(parts).strip()
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CountingProxy:
    """A plain-HTTP proxy on 127.0.0.1 in front of the API server that records every request."""

    def __init__(self, upstream: str, ca_data: bytes | None) -> None:
        self.upstream = upstream.rstrip("/")
        self._ca_data = ca_data
        self.port = free_port()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="counting-proxy", daemon=True)
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._dropping: Callable[[Request], bool] | None = None

    def drop(self, matching: Callable[[Request], bool] | None) -> None:
        """Cut the connection of every request `matching` selects, as an unreachable API server
        would (None: pass everything on again)."""
        self._dropping = matching

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CountingProxy:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the counting proxy did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def since(self, moment: float) -> list[Request]:
        return [r for r in self.snapshot() if r.at >= moment]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        context = ssl.create_default_context()
        if self._ca_data is not None:
            context.load_verify_locations(cadata=self._ca_data.decode())
        connector = aiohttp.TCPConnector(ssl=context, limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            app = web.Application(client_max_size=64 * 1024 * 1024)

            async def handle(request: web.Request) -> web.StreamResponse:
                dropping = self._dropping
                if dropping is not None and dropping(self._entry(request, 0)):
                    self._record(request, 0)
                    if request.transport is not None:
                        request.transport.abort()
                    raise ConnectionResetError("dropped by the test")
                return await self._forward(session, request)

            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port)
            await site.start()
            self._stop = asyncio.Event()
            self._started.set()
            await self._stop.wait()
            await runner.cleanup()

    async def _forward(
        self, session: aiohttp.ClientSession, request: web.Request
    ) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers.pop("Host", None)
        body = await request.read()
        url = self.upstream + request.rel_url.path_qs
        status = 502
        try:
            async with session.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            ) as upstream:
                status = upstream.status
                if status in (401, 403):  # a small Status: keep why, then pass it on whole
                    refusal_body = await upstream.read()
                    self._record(request, status, _refusal(refusal_body))
                    return web.Response(
                        status=status,
                        body=refusal_body,
                        content_type=upstream.content_type,
                    )
                self._record(request, status)
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        response.headers[key] = value
                if "Content-Encoding" in upstream.headers:
                    response.headers["Content-Encoding"] = upstream.headers["Content-Encoding"]
                await response.prepare(request)
                try:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                except (aiohttp.ClientError, ConnectionResetError):
                    pass  # a watch ended on either side: nothing to pass on
                return response
        except (aiohttp.ClientError, ConnectionResetError) as error:
            if status == 502:
                self._record(request, status)
            return web.Response(status=502, text=f"proxy: {error}")

    @staticmethod
    def _entry(request: web.Request, status: int, refusal: str = "") -> Request:
        return Request(
            at=time.time(),
            method=request.method,
            path=request.rel_url.path,
            query=request.rel_url.query_string,
            status=status,
            refusal=refusal,
        )

    def _record(self, request: web.Request, status: int, refusal: str = "") -> None:
        entry = self._entry(request, status, refusal)
        with self._lock:
            self.requests.append(entry)


# --- credentials ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AdminAccess:
    """The API server address and CA of an admin kubeconfig."""

    server: str
    ca_data: bytes | None


def admin_access(kubeconfig: Path) -> AdminAccess:
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(
        c["context"] for c in config["contexts"] if c["name"] == config["current-context"]
    )
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    ca: bytes | None = None
    if "certificate-authority-data" in cluster:
        ca = base64.b64decode(cluster["certificate-authority-data"])
    elif "certificate-authority" in cluster:
        path = Path(cluster["certificate-authority"])
        ca = (path if path.is_absolute() else kubeconfig.parent / path).read_bytes()
    return AdminAccess(server=str(cluster["server"]), ca_data=ca)


def token_kubeconfig(
    server: str,
    token: str,
    path: Path,
    *,
    user: str = "hda-operator",
    ca_data: bytes | None = None,
) -> Path:
    """A kubeconfig whose only credential is `token`, for `server` (the proxy over plain HTTP,
    or the API server itself with its CA)."""
    cluster: dict[str, str] = {"server": server}
    if ca_data is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_data).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "cluster", "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def render_chart_rbac(*, helm: str, chart: Path, namespace: str, release: str = "hda") -> str:
    """The chart's ServiceAccount, ClusterRoles and bindings for `release` in `namespace`, as
    `helm template` renders them (YAML documents)."""
    return subprocess.run(
        [
            helm,
            "template",
            release,
            str(chart),
            "--namespace",
            namespace,
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/clusterrole.yaml",
            "--show-only",
            "templates/rolebindings.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HELM_CACHE_HOME": tempfile.gettempdir() + "/hda-helm-cache"},
    ).stdout


def chart_account(rendered: str) -> str:
    """The name of the ServiceAccount among rendered chart documents."""
    return str(
        next(
            doc["metadata"]["name"]
            for doc in yaml.safe_load_all(rendered)
            if doc and doc.get("kind") == "ServiceAccount"
        )
    )


def install_chart_rbac(
    *,
    helm: str,
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    chart: Path,
    namespace: str,
    release: str = "hda",
) -> str:
    """Apply the chart's ServiceAccount and RBAC into `namespace`; return the account's name."""
    rendered = render_chart_rbac(helm=helm, chart=chart, namespace=namespace, release=release)
    kubectl("apply", "--server-side", "-f", "-", input=rendered)
    account = chart_account(rendered)
    wait_until_authorized(kubectl, namespace, account)
    return account


# What the operator does first; allowed once the new bindings reached the RBAC authorizer.
_FIRST_PERMISSIONS = (
    ("list", "hyperdriveaccelerators.hda.shitops.dev"),
    ("patch", "hyperdriveaccelerators.hda.shitops.dev/status"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "secrets"),
    ("list", "persistentvolumes"),
)


def wait_until_authorized(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    namespace: str,
    account: str,
    *,
    watched_namespace: str | None = None,
    timeout: float = 30.0,
) -> None:
    """Wait until fresh RBAC bindings apply to `account` (in `watched_namespace`, or everywhere).

    The apiserver authorizes from an informer cache, so a binding made a moment ago may still
    be unknown to it; an operator started in that moment would see 403s it should never get.
    """
    user = f"system:serviceaccount:{namespace}:{account}"
    where = ["--all-namespaces"] if watched_namespace is None else ["-n", watched_namespace]
    deadline = time.monotonic() + timeout
    pending = list(_FIRST_PERMISSIONS)
    while pending:
        verb, resource = pending[0]
        answer = kubectl("auth", "can-i", verb, resource, *where, f"--as={user}", check=False)
        if answer.stdout.strip() == "yes":
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise AssertionError(f"{user} still may not {verb} {resource} after {timeout:.0f}s")
        time.sleep(0.2)


# --- the operator process -----------------------------------------------------------------------


class OperatorProcess:
    """`hda operator` as a subprocess with its output in a file."""

    def __init__(
        self,
        kubeconfig: Path,
        log: Path,
        *,
        extra_args: Sequence[str] = (),
        args: Sequence[str] = ("operator", "--all-namespaces"),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`args` is the command line after `hda` (the chart's container args, say) without
        `--liveness`: the process always gets its own free local liveness port."""
        if any(arg.startswith("--liveness") for arg in args):
            raise ValueError("pass args without --liveness: the harness picks the port")
        self.kubeconfig = kubeconfig
        self.log = log
        self.args = tuple(args)
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.metrics_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "HDA_LOG_FORMAT": "json",
            # Outside the cluster, pod DNS names do not resolve (nor may their lookups leave).
            "HDA_BUFFER_PROBE": "off",
            **self.extra_env,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hda",
                    *self.args,
                    f"--liveness=http://127.0.0.1:{self.port}/healthz",
                    f"--metrics-port={self.metrics_port}",
                    "--metrics-host=127.0.0.1",
                    *self.extra_args,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started_at = time.time()
        return self

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else -1

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def assert_running(self) -> None:
        if not self.running():
            raise AssertionError(f"hda operator exited:\n{self.output()[-6000:]}")

    def healthy(self) -> bool:
        self.assert_running()
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/healthz", timeout=2
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        """The operator's Prometheus /metrics text."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as response:
            return str(response.read().decode())

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def describe(requests: Sequence[Request]) -> list[dict[str, Any]]:
    """Requests as plain dicts, for assertion messages."""
    return [dataclasses.asdict(r) for r in requests]
