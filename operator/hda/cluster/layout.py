"""Where a local cluster keeps its state, and the ports its components listen on.

Pure: nothing here touches the file system or the network.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

ETCD: Final = "etcd"
APISERVER: Final = "kube-apiserver"
CONTROLLER_MANAGER: Final = "kube-controller-manager"
SCHEDULER: Final = "kube-scheduler"
KWOK: Final = "kwok"
KUBECTL: Final = "kubectl"

REGISTRY: Final = "registry"
KUBELET: Final = "kubelet"
KUBE_PROXY: Final = "kube-proxy"
CONTAINERD: Final = "containerd"
CONTAINERD_SHIM: Final = "containerd-shim-runc-v2"
CTR: Final = "ctr"
COREDNS: Final = "coredns"
PAUSE: Final = "pause"

#: Components in start order; `down` stops them in reverse.
COMPONENTS: Final[tuple[str, ...]] = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER, KWOK)
#: Every binary the plane and its tests need (a kwok-only cluster needs nothing more).
BINARIES: Final[tuple[str, ...]] = (*COMPONENTS, KUBECTL)
#: What real nodes need on top of `BINARIES` (the loopback registry starts whenever it is there).
REAL_NODE_BINARIES: Final[tuple[str, ...]] = (
    REGISTRY,
    KUBELET,
    KUBE_PROXY,
    CONTAINERD,
    CONTAINERD_SHIM,
    CTR,
    COREDNS,
    PAUSE,
)

DEFAULT_NAME: Final = "hda"
_NAME_RE: Final = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


class InvalidClusterNameError(ValueError):
    """The cluster name is not a short DNS label."""


def validate_name(name: str) -> str:
    """Return `name` if it is a DNS label of at most 40 characters, else raise."""
    if not _NAME_RE.match(name):
        raise InvalidClusterNameError(
            f"invalid cluster name {name!r}: use 1-40 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def default_state_root(environ: dict[str, str] | None = None) -> Path:
    """`$HDA_STATE_DIR`, else `$XDG_STATE_HOME/hda`, else `~/.local/state/hda`."""
    env = os.environ if environ is None else environ
    if env.get("HDA_STATE_DIR"):
        return Path(env["HDA_STATE_DIR"]).expanduser()
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]).expanduser() / "hda"
    return Path.home() / ".local" / "state" / "hda"


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one cluster; all are chosen free at `up` time."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int
    registry: int
    kube_proxy_healthz: int
    kube_proxy_metrics: int
    coredns_ready: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ports:
        return cls(**{key: int(data[key]) for key in cls.__dataclass_fields__})

    @classmethod
    def from_list(cls, ports: list[int]) -> Ports:
        return cls(*ports)

    @classmethod
    def count(cls) -> int:
        return len(cls.__dataclass_fields__)


@dataclass(frozen=True)
class ClusterLayout:
    """The files of one cluster under its state directory."""

    name: str
    state_dir: Path

    @classmethod
    def for_name(cls, name: str, state_root: Path | None = None) -> ClusterLayout:
        root = default_state_root() if state_root is None else state_root
        return cls(name=validate_name(name), state_dir=root / "clusters" / name)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def kwok_config(self) -> Path:
        return self.state_dir / "kwok.yaml"

    @property
    def etcd_data_dir(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def nodes_dir(self) -> Path:
        """Per real node: its configs, kubeconfigs and certificates (data lives elsewhere)."""
        return self.state_dir / "nodes"

    @property
    def audit_policy(self) -> Path:
        return self.state_dir / "audit-policy.yaml"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines), when the plane audits some users."""
        return self.logs_dir / "audit.log"

    @property
    def registry_dir(self) -> Path:
        return self.state_dir / "registry"

    def log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    def pki(self, file_name: str) -> Path:
        """A file in the PKI directory, e.g. `pki("ca.crt")`."""
        return self.pki_dir / file_name
