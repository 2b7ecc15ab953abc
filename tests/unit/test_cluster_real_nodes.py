"""Pure builders of the real nodes: nothing leaves the machine, and each setting is what it says."""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from hda.cluster import LocalCluster, coredns, flags, host, kubelet, network, node_pki, toml
from hda.cluster.cli import cluster
from hda.cluster.containerd import (
    DEFAULT_HOSTS_DIR,
    KNOWN_REGISTRY_HOSTS,
    SANDBOX_IMAGE,
    ContainerdPaths,
    containerd_config,
    registry_hosts,
    render_config,
)
from hda.cluster.layout import APISERVER, ClusterLayout, Ports
from hda.cluster.manifests import FC_LABELS, NodeSpec, node_manifest
from hda.cluster.real_nodes import node_labels, real_node_names

NET = network.ClusterNetwork("a1b2c3")
# Distinct ports 20001, 20002, ... in field order (registry is 20007).
PORTS = Ports.from_list(list(range(20001, 20001 + Ports.count())))
REGISTRY_URL = "http://127.0.0.1:20007"


def containerd_paths(tmp: Path) -> ContainerdPaths:
    return ContainerdPaths(
        root=tmp / "root",
        state=tmp / "state",
        socket=tmp / "containerd.sock",
        runc_root=tmp / "runc",
        cni_conf_dir=tmp / "cni",
        registry_hosts_dir=tmp / "hosts",
        shim_socket_dir=tmp / "s",
    )


def parsed_containerd(tmp: Path, *, restrict: bool = True, systemd: bool = False) -> dict:  # type: ignore[type-arg]
    config = containerd_config(
        containerd_paths(tmp), systemd_cgroup=systemd, restrict_oom_score_adj=restrict
    )
    return tomllib.loads(render_config(config))


# -- containerd ---------------------------------------------------------------------------------


def test_containerd_socket_is_set_where_version_4_reads_it(tmp_path: Path) -> None:
    config = parsed_containerd(tmp_path)
    assert config["version"] == 4
    assert "grpc" not in config  # a top-level [grpc] is ignored by version 4
    grpc = config["plugins"]["io.containerd.server.v1.grpc"]
    assert grpc["address"] == str(tmp_path / "containerd.sock")


def test_containerd_dirs_are_per_node(tmp_path: Path) -> None:
    config = parsed_containerd(tmp_path)
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert config["root"] == str(tmp_path / "root")
    assert config["state"] == str(tmp_path / "state")
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["Root"] == str(tmp_path / "runc")
    assert runtime["cni"]["conf_dir"] == str(tmp_path / "cni")
    assert runtime["netns_mounts_under_state_dir"] is True
    assert config["plugins"]["io.containerd.shim.v1.manager"]["socket_dir"] == str(tmp_path / "s")


def test_containerd_disables_nri_and_pins_the_sandbox(tmp_path: Path) -> None:
    config = parsed_containerd(tmp_path)
    assert config["plugins"]["io.containerd.nri.v1.nri"]["disable"] is True
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == SANDBOX_IMAGE
    assert images["registry"]["config_path"] == str(tmp_path / "hosts")


@pytest.mark.parametrize("restrict", [True, False])
def test_oom_score_adj_restriction_follows_the_probe(tmp_path: Path, restrict: bool) -> None:
    runtime = parsed_containerd(tmp_path, restrict=restrict)["plugins"][
        "io.containerd.cri.v1.runtime"
    ]
    assert runtime["restrict_oom_score_adj"] is restrict


