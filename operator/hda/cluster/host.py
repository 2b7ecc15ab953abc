"""The host side of real nodes: what the machine must offer, cgroups, mounts, stray processes.

`host_problems(facts)` is pure: it names everything missing, so `cluster up --real-nodes` fails
before it changes anything. The rest are the thin helpers `up` and `down` use to prepare and to
remove what the kubelets and containerds leave on the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

#: Capability bits (linux/capability.h) the node components need.
REQUIRED_CAPABILITIES: Final[dict[str, int]] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_FOWNER": 3,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_ADMIN": 21,
}
#: Optional: without it containerd must not ask runc for a negative oom_score_adj.
CAP_SYS_RESOURCE: Final = 24
REQUIRED_TOOLS: Final[tuple[str, ...]] = ("runc", "ip", "iptables", "modprobe")
REQUIRED_CNI_PLUGINS: Final[tuple[str, ...]] = ("bridge", "host-local", "loopback")
CNI_BIN_DIR: Final = Path("/usr/lib/cni")
CGROUP_MOUNT: Final = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class HostFacts:
    euid: int
    effective_capabilities: int
    cgroup_v2: bool
    systemd_pid1: bool
    has_kmsg: bool
    overlayfs: bool
    br_netfilter: bool
    missing_tools: tuple[str, ...]
    missing_cni_plugins: tuple[str, ...]

    def has_capability(self, bit: int) -> bool:
        return bool(self.effective_capabilities >> bit & 1)

    @property
    def systemd_cgroup_driver(self) -> bool:
        """The kubelet and runc use systemd's cgroup driver on cgroup v2 under systemd."""
        return self.cgroup_v2 and self.systemd_pid1


def _effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _module_available(name: str) -> bool:
    if Path("/proc/sys/net/bridge").exists():
        return True
    modprobe = shutil.which("modprobe")
    if modprobe is None:
        return False
    result = subprocess.run([modprobe, "-n", name], capture_output=True, check=False)
    return result.returncode == 0


def gather_facts() -> HostFacts:
    try:
        comm = Path("/proc/1/comm").read_text().strip()
    except OSError:
        comm = ""
    filesystems = Path("/proc/filesystems").read_text()
    return HostFacts(
        euid=os.geteuid(),
        effective_capabilities=_effective_capabilities(),
        cgroup_v2=(CGROUP_MOUNT / "cgroup.controllers").exists(),
        systemd_pid1=comm == "systemd",
        has_kmsg=Path("/dev/kmsg").exists(),
        overlayfs="overlay" in filesystems.split(),
        br_netfilter=_module_available("br_netfilter"),
        missing_tools=tuple(tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None),
        missing_cni_plugins=tuple(
            plugin
            for plugin in REQUIRED_CNI_PLUGINS
            if not os.access(CNI_BIN_DIR / plugin, os.X_OK)
        ),
    )


def host_problems(facts: HostFacts) -> list[str]:
    """Everything that keeps real nodes from running here; empty when the host is fit."""
    problems: list[str] = []
    if facts.euid != 0:
        problems.append(f"real nodes need root (running as uid {facts.euid})")
    missing_caps = [
        name for name, bit in REQUIRED_CAPABILITIES.items() if not facts.has_capability(bit)
    ]
    if missing_caps:
        problems.append(f"missing capabilities: {', '.join(missing_caps)}")
    if not facts.has_kmsg:
        problems.append("/dev/kmsg is missing (the kubelet's OOM watcher reads it)")
    if not facts.overlayfs:
        problems.append("the overlay filesystem is not available (containerd's snapshotter)")
    if not facts.br_netfilter:
        problems.append("the br_netfilter kernel module is not available (ClusterIP Services)")
    if facts.missing_tools:
        problems.append(
            f"missing commands: {', '.join(facts.missing_tools)} "
            "(Debian: apt-get install runc iproute2 iptables kmod)"
        )
    if facts.missing_cni_plugins:
        problems.append(
            f"missing CNI plugins in {CNI_BIN_DIR}: {', '.join(facts.missing_cni_plugins)} "
            "(Debian: apt-get install containernetworking-plugins)"
        )
    return problems


