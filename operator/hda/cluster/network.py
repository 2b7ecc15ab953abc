"""The real nodes' network, and the guard that keeps every packet on this machine.

Each real node gets a Linux bridge that the plane creates, named `hda-<key>-<i>` (`key` is a
short hash of the cluster's state directory, so `down` and a later `up` find the same names; a
cluster name does not fit into the 15 characters of an interface name). The bridge's address
is the node IP (InternalIP) and the gateway of the node's pod subnet. Pods get addresses from
the bridge CNI plugin with host-local IPAM, with `ipMasq: false`: nothing is ever translated to
a host address.

All nodes of a cluster share the host's network namespace, so one kube-proxy programs the
Service rules for all of them (two would rewrite the same `KUBE-*` chains in turn).

The guard (iptables, mangle table, our own chains jumped to first). It lives in mangle because
mangle's FORWARD and INPUT run before filter's and kube-proxy never writes them: in the filter
table kube-proxy keeps prepending jumps (KUBE-FORWARD, KUBE-PROXY-FIREWALL, ...) on later syncs,
and one of those could ACCEPT before our DROP. A DROP in mangle is final whatever filter says.
- `HDA-FWD-<KEY>` in FORWARD accepts packets between the cluster's bridges and drops every
  other packet entering or leaving one of them. With `net.ipv4.ip_forward=1` (needed for
  ClusterIP Services) a pod can therefore reach pods and Services, and nothing beyond.
- `HDA-IN-<KEY>` in INPUT drops packets for the node addresses, and for the apiserver's port,
  unless they come from loopback or one of the cluster's bridges: the apiserver listens on all
  addresses so that pods reach it through the `kubernetes` Service (see `apiserver_args`).
No rule of ours masquerades. kube-proxy marks hairpin Service traffic for masquerade in its own
`KUBE-POSTROUTING` chain; that rewrites a source to a node address on our bridges only, and the
FORWARD guard still drops anything headed elsewhere.

Pure builders (`ClusterNetwork`, `cni_conflist`, `guard_rules`) plus the thin `ip`/`iptables`
runners at the end.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hda.cluster.errors import ClusterError

log = logging.getLogger(__name__)

BRIDGE_PREFIX: Final = "hda-"
#: kube-dns Service address (the 10th of the service range, as kubeadm chooses).
DNS_SERVICE_IP: Final = "10.96.0.10"
CLUSTER_DOMAIN: Final = "cluster.local"
#: Pod subnets are 10.<128..191>.<node>.0/24, the second octet chosen by the cluster key.
_FIRST_OCTET_BASE: Final = 128
_OCTET_CHOICES: Final = 64
MAX_REAL_NODES: Final = 200


def cluster_key(state_dir: Path) -> str:
    """Six hex digits naming this cluster's host-wide objects (bridges, chains, dirs)."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:6]


@dataclass(frozen=True)
class ClusterNetwork:
    """Addresses and names of one cluster's real-node network. Pure."""

    key: str

    @property
    def second_octet(self) -> int:
        return _FIRST_OCTET_BASE + int(self.key, 16) % _OCTET_CHOICES

    @property
    def cluster_cidr(self) -> str:
        """Every pod subnet of the cluster's real nodes (kube-proxy's `clusterCIDR`)."""
        return f"10.{self.second_octet}.0.0/16"

    def pod_subnet(self, index: int) -> str:
        if not 0 <= index < MAX_REAL_NODES:
            raise ValueError(f"real node index {index} out of range 0..{MAX_REAL_NODES - 1}")
        return f"10.{self.second_octet}.{index}.0/24"

    def node_ip(self, index: int) -> str:
        """The bridge address: node InternalIP and pod gateway."""
        return str(ipaddress.ip_network(self.pod_subnet(index))[1])

    def bridge(self, index: int) -> str:
        return f"{self.bridge_prefix}{index}"

    @property
    def bridge_prefix(self) -> str:
        return f"{BRIDGE_PREFIX}{self.key}-"

    @property
    def bridge_wildcard(self) -> str:
        """iptables' interface wildcard for every bridge of this cluster."""
        return f"{self.bridge_prefix}+"

    @property
    def forward_chain(self) -> str:
        return f"HDA-FWD-{self.key.upper()}"

    @property
    def input_chain(self) -> str:
        return f"HDA-IN-{self.key.upper()}"

    @property
    def apiserver_address(self) -> str:
        """Where pods reach the apiserver (the `kubernetes` Service endpoint): node 0's IP."""
        return self.node_ip(0)

    @property
    def dns_address(self) -> str:
        """Where CoreDNS listens (the kube-dns Service endpoint): node 0's IP."""
        return self.node_ip(0)

    @property
    def data_root(self) -> Path:
        """Node data (containerd images, kubelet pods): short paths, unix sockets fit."""
        return Path("/var/lib/hda") / self.key

    @property
    def run_root(self) -> Path:
        return Path("/run/hda") / self.key

    def cni_network_name(self, index: int) -> str:
        return f"hda-{self.key}-{index}"


