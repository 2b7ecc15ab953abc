"""Fixtures of the images tier: a registry on loopback, the images `hda cluster images` builds,
pushed into it, and runc to run them the way a kubelet would (read-only root, numeric user, no
capabilities, /tmp as tmpfs).

Needs root, mmdebstrap, runc and the pinned `registry`, `buildkitd` and `buildctl`. The first
run builds the Debian bases (about a minute each); later runs reuse ~/.cache/hda/images.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hda.api.images import BUILTIN_RUNTIME_IMAGE
from hda.cluster import images, oci, processes
from hda.cluster.binaries import REPO_ROOT, find_bin_dir
from hda.cluster.registry import (
    REGISTRY,
    registry_args,
    registry_config,
    registry_env,
    registry_health_url,
    registry_url,
)
from hda.runtime.embedded import free_port

_CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.images)


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return find_bin_dir((*images.IMAGE_BINARIES, REGISTRY))


@pytest.fixture(scope="session")
def registry(bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """distribution's registry on a free loopback port, storage in a temporary directory."""
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(yaml.safe_dump(registry_config(root / "storage", port)))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in registry_env().items():
            patch.setenv(key, value)
        record = processes.start(REGISTRY, registry_args(bin_dir, config), root / "log", root)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(registry_health_url(port), timeout=2):  # noqa: S310
                break
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline or not processes.alive(record.pid):
                processes.stop(record, marker=str(config))
                pytest.fail(f"registry not ready:\n{processes.tail(root / 'log')}")
            time.sleep(0.1)
    yield registry_url(port)
    processes.stop(record, marker=str(config))


@pytest.fixture(scope="session")
def built(registry: str, bin_dir: Path) -> list[images.BuiltImage]:
    """What `hda cluster images --registry URL` pushes (same function, default cache)."""
    return images.build_images(registry, bin_dir, REPO_ROOT)


@dataclass(frozen=True)
class Image:
    """A pulled image, unpacked into a root filesystem."""

    config: dict[str, Any]
    rootfs: Path
    manifest: dict[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = self.config["config"]
        return settings


def pull_and_unpack(registry: str, repository: str, tag: str, into: Path) -> Image:
    pulled = oci.pull(registry, repository, tag)
    oci.unpack(pulled, into)
    return Image(config=pulled.config, rootfs=into, manifest=pulled.manifest)


@pytest.fixture(scope="session")
def runtime_image(
    built: list[images.BuiltImage], registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Image:
    repository, tag = images.repository_and_tag(BUILTIN_RUNTIME_IMAGE)
    return pull_and_unpack(registry, repository, tag, tmp_path_factory.mktemp("runtime") / "root")


@pytest.fixture(scope="session")
def valkey_image(
    built: list[images.BuiltImage], registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Image:
    return pull_and_unpack(
        registry, images.VALKEY_REPOSITORY, "9.1", tmp_path_factory.mktemp("valkey") / "root"
    )


def runc_spec(
    image: Image,
    args: list[str],
    *,
    env: list[str] | None = None,
    tmpfs: tuple[str, ...] = ("/tmp",),
    read_only_binds: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """An OCI runtime spec as a kubelet with a restricted securityContext would ask for:
    the image's user, env and working directory, a read-only root, no capabilities, no new
    privileges, /tmp (and `tmpfs`) as tmpfs owned by the user, as an emptyDir or a volume with
    fsGroup would be, its own network namespace (loopback only)."""
    user, _, group = str(image.settings.get("User", "0")).partition(":")
    tmpfs_options = ["nosuid", "nodev", "mode=1777", "size=64m"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": int(user), "gid": int(group or user)},
            "args": args,
            "env": [*image.settings.get("Env", []), *(env or [])],
            "cwd": image.settings.get("WorkingDir") or "/",
            "capabilities": {name: [] for name in _CAPABILITY_SETS},
            "noNewPrivileges": True,
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}],
        },
        "root": {"path": str(image.rootfs), "readonly": True},
        "hostname": "image-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": tmpfs_options},
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            *(
                {
                    "destination": path,
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": [*tmpfs_options, f"uid={user}", f"gid={group or user}"],
                }
                for path in tmpfs
            ),
            *(
                {
                    "destination": destination,
                    "type": "bind",
                    "source": str(source),
                    "options": ["rbind", "ro", "nosuid", "nodev"],
                }
                for destination, source in (read_only_binds or {}).items()
            ),
        ],
        "linux": {
            "namespaces": [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"],
        },
    }


def run_in_runc(
    image: Image,
    args: list[str],
    tmp_path: Path,
    *,
    env: list[str] | None = None,
    tmpfs: tuple[str, ...] = ("/tmp",),
    read_only_binds: dict[str, Path] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `args` in a container of `image` (see `runc_spec`) and return its output."""
    bundle = tmp_path / f"bundle-{uuid.uuid4().hex[:8]}"
    bundle.mkdir()
    (bundle / "config.json").write_text(
        json.dumps(runc_spec(image, args, env=env, tmpfs=tmpfs, read_only_binds=read_only_binds))
    )
    state = tmp_path / "runc-state"
    container = f"hda-image-test-{uuid.uuid4().hex[:12]}"
    try:
        return subprocess.run(
            ["runc", "--root", str(state), "run", "--bundle", str(bundle), container],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        subprocess.run(
            ["runc", "--root", str(state), "delete", "--force", container],
            capture_output=True,
            timeout=30,
            check=False,
        )
