"""Real nodes: a kubelet with its own containerd per node, plus kube-proxy and CoreDNS per host.

`RealNodes` writes each node's files (from the pure builders of `containerd`, `kubelet`,
`coredns`, `network`, `node_pki`), starts the processes through `processes.start`, and removes
everything at `down`: processes (including containerd's shims and the containers, found by
their cgroups), mounts, bridges, iptables chains, cgroup dirs and the few fixed system paths the
upstream programs write. `teardown` is idempotent and also runs before an `up`, so a cluster
that was SIGKILLed comes back.

Where things live:
- configs, kubeconfigs and certificates: `<state dir>/nodes/<node>/` (process command lines
  mention the state dir, which is how `processes.is_ours` recognises them);
- node data (images, pods, volumes): `/var/lib/hda/<key>/<node>/`, runtime state and sockets:
  `/run/hda/<key>/<node>/` (short, so unix socket paths stay below 108 bytes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from hda.cluster import (
    coredns,
    flags,
    host,
    kubelet,
    network,
    node_pki,
    oci,
    pki,
    processes,
    storage,
)
from hda.cluster.containerd import (
    SANDBOX_REPOSITORY,
    SANDBOX_TAG,
    ContainerdPaths,
    containerd_args,
    containerd_config,
    render_config,
    write_registry_hosts,
)
from hda.cluster.errors import ClusterError
from hda.cluster.layout import (
    CONTAINERD,
    COREDNS,
    KUBE_PROXY,
    KUBELET,
    PAUSE,
    ClusterLayout,
    Ports,
)
from hda.cluster.manifests import FC_LABELS
from hda.cluster.network import ClusterNetwork

log = logging.getLogger(__name__)

#: Labels every real node carries (kwok nodes carry `type: kwok`).
REAL_NODE_LABELS: Final[dict[str, str]] = {"hda.shitops.dev/node-kind": "real"}
#: Fixed system paths the kubelet writes whatever its root dir (removed at `down`).
KUBELET_DEVICE_PLUGINS: Final = Path("/var/lib/kubelet/device-plugins")
CONTAINER_LOG_LINKS: Final = Path("/var/log/containers")
CNI_RESULTS: Final = Path("/var/lib/cni/results")


@dataclass(frozen=True)
class RealNodeRecord:
    """One real node as `state.json` records it."""

    name: str
    fc: bool
    index: int
    kubelet_port: int
    kubelet_healthz_port: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RealNodeRecord:
        return cls(
            name=str(data["name"]),
            fc=bool(data["fc"]),
            index=int(data["index"]),
            kubelet_port=int(data["kubelet_port"]),
            kubelet_healthz_port=int(data["kubelet_healthz_port"]),
        )


def real_node_names(count: int, fc_count: int) -> list[tuple[str, bool]]:
    """(name, fc): the first `fc_count` are Fibre Channel labelled. Distinct from kwok names."""
    if count < 0 or fc_count < 0:
        raise ValueError("real node counts must not be negative")
    if fc_count > count:
        raise ValueError(f"--real-fc-nodes ({fc_count}) cannot exceed --real-nodes ({count})")
    if count > network.MAX_REAL_NODES:
        raise ValueError(f"at most {network.MAX_REAL_NODES} real nodes")
    return [(f"real-fc-node-{i}", True) for i in range(fc_count)] + [
        (f"real-node-{i}", False) for i in range(count - fc_count)
    ]


def node_labels(fc: bool) -> dict[str, str]:
    return {**REAL_NODE_LABELS, **(FC_LABELS if fc else {})}


@dataclass(frozen=True)
class NodeFiles:
    """Paths of one real node."""

    config_dir: Path
    data_dir: Path
    run_dir: Path

    @property
    def containerd(self) -> ContainerdPaths:
        return ContainerdPaths(
            root=self.data_dir / "containerd",
            state=self.run_dir / "containerd",
            socket=self.run_dir / "containerd.sock",
            runc_root=self.run_dir / "runc",
            cni_conf_dir=self.config_dir / "cni",
            registry_hosts_dir=self.config_dir / "registry-hosts",
            shim_socket_dir=self.run_dir / "s",
        )

    @property
    def containerd_config(self) -> Path:
        return self.config_dir / "containerd.toml"

    @property
    def kubelet_config(self) -> Path:
        return self.config_dir / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.config_dir / "kubelet.kubeconfig"

    @property
    def kubelet_root(self) -> Path:
        return self.data_dir / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.data_dir / "pod-logs"

    @property
    def cni_ipam(self) -> Path:
        return self.data_dir / "cni-ipam"


class RealNodes:
    """The real nodes of one cluster (the plane calls this; it holds no state of its own)."""

    def __init__(self, layout: ClusterLayout) -> None:
        self.layout = layout
        self.network = ClusterNetwork(network.cluster_key(layout.state_dir))

    # -- names and paths ------------------------------------------------------------------------

    def files(self, node_name: str) -> NodeFiles:
        return NodeFiles(
            config_dir=self.layout.nodes_dir / node_name,
            data_dir=self.network.data_root / node_name,
            run_dir=self.network.run_root / node_name,
        )

    @staticmethod
    def containerd_component(node_name: str) -> str:
        return f"{CONTAINERD}-{node_name}"

    @staticmethod
    def kubelet_component(node_name: str) -> str:
        return f"{KUBELET}-{node_name}"

    @property
    def volumes_dir(self) -> Path:
        """Backing files of the FC stand-in LUNs and the default class's directories."""
        return self.network.data_root / "volumes"

    @property
    def shared_dir(self) -> Path:
        return self.layout.nodes_dir / "shared"

    # -- host checks and network ----------------------------------------------------------------

    @staticmethod
    def check_host() -> host.HostFacts:
        facts = host.gather_facts()
        problems = host.host_problems(facts)
        if problems:
            raise ClusterError(
                "this host cannot run real nodes:\n- "
                + "\n- ".join(problems)
                + "\n(use kwok nodes only: `hda cluster up` without --real-nodes)"
            )
        return facts

    def prepare_network(self, records: list[RealNodeRecord], apiserver_port: int) -> dict[str, str]:
        """Bridges, forwarding and the guard; the previous sysctl values."""
        network.check_subnets_free(self.network, len(records))
        for record in records:
            network.create_bridge(self.network, record.index)
        network.install_guard(self.network, apiserver_port)
        return network.enable_forwarding()

    # -- files ----------------------------------------------------------------------------------

    def _kubeconfig(self, path: Path, server: str, cert: str, key: str, user: str) -> None:
        pki.write_kubeconfig(
            path,
            self.layout.pki_dir,
            cluster_name=self.layout.name,
            server=server,
            cert=cert,
            key=key,
            user=user,
        )

    def write_shared_files(self, server: str, ports: Ports, first_node: str) -> None:
        for request in node_pki.shared_requests():
            pki.ensure_leaf(self.layout.pki_dir, request)
        shared = self.shared_dir
        shared.mkdir(parents=True, exist_ok=True)
        self._kubeconfig(
            shared / "kube-proxy.kubeconfig",
            server,
            node_pki.KUBE_PROXY_CERT,
            node_pki.KUBE_PROXY_KEY,
            "kube-proxy",
        )
        self._kubeconfig(
            shared / "coredns.kubeconfig",
            server,
            node_pki.COREDNS_CERT,
            node_pki.COREDNS_KEY,
            "coredns",
        )
        proxy = kubelet.kube_proxy_config(
            kubeconfig=shared / "kube-proxy.kubeconfig",
            hostname=first_node,
            cluster_cidr=self.network.cluster_cidr,
            healthz_port=ports.kube_proxy_healthz,
            metrics_port=ports.kube_proxy_metrics,
        )
        (shared / "kube-proxy.yaml").write_text(yaml.safe_dump(proxy, sort_keys=False))
        (shared / "Corefile").write_text(
            coredns.corefile(
                listen_address=self.network.dns_address,
                kubeconfig=shared / "coredns.kubeconfig",
                ready_port=ports.coredns_ready,
            )
        )

    def write_node_files(
        self,
        record: RealNodeRecord,
        *,
        server: str,
        registry_url: str,
        facts: host.HostFacts,
    ) -> None:
        files = self.files(record.name)
        pki_dir = self.layout.pki_dir
        node_ip = self.network.node_ip(record.index)
        client = node_pki.kubelet_client_request(record.name)
        serving = node_pki.kubelet_serving_request(record.name, node_ip)
        for request in (client, serving):
            pki.ensure_leaf(pki_dir, request)
        containerd_paths = files.containerd
        for directory in (
            files.config_dir,
            files.data_dir,
            files.run_dir,
            files.kubelet_root,
            files.pod_logs,
            files.cni_ipam,
            containerd_paths.cni_conf_dir,
            containerd_paths.registry_hosts_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        config = containerd_config(
            containerd_paths,
            systemd_cgroup=facts.systemd_cgroup_driver,
            restrict_oom_score_adj=not facts.has_capability(host.CAP_SYS_RESOURCE),
        )
        files.containerd_config.write_text(render_config(config))
        write_registry_hosts(containerd_paths.registry_hosts_dir, registry_url)
        conflist = network.cni_conflist(self.network, record.index, files.cni_ipam)
        (containerd_paths.cni_conf_dir / "10-hda.conflist").write_text(
            json.dumps(conflist, indent=2)
        )
        self._kubeconfig(
            files.kubelet_kubeconfig, server, client.cert_file, client.key_file, record.name
        )
        settings = self.kubelet_settings(record, facts)
        files.kubelet_config.write_text(
            yaml.safe_dump(kubelet.kubelet_config(settings), sort_keys=False)
        )
        if not settings.systemd_cgroup:  # under systemd the kubelet asks systemd for its slice
            host.prepare_cgroup_root(settings.cgroup_root)

    def kubelet_settings(
        self, record: RealNodeRecord, facts: host.HostFacts
    ) -> kubelet.KubeletSettings:
        files = self.files(record.name)
        serving = node_pki.kubelet_serving_request(record.name, self.network.node_ip(record.index))
        return kubelet.KubeletSettings(
            node_name=record.name,
            node_ip=self.network.node_ip(record.index),
            pod_cidr=self.network.pod_subnet(record.index),
            port=record.kubelet_port,
            healthz_port=record.kubelet_healthz_port,
            root_dir=files.kubelet_root,
            cert_dir=files.config_dir / "kubelet-certs",
            pod_logs_dir=files.pod_logs,
            containerd_socket=files.containerd.socket,
            client_ca_file=self.layout.pki(flags.CA_CERT),
            tls_cert_file=self.layout.pki(serving.cert_file),
            tls_key_file=self.layout.pki(serving.key_file),
            cgroup_root=kubelet.cgroup_root(self.network.key, record.name),
            systemd_cgroup=facts.systemd_cgroup_driver,
            labels=node_labels(record.fc),
        )

    # -- processes ------------------------------------------------------------------------------

    def start_containerd(self, bin_dir: Path, record: RealNodeRecord) -> processes.ProcessRecord:
        files = self.files(record.name)
        component = self.containerd_component(record.name)
        return processes.start(
            component,
            containerd_args(bin_dir, files.containerd_config),
            self.layout.log_path(component),
            cwd=self.layout.state_dir,
        )

    def wait_containerd(self, record: RealNodeRecord, process: processes.ProcessRecord) -> None:
        socket_path = self.files(record.name).containerd.socket
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if socket_path.exists():
                return
            if not processes.alive(process.pid):
                break
            time.sleep(0.1)
        raise ClusterError(
            f"containerd of {record.name} did not open {socket_path} "
            f"(log: {process.log})\n{processes.tail(Path(process.log))}"
        )

    def start_kubelet(self, bin_dir: Path, record: RealNodeRecord) -> processes.ProcessRecord:
        files = self.files(record.name)
        component = self.kubelet_component(record.name)
        settings = self.kubelet_settings(record, host.gather_facts())
        return processes.start(
            component,
            kubelet.kubelet_args(bin_dir, settings, files.kubelet_config, files.kubelet_kubeconfig),
            self.layout.log_path(component),
            cwd=self.layout.state_dir,
        )

    def start_kube_proxy(self, bin_dir: Path) -> processes.ProcessRecord:
        return processes.start(
            KUBE_PROXY,
            kubelet.kube_proxy_args(bin_dir, self.shared_dir / "kube-proxy.yaml"),
            self.layout.log_path(KUBE_PROXY),
            cwd=self.layout.state_dir,
        )

    def start_coredns(self, bin_dir: Path) -> processes.ProcessRecord:
        return processes.start(
            COREDNS,
            coredns.coredns_args(bin_dir, self.shared_dir / "Corefile"),
            self.layout.log_path(COREDNS),
            cwd=self.layout.state_dir,
        )

    @staticmethod
    def push_pause_image(bin_dir: Path, registry_url: str) -> str:
        layer = oci.layer_from_files({"pause": ((bin_dir / PAUSE).read_bytes(), 0o755)})
        settings = oci.ImageSettings(entrypoint=("/pause",), user="65535:65535")
        return oci.push(registry_url, SANDBOX_REPOSITORY, SANDBOX_TAG, [layer], settings)

    # -- teardown -------------------------------------------------------------------------------

    def leftovers_exist(self) -> bool:
        return (
            self.network.data_root.exists()
            or self.network.run_root.exists()
            or bool(network.our_bridges(self.network))
        )

    def teardown(self) -> list[str]:
        """Remove everything real nodes left on the host; what could not be removed."""
        problems: list[str] = []
        markers = [
            str(self.network.run_root) + "/",
            str(self.network.data_root) + "/",
            str(self.layout.nodes_dir) + "/",
        ]
        killed = host.kill_processes_mentioning(markers)
        if killed:
            log.info("killed %d leftover node process(es): %s", len(killed), killed)
        prefixes = kubelet.cgroup_root_prefixes(self.network.key)
        for cgroup in [c for p in prefixes for c in host.cgroup_roots_with_prefix(p)]:
            remaining = host.remove_cgroup_root(cgroup)
            problems += [f"cgroup {path} remains" for path in remaining]
        mount_roots = [self.network.data_root, self.network.run_root, self.layout.nodes_dir]
        problems += [f"cannot unmount {mount}" for mount in host.unmount_under(mount_roots)]
        if not problems:  # never delete below a mount that is still there
            storage.detach_loop_devices(self.volumes_dir)
            for data in (self.network.data_root, self.network.run_root):
                shutil.rmtree(data, ignore_errors=True)
                with contextlib.suppress(OSError):  # /var/lib/hda, /run/hda when empty
                    data.parent.rmdir()
        network.remove_guard(self.network)
        network.remove_kube_chains()
        network.delete_bridges(self.network)
        self._remove_system_leftovers()
        return problems

    def _remove_system_leftovers(self) -> None:
        data_root = str(self.network.data_root)
        # Symlinks the kubelets made to their pods' logs.
        if CONTAINER_LOG_LINKS.is_dir():
            for link in CONTAINER_LOG_LINKS.iterdir():
                with contextlib.suppress(OSError):
                    if link.is_symlink() and os.readlink(link).startswith(data_root):
                        link.unlink()
        # CNI results of our pods: their network namespace lies under our run root.
        if CNI_RESULTS.is_dir():
            for result in CNI_RESULTS.iterdir():
                if _cni_result_netns(result).startswith(f"{self.network.run_root}/"):
                    result.unlink(missing_ok=True)
        if KUBELET_DEVICE_PLUGINS.is_dir():
            for entry in KUBELET_DEVICE_PLUGINS.iterdir():
                if entry.is_socket() and str(entry) not in _listening_unix_sockets():
                    entry.unlink(missing_ok=True)
        # The kubelets and containerd create these; an empty one is of no use to anybody.
        for directory in (
            KUBELET_DEVICE_PLUGINS,
            KUBELET_DEVICE_PLUGINS.parent,
            CONTAINER_LOG_LINKS,
            CNI_RESULTS,
            CNI_RESULTS.parent,
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()


def _cni_result_netns(path: Path) -> str:
    """The network namespace a cached CNI result belongs to ('' when unreadable)."""
    try:
        return str(json.loads(path.read_text()).get("netns", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _listening_unix_sockets() -> set[str]:
    """Paths of unix sockets some process still has bound (from /proc/net/unix)."""
    paths = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 8:
                paths.add(fields[7].removeprefix("@"))
    return paths