def cni_conflist(network: ClusterNetwork, index: int, ipam_dir: Path) -> dict[str, Any]:
    """The node's CNI configuration: its bridge, host-local IPAM, never masquerade."""
    subnet = network.pod_subnet(index)
    return {
        "cniVersion": "1.0.0",
        "name": network.cni_network_name(index),
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge(index),
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet, "gateway": network.node_ip(index)}]],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }


def guard_rules(network: ClusterNetwork, apiserver_port: int) -> list[list[str]]:
    """The rules of our two chains (each an `iptables` argv tail for `-A`)."""
    bridges = network.bridge_wildcard
    forward = network.forward_chain
    inbound = network.input_chain
    return [
        [forward, "-i", bridges, "-o", bridges, "-j", "ACCEPT"],
        [forward, "-i", bridges, "-j", "DROP"],
        [forward, "-o", bridges, "-j", "DROP"],
        [inbound, "-i", "lo", "-j", "RETURN"],
        [inbound, "-i", bridges, "-j", "RETURN"],
        [inbound, "-d", network.cluster_cidr, "-j", "DROP"],
        [inbound, "-p", "tcp", "--dport", str(apiserver_port), "-j", "DROP"],
    ]


def guard_jumps(network: ClusterNetwork) -> list[tuple[str, str]]:
    """(built-in chain, our chain): our chain is jumped to first."""
    return [("FORWARD", network.forward_chain), ("INPUT", network.input_chain)]


# -- runners ------------------------------------------------------------------------------------


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def create_bridge(network: ClusterNetwork, index: int) -> None:
    name = network.bridge(index)
    prefix = ipaddress.ip_network(network.pod_subnet(index)).prefixlen
    if _run(["ip", "link", "show", name], check=False).returncode != 0:
        _run(["ip", "link", "add", "name", name, "type", "bridge"])
    _run(["ip", "addr", "replace", f"{network.node_ip(index)}/{prefix}", "dev", name])
    _run(["ip", "link", "set", name, "up"])
    log.info("bridge %s up with %s", name, network.node_ip(index))


def our_bridges(network: ClusterNetwork) -> list[str]:
    """Every link named with this cluster's prefix (bridges and leftover veths' masters)."""
    if shutil.which("ip") is None:
        return []
    result = _run(["ip", "-json", "link", "show"], check=False)
    links: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return [
        str(link["ifname"])
        for link in links
        if str(link.get("ifname", "")).startswith(network.bridge_prefix)
    ]


def delete_bridges(network: ClusterNetwork) -> list[str]:
    removed = our_bridges(network)
    for name in removed:
        _run(["ip", "link", "delete", name], check=False)
    return removed


def check_subnets_free(network: ClusterNetwork, count: int) -> None:
    """Fail when a pod subnet overlaps an address of an interface that is not ours."""
    result = _run(["ip", "-json", "addr", "show"], check=False)
    links: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    wanted = [ipaddress.ip_network(network.pod_subnet(i)) for i in range(count)]
    for link in links:
        if str(link.get("ifname", "")).startswith(network.bridge_prefix):
            continue
        for info in link.get("addr_info", []):
            if info.get("family") != "inet":
                continue
            address = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
            for subnet in wanted:
                if address.network.overlaps(subnet):
                    raise ClusterError(
                        f"pod subnet {subnet} overlaps {address} on {link['ifname']}; "
                        "use another cluster state directory or remove that address"
                    )


