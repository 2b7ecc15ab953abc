"""OCI images from files on this machine, and pushing them to the loopback registry.

The local plane needs a few images that no Dockerfile describes: the pause image (one static
binary) and the base root filesystems made from Debian's packages, which BuildKit then builds the
project's Dockerfile on. `layer_from_*` and `image_blobs` are pure; `push` speaks the registry's
HTTP API (distribution spec v2) and is only ever pointed at 127.0.0.1; `pull` and `unpack` read
an image back into a root filesystem (to inspect and run it in tests).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hda.cluster.errors import ClusterError

MANIFEST_MEDIA_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE: Final = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
_HTTP_TIMEOUT: Final = 60.0


@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes of an image."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass(frozen=True)
class Layer:
    """A gzip'd layer tar and the digest of the uncompressed tar (the config's diff_id)."""

    blob: Blob
    diff_id: str


@dataclass(frozen=True)
class ImageSettings:
    """The parts of an image config a container runtime reads."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: str = ""
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    working_dir: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def layer_from_tar(tar_bytes: bytes) -> Layer:
    """A layer from an uncompressed tar (e.g. the root filesystem mmdebstrap wrote)."""
    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    # mtime=0 keeps the compressed bytes, and so the digest, reproducible.
    compressed = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
    return Layer(blob=Blob(LAYER_MEDIA_TYPE, compressed), diff_id=diff_id)


