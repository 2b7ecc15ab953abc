"""Base root filesystems made from Debian's packages with mmdebstrap, cached as image layers.

They are local stand-ins for the public base images (`python:3.x-slim-bookworm`, the Debian base
of `valkey/valkey`): the same distribution, built here from Debian's own packages, so that no
image is fetched from a public registry. `mmdebstrap_args` and `cache_key` are pure;
`base_layer` runs mmdebstrap once per recipe and keeps the gzip'd layer under the cache
directory, so warm runs skip it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hda.cluster.errors import ClusterError
from hda.cluster.oci import LAYER_MEDIA_TYPE, Blob, Layer, layer_from_tar

log = logging.getLogger(__name__)

DEBIAN_SUITE: Final = "bookworm"
#: Bump when the recipe changes in a way the argv does not show.
_RECIPE_REVISION: Final = 1
# Without this hook, minbase pulls in `usrmerge` and perl (127 MB instead of 78 MB).
_MERGED_USR_HOOKS: Final = "/usr/share/mmdebstrap/hooks/merged-usr"
# Documentation and translations are of no use in a container; copyright files stay.
_DPKG_EXCLUDES: Final = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
_MMDEBSTRAP_TIMEOUT: Final = 900.0


@dataclass(frozen=True)
class BaseRecipe:
    """A Debian minbase root filesystem plus `packages`, then `customize_hooks` (shell, `$1`
    is the root directory, run by mmdebstrap on the host)."""

    name: str
    packages: tuple[str, ...]
    customize_hooks: tuple[str, ...] = ()


#: Debian's Python (3.11.2 in bookworm), with venv and the CA bundle: for the project's Dockerfile.
PYTHON_BASE: Final = BaseRecipe("python", ("python3", "python3-venv", "ca-certificates"))

#: For the Valkey image: Debian's redis-cli answers as `valkey-cli` (it speaks the same protocol
#: and reads REDISCLI_AUTH, as the pod's probes need); `valkey` is uid/gid 999 as upstream.
VALKEY_BASE: Final = BaseRecipe(
    "valkey",
    ("redis-tools",),
    (
        'chroot "$1" groupadd --system --gid 999 valkey',
        'chroot "$1" useradd --system --uid 999 --gid 999 --home-dir /data --no-create-home'
        " --shell /usr/sbin/nologin valkey",
        'install -d -o 999 -g 999 -m 0750 "$1/data"',
        'ln -s redis-cli "$1/usr/bin/valkey-cli"',
    ),
)


def mmdebstrap_args(recipe: BaseRecipe, output: Path) -> list[str]:
    """mmdebstrap writing `recipe`'s root filesystem as an uncompressed tar to `output`.

    No mirror is named: mmdebstrap then uses Debian's default mirror with the updates and
    security suites.
    """
    args = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--format=tar",
        # Device nodes belong to the runtime's /dev, not to an image layer.
        "--skip=output/dev",
        f"--hook-dir={_MERGED_USR_HOOKS}",
        '--aptopt=Apt::Install-Recommends "false"',
        *(f"--dpkgopt={option}" for option in _DPKG_EXCLUDES),
    ]
    if recipe.packages:
        args.append("--include=" + ",".join(recipe.packages))
    args.extend(f"--customize-hook={hook}" for hook in recipe.customize_hooks)
    args.extend([DEBIAN_SUITE, str(output)])
    return args


def cache_key(recipe: BaseRecipe) -> str:
    """Changes whenever the recipe (and so the argv) changes."""
    argv = mmdebstrap_args(recipe, Path("OUTPUT"))
    digest = hashlib.sha256(json.dumps([_RECIPE_REVISION, argv]).encode()).hexdigest()
    return f"{recipe.name}-{DEBIAN_SUITE}-{digest[:12]}"


def _layer_paths(cache_dir: Path, recipe: BaseRecipe) -> tuple[Path, Path]:
    stem = cache_dir / "rootfs" / cache_key(recipe)
    return stem.with_suffix(".tar.gz"), stem.with_suffix(".json")


def cached_layer(cache_dir: Path, recipe: BaseRecipe) -> Layer | None:
    """The layer built earlier for this exact recipe, if it is in the cache and intact."""
    blob_path, meta_path = _layer_paths(cache_dir, recipe)
    try:
        meta = json.loads(meta_path.read_text())
        data = blob_path.read_bytes()
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    blob = Blob(LAYER_MEDIA_TYPE, data)
    if blob.digest != meta.get("digest"):
        log.warning("cached layer %s does not match its digest; rebuilding", blob_path)
        return None
    return Layer(blob=blob, diff_id=str(meta["diff_id"]))


def base_layer(cache_dir: Path, recipe: BaseRecipe) -> Layer:
    """The root filesystem of `recipe` as one layer: from the cache, else made by mmdebstrap."""
    cached = cached_layer(cache_dir, recipe)
    if cached is not None:
        log.info("base %s: cached (%s)", recipe.name, cache_key(recipe))
        return cached
    blob_path, meta_path = _layer_paths(cache_dir, recipe)
    blob_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=blob_path.parent, prefix=".mmdebstrap-") as scratch:
        tar_path = Path(scratch) / "rootfs.tar"
        argv = mmdebstrap_args(recipe, tar_path)
        log.info("base %s: running %s", recipe.name, " ".join(argv))
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=_MMDEBSTRAP_TIMEOUT, check=False
            )
        except FileNotFoundError as error:
            raise ClusterError(
                "mmdebstrap is not installed: `apt-get install -y mmdebstrap`"
            ) from error
        except subprocess.TimeoutExpired as error:
            raise ClusterError(
                f"mmdebstrap for {recipe.name} took more than {_MMDEBSTRAP_TIMEOUT:.0f}s"
            ) from error
        if result.returncode != 0:
            tail = "\n".join(result.stderr.splitlines()[-15:])
            raise ClusterError(
                f"mmdebstrap for base {recipe.name} failed (exit {result.returncode}):\n{tail}"
            )
        layer = layer_from_tar(tar_path.read_bytes())
    # Blob first, then the metadata that vouches for it: a crash leaves no half-written entry.
    _write_atomically(blob_path, layer.blob.data)
    meta = {"digest": layer.blob.digest, "diff_id": layer.diff_id, "recipe": recipe.name}
    _write_atomically(meta_path, json.dumps(meta, indent=2).encode())
    return layer


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