# -- cgroups ------------------------------------------------------------------------------------


def _mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, super options) of every mount in our namespace."""
    entries = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        right_fields = right.split()
        mount_point = fields[4].encode().decode("unicode_escape")
        entries.append((mount_point, right_fields[0], right_fields[-1] if right_fields else ""))
    return entries


def cgroup_hierarchies() -> list[Path]:
    """The mount point of every cgroup hierarchy (v1 controllers, named ones, and v2)."""
    return [
        Path(mount)
        for mount, fstype, _ in _mountinfo()
        if fstype in {"cgroup", "cgroup2"} and mount.startswith(str(CGROUP_MOUNT))
    ]


def prepare_cgroup_root(relative: str) -> None:
    """Create `relative` in every hierarchy (cgroup v1 needs it in all); seed cpuset."""
    for hierarchy in cgroup_hierarchies():
        path = hierarchy / relative.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            target = path / name
            if target.exists() and not target.read_text().strip():
                target.write_text((hierarchy / name).read_text())


def cgroup_roots_with_prefix(prefix: str) -> list[str]:
    """Top-level cgroups (in any hierarchy) whose name starts with `prefix` (e.g. `/hda-ab12-`)."""
    name_prefix = prefix.lstrip("/")
    found: set[str] = set()
    for hierarchy in cgroup_hierarchies():
        with contextlib.suppress(OSError):
            found.update(
                f"/{entry.name}"
                for entry in hierarchy.iterdir()
                if entry.is_dir() and entry.name.startswith(name_prefix)
            )
    return sorted(found)


def remove_cgroup_root(relative: str, timeout: float = 10.0) -> list[str]:
    """Kill every process left in the cgroup tree, then remove it; the dirs that remain."""
    deadline = time.monotonic() + timeout
    remaining: list[str] = []
    while True:
        remaining = []
        for hierarchy in cgroup_hierarchies():
            top = hierarchy / relative.lstrip("/")
            if not top.is_dir():
                continue
            for directory in sorted((path for path, _, _ in os.walk(top)), key=len, reverse=True):
                _kill_cgroup_members(Path(directory))
                try:
                    Path(directory).rmdir()
                except OSError:
                    remaining.append(directory)
        if not remaining or time.monotonic() > deadline:
            return remaining
        time.sleep(0.1)


def _kill_cgroup_members(directory: Path) -> None:
    try:
        pids = (directory / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            continue


# -- mounts -------------------------------------------------------------------------------------

_MNT_DETACH: Final = 2


def mounts_under(prefixes: list[Path]) -> list[str]:
    roots = [str(prefix).rstrip("/") for prefix in prefixes]
    return [
        mount
        for mount, _, _ in _mountinfo()
        if any(mount == root or mount.startswith(root + "/") for root in roots)
    ]


def unmount_under(prefixes: list[Path]) -> list[str]:
    """Lazily unmount everything below `prefixes`, deepest first; what could not be unmounted."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    failed: list[str] = []
    for _ in range(5):  # a mount may be stacked several times (the kubelet's root dir)
        mounts = mounts_under(prefixes)
        if not mounts:
            return []
        failed = []
        for mount in sorted(set(mounts), key=len, reverse=True):
            if libc.umount2(mount.encode(), _MNT_DETACH) != 0:
                failed.append(f"{mount}: {os.strerror(ctypes.get_errno())}")
    return failed


# -- stray processes ----------------------------------------------------------------------------


def processes_mentioning(markers: list[str]) -> list[int]:
    """PIDs (other than ours) whose command line contains one of `markers`."""
    found = []
    own = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        text = raw.replace(b"\0", b" ").decode(errors="replace")
        if any(marker in text for marker in markers):
            found.append(int(entry.name))
    return found


def kill_processes_mentioning(markers: list[str], timeout: float = 10.0) -> list[int]:
    """SIGKILL the processes `processes_mentioning(markers)` finds and wait until they are gone."""
    pids = processes_mentioning(markers)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        for pid in pids:  # reap our own children, if any
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
        time.sleep(0.05)
    return pids