def layer_from_files(files: dict[str, tuple[bytes, int]]) -> Layer:
    """A layer holding `files`: path inside the image -> (content, mode). Reproducible."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            content, mode = files[path]
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(content)
            info.mode = mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return layer_from_tar(buffer.getvalue())


def image_blobs(layers: list[Layer], settings: ImageSettings) -> tuple[Blob, Blob]:
    """The config and manifest blobs of a linux/amd64 image made of `layers`."""
    container_config: dict[str, Any] = {"Env": list(settings.env)}
    if settings.entrypoint:
        container_config["Entrypoint"] = list(settings.entrypoint)
    if settings.cmd:
        container_config["Cmd"] = list(settings.cmd)
    if settings.user:
        container_config["User"] = settings.user
    if settings.working_dir:
        container_config["WorkingDir"] = settings.working_dir
    if settings.labels:
        container_config["Labels"] = dict(sorted(settings.labels.items()))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    config_blob = Blob(CONFIG_MEDIA_TYPE, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config_blob.descriptor(),
        "layers": [layer.blob.descriptor() for layer in layers],
    }
    return config_blob, Blob(MANIFEST_MEDIA_TYPE, json.dumps(manifest, sort_keys=True).encode())


def _request(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    parsed = urllib.parse.urlsplit(url)
    if parsed.hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise ClusterError(f"refusing to talk to {url}: the registry must be on loopback")
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT) as response:  # noqa: S310
            return response.status, dict(response.headers.items())
    except urllib.error.HTTPError as error:
        if method == "HEAD" and error.code == 404:
            return 404, {}
        body = error.read(500).decode(errors="replace")
        raise ClusterError(f"registry {method} {url}: HTTP {error.code} {body}") from error
    except OSError as error:
        raise ClusterError(f"registry {method} {url}: {error}") from error


def _push_blob(registry: str, repository: str, blob: Blob) -> None:
    base = f"{registry}/v2/{repository}"
    status, _ = _request("HEAD", f"{base}/blobs/{blob.digest}")
    if status == 200:
        return
    _, headers = _request("POST", f"{base}/blobs/uploads/")
    location = headers.get("Location") or headers.get("location")
    if not location:
        raise ClusterError(f"registry {registry} gave no upload location for {repository}")
    upload = urllib.parse.urljoin(f"{registry}/", location)
    separator = "&" if "?" in upload else "?"
    _request(
        "PUT",
        f"{upload}{separator}digest={urllib.parse.quote(blob.digest)}",
        data=blob.data,
        headers={"Content-Type": "application/octet-stream"},
    )


def push(
    registry: str, repository: str, tag: str, layers: list[Layer], settings: ImageSettings
) -> str:
    """Push an image to `registry` (`http://127.0.0.1:PORT`) as `repository:tag`; its digest."""
    config_blob, manifest_blob = image_blobs(layers, settings)
    for blob in [*(layer.blob for layer in layers), config_blob]:
        _push_blob(registry, repository, blob)
    _request(
        "PUT",
        f"{registry}/v2/{repository}/manifests/{tag}",
        data=manifest_blob.data,
        headers={"Content-Type": MANIFEST_MEDIA_TYPE},
    )
    return manifest_blob.digest


INDEX_MEDIA_TYPE: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_MEDIA_TYPE: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST_MEDIA_TYPE: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
_INDEX_TYPES: Final = frozenset({INDEX_MEDIA_TYPE, DOCKER_LIST_MEDIA_TYPE})
_WHITEOUT_PREFIX: Final = ".wh."
_OPAQUE_WHITEOUT: Final = ".wh..wh..opq"
#: Every manifest kind a tag may name (BuildKit pushes an index with attestations).
_MANIFEST_ACCEPT: Final = ", ".join(
    [MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE, DOCKER_LIST_MEDIA_TYPE]
)


@dataclass(frozen=True)
class PulledImage:
    """An image read back from the registry: its manifest, config and compressed layers."""

    manifest: dict[str, Any]
    config: dict[str, Any]
    layers: list[bytes]


def _get(url: str, accept: str = "*/*") -> bytes:
    _request("HEAD", url, headers={"Accept": accept})  # loopback check and a clear 404
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT) as response:  # noqa: S310
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as error:
        raise ClusterError(f"registry GET {url}: HTTP {error.code}") from error
    except OSError as error:
        raise ClusterError(f"registry GET {url}: {error}") from error


def fetch_blob(registry: str, repository: str, digest: str) -> bytes:
    """A blob by digest, checked against it."""
    data = _get(f"{registry}/v2/{repository}/blobs/{digest}")
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ClusterError(f"blob {digest} of {repository} has digest {actual}")
    return data


def fetch_manifest(registry: str, repository: str, reference: str) -> dict[str, Any]:
    """The linux/amd64 image manifest of `repository:reference` (an index is resolved)."""
    accept = _MANIFEST_ACCEPT
    url = f"{registry}/v2/{repository}/manifests/{reference}"
    status, _ = _request("HEAD", url, headers={"Accept": accept})
    if status == 404:
        raise ClusterError(f"{repository}:{reference} is not in the registry {registry}")
    document: dict[str, Any] = json.loads(_get(url, accept))
    if document.get("mediaType") in _INDEX_TYPES:
        for entry in document.get("manifests", []):
            platform = entry.get("platform", {})
            if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
                return fetch_manifest(registry, repository, entry["digest"])
        raise ClusterError(f"{repository}:{reference} has no linux/amd64 image")
    return document


def pull(registry: str, repository: str, reference: str) -> PulledImage:
    manifest = fetch_manifest(registry, repository, reference)
    config = json.loads(fetch_blob(registry, repository, manifest["config"]["digest"]))
    layers = [fetch_blob(registry, repository, layer["digest"]) for layer in manifest["layers"]]
    return PulledImage(manifest=manifest, config=config, layers=layers)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _inside(root: Path, name: str) -> Path:
    """`root/name` with its parent resolved, refusing anything that lands outside `root`
    (`..`, or a symlinked parent such as an absolute `var/run -> /run`)."""
    directory, _, base = posixpath.normpath("/" + name).lstrip("/").rpartition("/")
    parent = (root / directory).resolve()
    if parent != root.resolve() and root.resolve() not in parent.parents:
        raise ClusterError(f"layer entry {name!r} points outside the root filesystem")
    return parent / base


def _keep_mode_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    checked = tarfile.tar_filter(member, dest_path)
    return checked.replace(mode=member.mode, deep=False)


def unpack_layer(layer: bytes, root: Path) -> None:
    """Apply one (gzip'd or plain) layer tar onto `root`, whiteouts included (OCI image spec).

    For inspecting and running images here: nothing is written or removed outside `root`
    (tarfile's `tar` filter checks what is extracted); modes are kept as the layer has them
    (`/tmp` stays 1777, where the filter alone would drop sticky and write bits).
    """
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:*") as tar:
        members = tar.getmembers()
        if any(".." in member.name.split("/") for member in members):
            raise ClusterError("a layer entry contains '..'")
        # Whiteouts hide what lower layers put there, so they apply before this layer's files.
        for member in members:
            path = _inside(root, member.name)
            if path.name == _OPAQUE_WHITEOUT:
                if path.parent.is_dir():
                    for child in path.parent.iterdir():
                        _remove(child)
            elif path.name.startswith(_WHITEOUT_PREFIX):
                _remove(path.with_name(path.name.removeprefix(_WHITEOUT_PREFIX)))
        for member in members:
            path = _inside(root, member.name)
            if path.name.startswith(_WHITEOUT_PREFIX) or path == root.resolve():
                continue
            # A file replacing a symlink or a directory (or the reverse) replaces it outright.
            if path.is_symlink() or (path.exists() and not (path.is_dir() and member.isdir())):
                _remove(path)
            tar.extract(member, root, numeric_owner=True, filter=_keep_mode_filter)


def unpack(image: PulledImage, root: Path) -> None:
    """The image's root filesystem in `root`, its layers applied in order."""
    root.mkdir(parents=True, exist_ok=True)
    for layer in image.layers:
        unpack_layer(layer, root)


def retag(registry: str, repository: str, source_tag: str, new_tag: str) -> str:
    """Give the image `repository:source_tag` a second tag (no blob moves); its digest."""
    manifest = _get(f"{registry}/v2/{repository}/manifests/{source_tag}", _MANIFEST_ACCEPT)
    media_type = str(json.loads(manifest).get("mediaType") or MANIFEST_MEDIA_TYPE)
    _request(
        "PUT",
        f"{registry}/v2/{repository}/manifests/{new_tag}",
        data=manifest,
        headers={"Content-Type": media_type},
    )
    return "sha256:" + hashlib.sha256(manifest).hexdigest()
