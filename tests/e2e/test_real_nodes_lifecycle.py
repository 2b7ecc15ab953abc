"""A crashed plane comes back with `up`, and `down` leaves nothing of the real nodes behind.

These tests take the shared plane down; conftest runs this module after every other e2e test.
"""

from __future__ import annotations

import os
import signal

from hda.cluster import host, kubelet, network, real_nodes
from hda.cluster.real_nodes import RealNodes
from hda.cluster.testing import ClusterHandle


def leftovers(real: RealNodes) -> list[str]:
    net = real.network
    found = [
        f"process {pid}"
        for pid in host.processes_mentioning(
            [str(net.run_root) + "/", str(net.data_root) + "/", str(real.layout.nodes_dir) + "/"]
        )
    ]
    found += [f"mount {m}" for m in host.mounts_under([net.data_root, net.run_root])]
    found += [f"bridge {b}" for b in network.our_bridges(net)]
    found += [f"chain {c}" for c in network.guard_chains_present(net)]
    found += [
        f"cgroup {c}"
        for prefix in kubelet.cgroup_root_prefixes(net.key)
        for c in host.cgroup_roots_with_prefix(prefix)
    ]
    found += [f"dir {d}" for d in (net.data_root, net.run_root) if d.exists()]
    found += [f"iptables chain {c}" for c in network.kube_chains_present()]
    found += [
        f"stray {path}"
        for path in (real_nodes.CONTAINER_LOG_LINKS, real_nodes.CNI_RESULTS)
        if path.is_dir() and any(path.iterdir())
    ]
    return found


def test_up_after_sigkilling_everything_brings_the_nodes_back(
    real_cluster: ClusterHandle, real_node_names: list[str]
) -> None:
    plane = real_cluster.local
    assert plane is not None
    state = plane.state()
    assert state is not None
    marker = [str(plane.layout.state_dir) + "/", str(plane.real.network.run_root) + "/"]
    for pid in host.processes_mentioning(marker):
        os.kill(pid, signal.SIGKILL)
    assert plane.unhealthy_components()
    plane.up(nodes=2, fc_nodes=1, real_nodes=2, real_fc_nodes=1)
    assert plane.is_up()
    ready = real_cluster.kubectl(
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        *(f"node/{name}" for name in real_node_names),
    )
    assert ready.returncode == 0


def test_down_leaves_no_process_mount_bridge_chain_or_cgroup(real_cluster: ClusterHandle) -> None:
    plane = real_cluster.local
    assert plane is not None
    assert leftovers(plane.real)  # the plane is up: there is something to remove
    plane.down(remove_state=False)
    assert leftovers(plane.real) == []