def test_systemd_cgroup_driver_reaches_runc(tmp_path: Path) -> None:
    runtime = parsed_containerd(tmp_path, systemd=True)["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True


def test_every_registry_host_maps_to_the_loopback_registry() -> None:
    hosts = registry_hosts(REGISTRY_URL)
    assert DEFAULT_HOSTS_DIR in hosts
    assert {"docker.io", "ghcr.io", "registry.k8s.io", "quay.io"} <= set(KNOWN_REGISTRY_HOSTS)
    for directory, text in hosts.items():
        document = tomllib.loads(text)
        assert document["server"] == REGISTRY_URL, directory
        assert list(document["host"]) == [REGISTRY_URL], directory
        urls = [document["server"], *document["host"]]
        assert all(
            ipaddress.ip_address(url.split("//")[1].split(":")[0]).is_loopback for url in urls
        )


# -- CNI and the guard --------------------------------------------------------------------------


def test_cni_never_masquerades_and_uses_the_node_bridge(tmp_path: Path) -> None:
    conflist = network.cni_conflist(NET, 1, tmp_path)
    bridge = conflist["plugins"][0]
    assert [plugin["type"] for plugin in conflist["plugins"]] == ["bridge"]
    assert bridge["ipMasq"] is False
    assert bridge["bridge"] == NET.bridge(1)
    ranges = bridge["ipam"]["ranges"][0][0]
    assert ranges == {"subnet": NET.pod_subnet(1), "gateway": NET.node_ip(1)}


def test_node_subnets_are_distinct_and_inside_the_cluster_cidr() -> None:
    cidr = ipaddress.IPv4Network(NET.cluster_cidr)
    subnets = [ipaddress.IPv4Network(NET.pod_subnet(i)) for i in range(3)]
    assert len(set(subnets)) == 3
    assert all(subnet.subnet_of(cidr) for subnet in subnets)
    assert NET.node_ip(0) == str(subnets[0][1])


def test_bridge_names_fit_an_interface_name() -> None:
    assert len(NET.bridge(network.MAX_REAL_NODES - 1)) <= 15
    assert NET.bridge(0).startswith("hda-a1b2c3-")


def test_guard_has_no_masquerade_and_drops_traffic_leaving_the_bridges() -> None:
    rules = network.guard_rules(NET, apiserver_port=6443)
    text = [" ".join(rule) for rule in rules]
    assert not any("MASQUERADE" in line or "SNAT" in line for line in text)
    forward = [rule for rule in rules if rule[0] == NET.forward_chain]
    # The only ACCEPT is bridge-to-bridge; anything else in or out of a bridge is dropped.
    assert forward[0] == [
        NET.forward_chain,
        "-i",
        "hda-a1b2c3-+",
        "-o",
        "hda-a1b2c3-+",
        "-j",
        "ACCEPT",
    ]
    assert [NET.forward_chain, "-i", "hda-a1b2c3-+", "-j", "DROP"] in forward
    assert [NET.forward_chain, "-o", "hda-a1b2c3-+", "-j", "DROP"] in forward


def test_input_guard_shields_the_apiserver_port_and_node_addresses() -> None:
    rules = network.guard_rules(NET, apiserver_port=6443)
    inbound = [rule for rule in rules if rule[0] == NET.input_chain]
    assert inbound[:2] == [
        [NET.input_chain, "-i", "lo", "-j", "RETURN"],
        [NET.input_chain, "-i", "hda-a1b2c3-+", "-j", "RETURN"],
    ]
    assert [NET.input_chain, "-d", NET.cluster_cidr, "-j", "DROP"] in inbound
    assert [NET.input_chain, "-p", "tcp", "--dport", "6443", "-j", "DROP"] in inbound


def test_guard_chains_are_jumped_to_from_forward_and_input() -> None:
    assert network.guard_jumps(NET) == [
        ("FORWARD", NET.forward_chain),
        ("INPUT", NET.input_chain),
    ]


def test_cluster_key_depends_on_the_state_dir(tmp_path: Path) -> None:
    assert network.cluster_key(tmp_path / "a") != network.cluster_key(tmp_path / "b")
    assert network.cluster_key(tmp_path / "a") == network.cluster_key(tmp_path / "a")


# -- apiserver ----------------------------------------------------------------------------------


def _apiserver_flags(tmp_path: Path, advertise: str | None) -> dict[str, str]:
    layout = ClusterLayout.for_name("unit", state_root=tmp_path)
    argv = flags.component_args(APISERVER, Path("/bin"), layout, PORTS, advertise)
    return dict(arg.partition("=")[::2] for arg in argv[1:])


def test_apiserver_dials_kubelets_by_internal_ip_with_a_client_cert(tmp_path: Path) -> None:
    args = _apiserver_flags(tmp_path, None)
    assert args["--kubelet-preferred-address-types"] == "InternalIP"
    assert args["--kubelet-client-certificate"].endswith(flags.KUBELET_CLIENT_CERT)
    assert args["--kubelet-client-key"].endswith(flags.KUBELET_CLIENT_KEY)
    assert args["--kubelet-certificate-authority"].endswith(flags.CA_CERT)


def test_kwok_only_apiserver_stays_on_loopback(tmp_path: Path) -> None:
    args = _apiserver_flags(tmp_path, None)
    assert args["--bind-address"] == "127.0.0.1"
    assert args["--endpoint-reconciler-type"] == "none"


def test_real_node_apiserver_advertises_the_first_bridge(tmp_path: Path) -> None:
    args = _apiserver_flags(tmp_path, NET.apiserver_address)
    assert args["--advertise-address"] == NET.node_ip(0)
    assert args["--endpoint-reconciler-type"] == "lease"


# -- CoreDNS ------------------------------------------------------------------------------------


def test_corefile_has_no_upstream() -> None:
    text = coredns.corefile(listen_address="10.1.0.1", kubeconfig=Path("/k"), ready_port=1)
    assert "forward" not in text
    assert "proxy" not in text
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in text
    assert "bind 10.1.0.1" in text


def test_kube_dns_service_points_at_coredns_on_the_bridge() -> None:
    service, slice_ = coredns.dns_manifests("10.1.0.1")
    assert service["spec"]["clusterIP"] == network.DNS_SERVICE_IP
    assert "selector" not in service["spec"]
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
    assert slice_["endpoints"][0]["addresses"] == ["10.1.0.1"]
    assert {port["protocol"] for port in slice_["ports"]} == {"UDP", "TCP"}


# -- kubelet and kube-proxy ---------------------------------------------------------------------


def kubelet_settings(systemd: bool = False) -> kubelet.KubeletSettings:
    return kubelet.KubeletSettings(
        node_name="real-node-0",
        node_ip="10.1.0.1",
        pod_cidr="10.1.0.0/24",
        port=30001,
        healthz_port=30002,
        root_dir=Path("/var/lib/hda/k/real-node-0/kubelet"),
        cert_dir=Path("/s/certs"),
        pod_logs_dir=Path("/var/lib/hda/k/real-node-0/pod-logs"),
        containerd_socket=Path("/run/hda/k/real-node-0/containerd.sock"),
        client_ca_file=Path("/s/ca.crt"),
        tls_cert_file=Path("/s/serving.crt"),
        tls_key_file=Path("/s/serving.key"),
        cgroup_root="/hda-k-real-node-0",
        systemd_cgroup=systemd,
        labels=node_labels(True),
    )


def test_kubelet_authenticates_and_authorizes_every_request() -> None:
    config = kubelet.kubelet_config(kubelet_settings())
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authentication"]["webhook"]["enabled"] is True
    assert config["authentication"]["x509"]["clientCAFile"] == "/s/ca.crt"
    assert config["authorization"]["mode"] == "Webhook"
    assert config["readOnlyPort"] == 0
    assert config["tlsCertFile"] == "/s/serving.crt"


def test_kubelet_uses_cluster_dns_only() -> None:
    config = kubelet.kubelet_config(kubelet_settings())
    assert config["clusterDNS"] == [network.DNS_SERVICE_IP]
    assert config["resolvConf"] == ""


def test_kubelet_runs_on_cgroup_v1_without_swap_checks() -> None:
    config = kubelet.kubelet_config(kubelet_settings())
    assert config["failCgroupV1"] is False
    assert config["failSwapOn"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == "/hda-k-real-node-0"
    assert kubelet.kubelet_config(kubelet_settings(systemd=True))["cgroupDriver"] == "systemd"


def test_kubelet_eviction_and_image_gc_are_relaxed() -> None:
    config = kubelet.kubelet_config(kubelet_settings())
    assert config["evictionHard"]["nodefs.available"] == "1%"
    assert config["evictionHard"]["memory.available"] == "50Mi"
    assert config["imageGCHighThresholdPercent"] == 99


def test_kubelet_argv_names_node_ip_dirs_and_fc_labels() -> None:
    settings = kubelet_settings()
    argv = kubelet.kubelet_args(Path("/bin"), settings, Path("/s/k.yaml"), Path("/s/k.conf"))
    args = dict(arg.partition("=")[::2] for arg in argv[1:])
    assert args["--node-ip"] == "10.1.0.1"
    assert args["--hostname-override"] == "real-node-0"
    assert args["--root-dir"] == str(settings.root_dir)
    labels = dict(item.split("=") for item in args["--node-labels"].split(","))
    assert labels.items() >= FC_LABELS.items()


def test_kube_proxy_iptables_mode_without_sysctl_writes() -> None:
    config = kubelet.kube_proxy_config(
        kubeconfig=Path("/k"),
        hostname="real-node-0",
        cluster_cidr=NET.cluster_cidr,
        healthz_port=1,
        metrics_port=2,
    )
    assert config["mode"] == "iptables"
    assert config["clusterCIDR"] == NET.cluster_cidr
    assert config["nodePortAddresses"] == [NET.cluster_cidr]
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["iptables"]["masqueradeAll"] is False
    assert config["healthzBindAddress"].startswith("127.0.0.1:")


# -- identities ---------------------------------------------------------------------------------


def test_kubelet_identities() -> None:
    client = node_pki.kubelet_client_request("real-node-0")
    assert client.subject == "/O=system:nodes/CN=system:node:real-node-0"
    assert client.client
    assert not client.server
    serving = node_pki.kubelet_serving_request("real-node-0", "10.1.0.1")
    assert serving.server
    assert serving.ip_addresses == ("10.1.0.1",)


def test_apiserver_kubelet_client_is_bound_to_the_kubelet_api_admin_role() -> None:
    bindings = [m for m in node_pki.rbac_manifests() if m["kind"] == "ClusterRoleBinding"]
    binding = next(b for b in bindings if b["roleRef"]["name"] == "system:kubelet-api-admin")
    assert binding["subjects"][0]["name"] == flags.KUBELET_CLIENT_COMMON_NAME


def test_coredns_may_only_list_and_watch() -> None:
    role = next(m for m in node_pki.rbac_manifests() if m["kind"] == "ClusterRole")
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"list", "watch"}


# -- node names, kwok taint, host probe, TOML ---------------------------------------------------


def test_real_node_names_put_fc_first_and_never_clash_with_kwok() -> None:
    assert real_node_names(3, 1) == [
        ("real-fc-node-0", True),
        ("real-node-0", False),
        ("real-node-1", False),
    ]


def test_real_fc_nodes_cannot_exceed_real_nodes() -> None:
    with pytest.raises(ValueError, match="--real-fc-nodes"):
        real_node_names(1, 2)


def test_kwok_nodes_are_tainted_only_beside_real_nodes() -> None:
    spec = NodeSpec("node-0", fc=False)
    assert node_manifest(spec)["spec"] == {}
    taints = node_manifest(spec, tainted=True)["spec"]["taints"]
    assert taints == [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]


FIT_HOST = host.HostFacts(
    euid=0,
    effective_capabilities=(1 << 41) - 1,
    cgroup_v2=False,
    systemd_pid1=False,
    has_kmsg=True,
    overlayfs=True,
    br_netfilter=True,
    missing_tools=(),
    missing_cni_plugins=(),
)


def test_a_fit_host_has_no_problems() -> None:
    assert host.host_problems(FIT_HOST) == []


def test_host_probe_names_everything_missing() -> None:
    unfit = dataclasses.replace(
        FIT_HOST,
        euid=1000,
        effective_capabilities=0,
        has_kmsg=False,
        missing_tools=("runc",),
        missing_cni_plugins=("bridge",),
    )
    text = "\n".join(host.host_problems(unfit))
    for expected in ("root", "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "/dev/kmsg", "runc", "bridge"):
        assert expected in text


def test_sys_resource_capability_is_read_from_the_mask() -> None:
    without = dataclasses.replace(FIT_HOST, effective_capabilities=0x000001FFFEFFFFFF)
    assert not without.has_capability(host.CAP_SYS_RESOURCE)
    assert FIT_HOST.has_capability(host.CAP_SYS_RESOURCE)


def test_systemd_driver_only_on_cgroup_v2_under_systemd() -> None:
    assert not FIT_HOST.systemd_cgroup_driver
    assert dataclasses.replace(FIT_HOST, cgroup_v2=True, systemd_pid1=True).systemd_cgroup_driver
    assert not dataclasses.replace(FIT_HOST, cgroup_v2=True).systemd_cgroup_driver


def test_toml_round_trips_nested_tables_and_quoted_keys() -> None:
    document = {
        "version": 4,
        "plugins": {"io.containerd.x": {"a": True, "list": ["x", "y"], "n": {"k": "v"}}},
        "host": {"http://127.0.0.1:5000": {"capabilities": ["pull"]}},
    }
    assert tomllib.loads(toml.dumps(document)) == document


def test_toml_rejects_values_it_cannot_write() -> None:
    with pytest.raises(TypeError, match=r"a\.b"):
        toml.dumps({"a": {"b": None}})


# -- command line -------------------------------------------------------------------------------


def test_cli_rejects_more_real_fc_nodes_than_real_nodes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cluster,
        ["up", "--name", "unit", "--real-nodes", "1", "--real-fc-nodes", "2"],
        env={"HDA_STATE_DIR": str(tmp_path)},
    )
    assert result.exit_code == 2
    assert "--real-fc-nodes" in result.output
    assert not (tmp_path / "clusters").exists()  # nothing was started or written


def test_local_cluster_rejects_bad_real_node_counts_before_starting(tmp_path: Path) -> None:
    plane = LocalCluster("unit", state_root=tmp_path)
    with pytest.raises(ValueError, match=r"--real-fc-nodes \(2\) cannot exceed --real-nodes \(1\)"):
        plane.up(nodes=0, fc_nodes=0, real_nodes=1, real_fc_nodes=2)
    assert plane.state() is None


def test_cgroup_roots_are_found_in_cgroupfs_and_systemd_slice_form() -> None:
    assert kubelet.cgroup_root("a1b2c3", "real-node-0") == "/hda-a1b2c3-real-node-0"
    assert kubelet.cgroup_root_prefixes("a1b2c3") == ("/hda-a1b2c3-", "/hda_a1b2c3_")


def test_check_names_root_when_run_without_it() -> None:
    """`hda cluster check` as an unprivileged user (setpriv drops root and every capability)."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed for this test"
    result = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         sys.executable, "-m", "hda", "cluster", "check"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "real nodes need root (running as uid 65534)" in result.stderr
    assert "missing capabilities:" in result.stderr
