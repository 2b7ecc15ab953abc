"""The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok.

`LocalCluster(name).up()` starts the components in order, each gated on its health endpoint,
then registers the fake nodes and waits until they are Ready. When the registry binary is
there it also starts the loopback image registry; with `real_nodes` it runs real kubelets with
their containerds, kube-proxy and CoreDNS (`real_nodes.py`; root only). The processes outlive the caller;
`state.json` in the cluster's state directory records their PIDs and ports for `down` and for an
idempotent `up`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

from hda.cluster import (
    audit,
    coredns,
    flags,
    network,
    node_pki,
    pki,
    processes,
    registry,
    storage,
)
from hda.cluster.binaries import find_bin_dir, missing_binaries
from hda.cluster.errors import ClusterError, ComponentFailedError
from hda.cluster.kwok_stages import KWOK_STAGES_YAML
from hda.cluster.layout import (
    APISERVER,
    BINARIES,
    COMPONENTS,
    CONTROLLER_MANAGER,
    COREDNS,
    DEFAULT_NAME,
    ETCD,
    KUBE_PROXY,
    KWOK,
    REAL_NODE_BINARIES,
    REGISTRY,
    SCHEDULER,
    ClusterLayout,
    Ports,
)
from hda.cluster.manifests import NodeSpec, node_manifest, node_specs
from hda.cluster.processes import ProcessRecord
from hda.cluster.real_nodes import RealNodeRecord, RealNodes, real_node_names

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

#: Seconds each component may take to report healthy after it was started.
HEALTH_TIMEOUTS: Final[dict[str, float]] = {
    ETCD: 30.0,
    APISERVER: 120.0,
    CONTROLLER_MANAGER: 60.0,
    SCHEDULER: 60.0,
    KWOK: 60.0,
    REGISTRY: 30.0,
}
#: Health timeout of components not listed above (kubelets, kube-proxy, CoreDNS).
DEFAULT_HEALTH_TIMEOUT: Final = 60.0
NODE_READY_TIMEOUT: Final = 60.0
REAL_NODE_READY_TIMEOUT: Final = 120.0
_POLL_INTERVAL: Final = 0.2


def free_ports(count: int) -> list[int]:
    """Free loopback ports, all distinct (the sockets are held until every port is chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((flags.LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def allocate_ports() -> Ports:
    return Ports.from_list(free_ports(Ports.count()))


def allocate_real_nodes(count: int, fc_count: int) -> list[RealNodeRecord]:
    names = real_node_names(count, fc_count)
    ports = free_ports(2 * len(names))
    return [
        RealNodeRecord(
            name=name,
            fc=fc,
            index=index,
            kubelet_port=ports[2 * index],
            kubelet_healthz_port=ports[2 * index + 1],
        )
        for index, (name, fc) in enumerate(names)
    ]


@dataclass
class ClusterState:
    """Contents of `state.json`."""

    name: str
    bin_dir: str
    ports: Ports
    processes: list[ProcessRecord] = field(default_factory=list)
    real_nodes: list[RealNodeRecord] = field(default_factory=list)
    #: sysctl values before real nodes turned forwarding on (restored at `down`).
    previous_sysctls: dict[str, str] = field(default_factory=dict)
    #: Users whose requests the apiserver's audit log records (`layout.audit_log`).
    audit_users: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "bin_dir": self.bin_dir,
                "ports": self.ports.to_dict(),
                "processes": [record.to_dict() for record in self.processes],
                "real_nodes": [record.to_dict() for record in self.real_nodes],
                "previous_sysctls": self.previous_sysctls,
                "audit_users": self.audit_users,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        data: dict[str, Any] = json.loads(text)
        return cls(
            name=str(data["name"]),
            bin_dir=str(data["bin_dir"]),
            ports=Ports.from_dict(data["ports"]),
            processes=[ProcessRecord.from_dict(item) for item in data["processes"]],
            real_nodes=[RealNodeRecord.from_dict(item) for item in data.get("real_nodes", [])],
            previous_sysctls={str(k): str(v) for k, v in data.get("previous_sysctls", {}).items()},
            audit_users=[str(user) for user in data.get("audit_users", [])],
        )


class LocalCluster:
    """One named local cluster. Cheap to construct; nothing runs until `up`."""

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        state_root: Path | None = None,
        bin_dir: Path | None = None,
        audit_users: tuple[str, ...] = (),
    ) -> None:
        """`audit_users`: the apiserver logs their requests at Metadata level, as JSON lines, to
        `layout.audit_log` (e.g. an operator's `system:serviceaccount:<ns>:<name>`)."""
        self.layout = ClusterLayout.for_name(name, state_root)
        self._bin_dir = bin_dir
        self._audit_users = list(audit_users)
        if audit_users:
            audit.audit_policy(audit_users)  # refuses bad names before anything runs
        self.real = RealNodes(self.layout)

    # -- public API ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    def env_line(self) -> str:
        """The shell line that points kubectl (and the operator) at this cluster."""
        return f"export KUBECONFIG={self.kubeconfig}"

    def state(self) -> ClusterState | None:
        """The recorded state, or None when the cluster was never started (or was removed)."""
        try:
            return ClusterState.from_json(self.layout.state_file.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as error:
            raise ClusterError(f"corrupt state file {self.layout.state_file}: {error}") from error

    def bin_dir(self) -> Path:
        """The directory of the upstream binaries this cluster runs (recorded at `up`)."""
        state = self.state()
        if state is not None:
            return Path(state.bin_dir)
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    def unhealthy_components(self) -> list[str]:
        """Components that are not running or not healthy; empty when all are fine."""
        state = self.state()
        if state is None:
            return list(COMPONENTS)
        running = {
            record.component
            for record in state.processes
            if processes.is_ours(record, str(self.layout.state_dir))
        }
        expected = [*COMPONENTS] + [
            record.component for record in state.processes if record.component not in COMPONENTS
        ]
        return [
            component
            for component in expected
            if component not in running or not self._healthy(component, state)
        ]

    def is_up(self) -> bool:
        return not self.unhealthy_components()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise `up` and `down` of this cluster across processes."""
        lock_path = self.layout.state_dir.with_name(f".{self.name}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def up(
        self, nodes: int = 3, fc_nodes: int = 2, real_nodes: int = 0, real_fc_nodes: int = 0
    ) -> None:
        """Start the plane (or keep it, if healthy) and make sure the requested nodes are Ready.

        `nodes`/`fc_nodes` are kwok (simulated) nodes; `real_nodes`/`real_fc_nodes` run a
        kubelet and containerd each and need root (see `real_nodes`). On a healthy cluster this
        only adds missing kwok nodes (it never removes any; real nodes are fixed at `up`).
        Raises `ComponentFailedError` naming the component and its log when something does not
        come up; the processes started so far are stopped, the logs are kept.
        """
        specs = node_specs(nodes, fc_nodes)
        real_node_names(real_nodes, real_fc_nodes)  # validates the counts before anything runs
        with self._locked():
            self._up(specs, real_nodes, real_fc_nodes)

    def _up(self, specs: list[NodeSpec], real_nodes: int, real_fc_nodes: int) -> None:
        started = time.monotonic()
        wanted_real = real_node_names(real_nodes, real_fc_nodes)
        state = self.state()
        if state is not None:
            unhealthy = self.unhealthy_components()
            recorded_real = [(record.name, record.fc) for record in state.real_nodes]
            # Asking for an audit the running apiserver does not do is an error; not asking is not.
            if not unhealthy and self._audit_users and state.audit_users != self._audit_users:
                raise ClusterError(
                    f"cluster {self.name!r} audits users {state.audit_users}, not "
                    f"{self._audit_users}; run `hda cluster down` first"
                )
            if not unhealthy and recorded_real == wanted_real:
                log.info("cluster %r is already up", self.name)
                self._ensure_nodes(specs, tainted=bool(state.real_nodes))
                return
            if not unhealthy:
                raise ClusterError(
                    f"cluster {self.name!r} runs real nodes {[n for n, _ in recorded_real]}, "
                    f"not {[n for n, _ in wanted_real]}; run `hda cluster down` first"
                )
            log.warning(
                "cluster %r is recorded but %s not healthy; restarting it from scratch",
                self.name,
                ", ".join(unhealthy),
            )
            self._down(remove_state=True)

        required = BINARIES + (REAL_NODE_BINARIES if real_nodes else ())
        bin_dir = self._bin_dir or find_bin_dir(required)
        missing = missing_binaries(bin_dir, required)
        if missing:
            raise ClusterError(f"{bin_dir} lacks {', '.join(missing)} (needed for real nodes)")
        facts = self.real.check_host() if real_nodes else None
        if self.real.leftovers_exist():
            log.info("removing leftovers of an earlier run of cluster %r", self.name)
            self._teardown_real({})
        self._prepare_files(bin_dir)
        state = ClusterState(
            name=self.name,
            bin_dir=str(bin_dir),
            ports=allocate_ports(),
            audit_users=self._audit_users,
        )
        if real_nodes:
            state.real_nodes = allocate_real_nodes(real_nodes, real_fc_nodes)
        self._write_state(state)
        self._write_kubeconfig(state.ports)
        try:
            if facts is not None:
                state.previous_sysctls = self.real.prepare_network(
                    state.real_nodes, state.ports.apiserver
                )
                self._write_state(state)
            self._start_and_wait(state, [ETCD])
            self._start_and_wait(state, [APISERVER])
            self._start_and_wait(state, [CONTROLLER_MANAGER, SCHEDULER, KWOK])
            if not missing_binaries(bin_dir, (REGISTRY,)):
                self._start_registry(state)
            if facts is not None:
                self._start_real_nodes(state, facts)
            self._ensure_nodes(specs, tainted=bool(state.real_nodes))
            self._wait_for_default_service_account(state)
        except BaseException:
            self._stop_processes(state)
            if state.real_nodes:
                self._teardown_real(state.previous_sysctls)
            raise
        log.info("cluster %r is up in %.1fs", self.name, time.monotonic() - started)

    # -- the loopback registry and real nodes ------------------------------------------------------

    def registry_host(self) -> str:
        """`127.0.0.1:PORT` of the cluster's registry (every image host maps to it)."""
        return registry.registry_host(self._running_state(REGISTRY).ports.registry)

    def registry_url(self) -> str:
        """`http://127.0.0.1:PORT`: the registry's HTTP API."""
        return registry.registry_url(self._running_state(REGISTRY).ports.registry)

    def _running_state(self, component: str) -> ClusterState:
        state = self.state()
        if state is None or not any(r.component == component for r in state.processes):
            raise ClusterError(f"cluster {self.name!r} runs no {component}; is it up?")
        return state

    def real_node_names(self) -> list[str]:
        state = self.state()
        return [record.name for record in state.real_nodes] if state else []

    def _start_registry(self, state: ClusterState) -> None:
        layout = self.layout
        storage = layout.registry_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config_path = layout.registry_dir / "config.yml"
        config = registry.registry_config(storage, state.ports.registry)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._start_component(
            state,
            REGISTRY,
            registry.registry_args(Path(state.bin_dir), config_path),
            env=registry.registry_env(),
        )
        self._wait_healthy(self._record(state, REGISTRY), state)

    def _start_real_nodes(self, state: ClusterState, facts: Any) -> None:
        bin_dir = Path(state.bin_dir)
        server = flags.apiserver_url(state.ports)
        registry_url = registry.registry_url(state.ports.registry)
        digest = self.real.push_pause_image(bin_dir, registry_url)
        log.info("pause image pushed to %s (%s)", registry_url, digest)
        self._apply_manifests(node_pki.rbac_manifests())
        self._apply_manifests(coredns.dns_manifests(self.real.network.dns_address))
        self.real.write_shared_files(server, state.ports, state.real_nodes[0].name)
        for record in state.real_nodes:
            self.real.write_node_files(
                record, server=server, registry_url=registry_url, facts=facts
            )
            process = self.real.start_containerd(bin_dir, record)
            state.processes.append(process)
            self._write_state(state)
        for record in state.real_nodes:
            component = self.real.containerd_component(record.name)
            self.real.wait_containerd(record, self._record(state, component))
            state.processes.append(self.real.start_kubelet(bin_dir, record))
            self._write_state(state)
        state.processes.append(self.real.start_kube_proxy(bin_dir))
        state.processes.append(self.real.start_coredns(bin_dir))
        self._write_state(state)
        for process in state.processes:
            if self._health_url(process.component, state) and process.component not in COMPONENTS:
                self._wait_healthy(process, state)
        self._wait_real_nodes_ready(state)
        nodes = [(record.name, record.fc) for record in state.real_nodes]
        self._apply_manifests(storage.provision_volumes(self.real.volumes_dir, nodes))

    def kubelet_root_dirs(self) -> list[Path]:
        """Each real node's kubelet root: where it mounts pod volumes (tests read them)."""
        return [self.real.files(name).kubelet_root for name in self.real_node_names()]

    def _wait_real_nodes_ready(self, state: ClusterState) -> None:
        from kubernetes import client  # noqa: PLC0415
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        pending = {record.name for record in state.real_nodes}
        started = time.monotonic()

        def all_ready() -> bool:
            for name in sorted(pending):
                try:
                    node = core.read_node_status(name)
                except ApiException as error:
                    if error.status == 404:
                        continue
                    raise
                conditions = (node.status.conditions if node.status else None) or []
                if any(c.type == "Ready" and c.status == "True" for c in conditions):
                    pending.discard(name)
            return not pending

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            first_kubelet = self.real.kubelet_component(state.real_nodes[0].name)
            self._wait_for(
                first_kubelet,
                state,
                all_ready,
                REAL_NODE_READY_TIMEOUT,
                f"real nodes {sorted(pending)} not Ready",
            )
        log.info(
            "%d real node(s) Ready after %.1fs", len(state.real_nodes), time.monotonic() - started
        )

    def _apply_manifests(self, manifests: list[dict[str, Any]]) -> None:
        from kubernetes import utils  # noqa: PLC0415
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        with self.api_client() as api:
            for manifest in manifests:
                try:
                    utils.create_from_dict(api, manifest)  # type: ignore[no-untyped-call]
                except utils.FailToCreateError as error:
                    if not all(
                        isinstance(cause, ApiException) and cause.status == 409
                        for cause in error.api_exceptions
                    ):
                        raise ClusterError(
                            f"cannot create {manifest['kind']} {manifest['metadata']['name']}: "
                            f"{error}"
                        ) from error

    def _teardown_real(self, previous_sysctls: dict[str, str]) -> None:
        problems = self.real.teardown()
        if previous_sysctls:
            network.restore_sysctls(previous_sysctls)
        if problems:
            raise ClusterError(
                f"cluster {self.name!r}: could not remove everything the real nodes made:\n- "
                + "\n- ".join(problems)
            )

    def down(self, *, remove_state: bool = True) -> None:
        """Stop every process this cluster started; remove its state dir unless told not to."""
        with self._locked():
            self._down(remove_state=remove_state)

    def _down(self, *, remove_state: bool) -> None:
        state = self.state()
        if state is not None:
            self._stop_processes(state)
        if (state is not None and state.real_nodes) or self.real.leftovers_exist():
            self._teardown_real(state.previous_sysctls if state else {})
        if remove_state and self.layout.state_dir.exists():
            shutil.rmtree(self.layout.state_dir)
            log.info("removed %s", self.layout.state_dir)

    def api_client(self) -> ApiClient:
        """A `kubernetes.client.ApiClient` for the cluster admin (a context manager)."""
        from kubernetes import config  # noqa: PLC0415 (heavy import, only when needed)

        api: ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig)
        )
        return api

    def add_node(self, name: str, *, fc: bool = True, wait: bool = True) -> None:
        """Register one more fake node (Fibre Channel labelled if `fc`) and wait until Ready."""
        state = self.state()
        tainted = bool(state and state.real_nodes)
        self._create_nodes([NodeSpec(name=name, fc=fc)], wait=wait, tainted=tainted)

    def delete_node(self, name: str) -> None:
        """Remove a node (kwok stops simulating it; its pods are garbage-collected)."""
        from kubernetes import client  # noqa: PLC0415
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        with self.api_client() as api:
            try:
                client.CoreV1Api(api).delete_node(name)
            except ApiException as error:
                if error.status != 404:
                    raise

    # -- start-up steps -----------------------------------------------------------------------

    def _prepare_files(self, bin_dir: Path) -> None:
        layout = self.layout
        for directory in (layout.state_dir, layout.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        layout.state_dir.chmod(0o700)  # holds the CA key and the admin credentials
        if layout.etcd_data_dir.exists():  # a fresh start never reuses old etcd data
            shutil.rmtree(layout.etcd_data_dir)
        pki.ensure_pki(layout.pki_dir)
        layout.kwok_config.write_text(KWOK_STAGES_YAML)
        layout.audit_log.unlink(missing_ok=True)  # a fresh start never mixes in an old run
        if self._audit_users:
            layout.audit_policy.write_text(yaml.safe_dump(audit.audit_policy(self._audit_users)))
        log.info(
            "state of cluster %r in %s, binaries from %s", self.name, layout.state_dir, bin_dir
        )

    def _write_state(self, state: ClusterState) -> None:
        tmp = self.layout.state_file.with_suffix(".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.layout.state_file)

    def _write_kubeconfig(self, ports: Ports) -> None:
        pki.write_kubeconfig(
            self.layout.kubeconfig,
            self.layout.pki_dir,
            cluster_name=self.name,
            server=flags.apiserver_url(ports),
            cert=flags.ADMIN_CERT,
            key=flags.ADMIN_KEY,
            user="admin",
        )

    def _start_and_wait(self, state: ClusterState, components: list[str]) -> None:
        bin_dir = Path(state.bin_dir)
        advertise = self.real.network.apiserver_address if state.real_nodes else None
        audit_on = bool(state.audit_users)
        for component in components:
            argv = flags.component_args(
                component, bin_dir, self.layout, state.ports, advertise, audit=audit_on
            )
            self._start_component(state, component, argv)
        for component in components:
            self._wait_healthy(self._record(state, component), state)

    def _start_component(
        self,
        state: ClusterState,
        component: str,
        argv: list[str],
        env: dict[str, str] | None = None,
    ) -> None:
        record = processes.start(
            component, argv, self.layout.log_path(component), cwd=self.layout.state_dir, env=env
        )
        state.processes.append(record)
        self._write_state(state)

    @staticmethod
    def _record(state: ClusterState, component: str) -> ProcessRecord:
        return next(r for r in state.processes if r.component == component)

    def _health_url(self, component: str, state: ClusterState) -> str | None:
        """Where `component` answers 200 once healthy; None when it has no such endpoint."""
        if component in COMPONENTS:
            return flags.health_url(component, state.ports)
        if component == REGISTRY:
            return registry.registry_health_url(state.ports.registry)
        if component == COREDNS:
            return coredns.ready_url(state.ports.coredns_ready)
        if component == KUBE_PROXY:
            return f"http://{flags.LOOPBACK}:{state.ports.kube_proxy_healthz}/healthz"
        for record in state.real_nodes:
            if component == self.real.kubelet_component(record.name):
                return f"http://{flags.LOOPBACK}:{record.kubelet_healthz_port}/healthz"
        return None

    def _wait_healthy(self, record: ProcessRecord, state: ClusterState) -> None:
        component = record.component
        timeout = HEALTH_TIMEOUTS.get(component, DEFAULT_HEALTH_TIMEOUT)
        started = time.monotonic()
        last_error = "no answer yet"
        while time.monotonic() - started < timeout:
            code = processes.exit_status(record)
            if code is not None or not processes.alive(record.pid):
                raise self._failure(component, f"exited (code {code}) before it became healthy")
            ok, last_error = self._probe(component, state)
            if ok:
                log.info("%s healthy after %.1fs", component, time.monotonic() - started)
                return
            time.sleep(_POLL_INTERVAL)
        raise self._failure(
            component,
            f"not healthy after {timeout:.0f}s at {self._health_url(component, state)}: "
            f"{last_error}",
        )

    def _failure(self, component: str, reason: str) -> ComponentFailedError:
        log_path = self.layout.log_path(component)
        return ComponentFailedError(component, log_path, reason, processes.tail(log_path))

    def _wait_for_default_service_account(self, state: ClusterState) -> None:
        """The serviceaccount controller has run: pods can be admitted in `default` now."""
        from kubernetes import client  # noqa: PLC0415
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        def found(core: Any) -> bool:
            try:
                core.read_namespaced_service_account("default", "default")
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            return True

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            self._wait_for(
                CONTROLLER_MANAGER,
                state,
                lambda: found(core),
                HEALTH_TIMEOUTS[CONTROLLER_MANAGER],
                "ServiceAccount default/default was not created",
            )

    def _wait_for(
        self,
        component: str,
        state: ClusterState,
        predicate: Callable[[], bool],
        timeout: float,
        what: str,
    ) -> None:
        record = next(r for r in state.processes if r.component == component)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if not processes.alive(record.pid):
                raise self._failure(component, "exited")
            time.sleep(_POLL_INTERVAL)
        raise self._failure(component, f"{what} within {timeout:.0f}s")

    def _ensure_nodes(self, specs: list[NodeSpec], *, tainted: bool = False) -> None:
        self._create_nodes(specs, wait=True, tainted=tainted)

    def _create_nodes(self, specs: list[NodeSpec], *, wait: bool, tainted: bool = False) -> None:
        from kubernetes import client  # noqa: PLC0415
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            for spec in specs:
                try:
                    body: Any = node_manifest(spec, tainted=tainted)  # plain dicts are fine
                    core.create_node(body)
                    log.info(
                        "registered node %s%s", spec.name, " (Fibre Channel)" if spec.fc else ""
                    )
                except ApiException as error:
                    if error.status != 409:
                        raise ClusterError(
                            f"cannot create node {spec.name}: {error.status} {error.reason}"
                        ) from error
            if not wait:
                return
            pending = {spec.name for spec in specs}
            state = self.state()
            if state is None:
                raise ClusterError(f"cluster {self.name!r} has no state; is it up?")
            started = time.monotonic()

            def all_ready() -> bool:
                for name in sorted(pending):
                    node = core.read_node_status(name)
                    conditions = (node.status.conditions if node.status else None) or []
                    if any(c.type == "Ready" and c.status == "True" for c in conditions):
                        pending.discard(name)
                return not pending

            self._wait_for(
                KWOK, state, all_ready, NODE_READY_TIMEOUT, f"nodes {sorted(pending)} not Ready"
            )
            if specs:
                log.info("%d node(s) Ready after %.1fs", len(specs), time.monotonic() - started)

    # -- health and shutdown --------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.layout.pki(flags.CA_CERT)))
        context.load_cert_chain(
            str(self.layout.pki(flags.ADMIN_CERT)), str(self.layout.pki(flags.ADMIN_KEY))
        )
        return context

    def _probe(self, component: str, state: ClusterState) -> tuple[bool, str]:
        url = self._health_url(component, state)
        if url is None:  # no endpoint (containerd): running is all we can tell
            return True, "running"
        context = self._ssl_context() if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(url, timeout=2.0, context=context) as response:  # noqa: S310
                body = response.read(200).decode(errors="replace")
                return response.status == 200, f"HTTP {response.status} {body}"
        except urllib.error.HTTPError as error:
            return False, f"HTTP {error.code} {error.read(300).decode(errors='replace')}"
        except (OSError, ssl.SSLError) as error:
            return False, str(error)

    def _healthy(self, component: str, state: ClusterState) -> bool:
        return self._probe(component, state)[0]

    def _stop_processes(self, state: ClusterState) -> None:
        marker = str(self.layout.state_dir)
        for record in reversed(state.processes):
            with contextlib.suppress(OSError):
                processes.stop(record, marker)
