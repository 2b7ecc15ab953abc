"""containerd for one real node: its config (version 4), the registry hosts, its command line.

Every node's containerd has its own root, state, socket, runc root and CNI configuration, so
several run side by side. NRI is off (it listens on a fixed system socket). The registry
configuration sends EVERY registry host to the plane's loopback registry: `_default` covers
hosts without a directory of their own, and the well-known public hosts get an explicit
directory as well, so neither a default nor a special case of containerd's ever reaches the
internet. The repository a pull requests is the reference's path after normalisation:
- `ghcr.io/shitops/hyperdrive-accelerator:0.1.0` -> `shitops/hyperdrive-accelerator:0.1.0`;
- `valkey/valkey:9.1` (docker.io) -> `valkey/valkey:9.1`;
- `busybox:1` (a docker.io official image) -> `library/busybox:1`;
- `registry.k8s.io/pause:3.10` -> `pause:3.10`.
(Verified against the registry's access log by tests/e2e/test_real_nodes.py.)

`restrict_oom_score_adj` is set only when this process lacks CAP_SYS_RESOURCE: without that
capability runc cannot write the negative `oom_score_adj` the kubelet asks for, and every pod
sandbox fails with "can't get final child's PID from pipe: EOF".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hda.cluster import toml
from hda.cluster.layout import CONTAINERD

#: The sandbox image every pod uses; served by the loopback registry as repository `pause`.
SANDBOX_IMAGE: Final = "registry.k8s.io/pause:3.10"
SANDBOX_REPOSITORY: Final = "pause"
SANDBOX_TAG: Final = "3.10"
DEFAULT_HOSTS_DIR: Final = "_default"
#: Public registries given an explicit hosts.toml besides `_default` (belt and braces).
KNOWN_REGISTRY_HOSTS: Final[tuple[str, ...]] = (
    "docker.io",
    "registry-1.docker.io",
    "index.docker.io",
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "ghcr.io",
    "quay.io",
    "public.ecr.aws",
    "mcr.microsoft.com",
)
RUNC: Final = "/usr/sbin/runc"
CNI_BIN_DIR: Final = "/usr/lib/cni"


@dataclass(frozen=True)
class ContainerdPaths:
    root: Path
    state: Path
    socket: Path
    runc_root: Path
    cni_conf_dir: Path
    registry_hosts_dir: Path
    shim_socket_dir: Path
    """At most 42 characters (containerd's limit); the default is the shared /run/containerd/s."""


def containerd_config(
    paths: ContainerdPaths,
    *,
    systemd_cgroup: bool,
    restrict_oom_score_adj: bool,
) -> dict[str, Any]:
    """The node's `config.toml` as a dict (version 4 layout)."""
    cri_runtime = "io.containerd.cri.v1.runtime"
    return {
        "version": 4,
        "root": str(paths.root),
        "state": str(paths.state),
        "plugins": {
            # A top-level [grpc] table is ignored by version 4: the socket would be the
            # system's /run/containerd/containerd.sock.
            "io.containerd.server.v1.grpc": {"address": str(paths.socket)},
            "io.containerd.server.v1.ttrpc": {"address": f"{paths.socket}.ttrpc"},
            "io.containerd.nri.v1.nri": {"disable": True},
            "io.containerd.shim.v1.manager": {"socket_dir": str(paths.shim_socket_dir)},
            "io.containerd.cri.v1.images": {
                "snapshotter": "overlayfs",
                "pinned_images": {"sandbox": SANDBOX_IMAGE},
                "registry": {"config_path": str(paths.registry_hosts_dir)},
            },
            cri_runtime: {
                "restrict_oom_score_adj": restrict_oom_score_adj,
                "netns_mounts_under_state_dir": True,
                "enable_selinux": False,
                "containerd": {
                    "default_runtime_name": "runc",
                    "runtimes": {
                        "runc": {
                            "runtime_type": "io.containerd.runc.v2",
                            "options": {
                                "BinaryName": RUNC,
                                "Root": str(paths.runc_root),
                                "SystemdCgroup": systemd_cgroup,
                            },
                        }
                    },
                },
                "cni": {"bin_dirs": [CNI_BIN_DIR], "conf_dir": str(paths.cni_conf_dir)},
            },
            "io.containerd.grpc.v1.cri": {
                "stream_server_address": "127.0.0.1",
                "stream_server_port": "0",
            },
        },
    }


def render_config(config: dict[str, Any]) -> str:
    return toml.dumps(config)


def registry_hosts(registry_url: str) -> dict[str, str]:
    """`hosts.toml` per host directory: every registry host resolves to `registry_url`."""
    document = toml.dumps(
        {
            "server": registry_url,
            "host": {registry_url: {"capabilities": ["pull", "resolve"]}},
        }
    )
    return dict.fromkeys((DEFAULT_HOSTS_DIR, *KNOWN_REGISTRY_HOSTS), document)


def write_registry_hosts(hosts_dir: Path, registry_url: str) -> None:
    for directory, document in registry_hosts(registry_url).items():
        (hosts_dir / directory).mkdir(parents=True, exist_ok=True)
        (hosts_dir / directory / "hosts.toml").write_text(document)


def containerd_args(bin_dir: Path, config_path: Path) -> list[str]:
    return [str(bin_dir / CONTAINERD), f"--config={config_path}", "--log-level=info"]