#: The table of the guard's chains and jumps (see the module docstring).
GUARD_TABLE: Final = "mangle"


def _guard(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["iptables", "-w", "-t", GUARD_TABLE, *args], check=check)


def install_guard(network: ClusterNetwork, apiserver_port: int) -> None:
    remove_guard(network)
    for chain in (network.forward_chain, network.input_chain):
        _guard("-N", chain)
    for rule in guard_rules(network, apiserver_port):
        _guard("-A", *rule)
    for builtin, chain in guard_jumps(network):
        _guard("-I", builtin, "1", "-j", chain)
    log.info("iptables guard %s/%s installed", network.forward_chain, network.input_chain)


def remove_guard(network: ClusterNetwork) -> None:
    for builtin, chain in guard_jumps(network):
        while _guard("-D", builtin, "-j", chain, check=False).returncode == 0:
            pass
    for chain in (network.forward_chain, network.input_chain):
        _guard("-F", chain, check=False)
        _guard("-X", chain, check=False)


KUBE_CHAIN_PREFIX: Final = "KUBE-"
_TABLES: Final = ("filter", "nat", "mangle")


def remove_kube_chains() -> None:
    """Remove kube-proxy's and the kubelet's `KUBE-*` chains (only one real-node cluster runs
    per host, so they are ours), with the rules that jump to them from the built-in chains."""
    for table in _TABLES:
        rules = _run(["iptables", "-w", "-t", table, "-S"], check=False).stdout.splitlines()
        for rule in rules:
            parts = shlex.split(rule)
            jumps_to_kube = _jump_target(parts).startswith(KUBE_CHAIN_PREFIX)
            if parts[:1] == ["-A"] and not parts[1].startswith(KUBE_CHAIN_PREFIX) and jumps_to_kube:
                _run(["iptables", "-w", "-t", table, "-D", *parts[1:]], check=False)
        chains = [
            parts[1]
            for parts in (shlex.split(rule) for rule in rules)
            if parts[:1] == ["-N"] and parts[1].startswith(KUBE_CHAIN_PREFIX)
        ]
        for chain in chains:
            _run(["iptables", "-w", "-t", table, "-F", chain], check=False)
        for chain in chains:
            _run(["iptables", "-w", "-t", table, "-X", chain], check=False)


def _jump_target(parts: list[str]) -> str:
    return parts[parts.index("-j") + 1] if "-j" in parts[:-1] else ""


def kube_chains_present() -> list[str]:
    found = []
    for table in _TABLES:
        for rule in _run(["iptables", "-w", "-t", table, "-S"], check=False).stdout.splitlines():
            if rule.startswith(f"-N {KUBE_CHAIN_PREFIX}"):
                found.append(f"{table}/{rule.split()[1]}")
    return found


def guard_chains_present(network: ClusterNetwork) -> list[str]:
    return [
        chain
        for chain in (network.forward_chain, network.input_chain)
        if _guard("-S", chain, check=False).returncode == 0
    ]


def list_rules(chain: str, table: str = "filter") -> list[str]:
    """`iptables -t TABLE -S chain` lines (empty when the chain does not exist)."""
    result = _run(["iptables", "-w", "-t", table, "-S", chain], check=False)
    return result.stdout.splitlines() if result.returncode == 0 else []


_SYSCTLS: Final = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
}


def enable_forwarding() -> dict[str, str]:
    """Load br_netfilter, turn on forwarding; the previous sysctl values, to restore at `down`."""
    if not Path("/proc/sys/net/bridge").exists():
        _run(["modprobe", "br_netfilter"])
    previous: dict[str, str] = {}
    for key, value in _SYSCTLS.items():
        path = Path("/proc/sys") / key
        previous[key] = path.read_text().strip()
        if previous[key] != value:
            path.write_text(value)
    return previous


def restore_sysctls(previous: dict[str, str]) -> None:
    for key, value in previous.items():
        path = Path("/proc/sys") / key
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError as error:
            log.warning("cannot restore %s=%s: %s", key, value, error)
