"""Finding the pinned upstream binaries (built by `hack/build-binaries.sh`)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

from hda.cluster.errors import BinariesNotFoundError
from hda.cluster.layout import BINARIES

log = logging.getLogger(__name__)

#: The repository checkout this package runs from (editable install), if any.
REPO_ROOT: Final = Path(__file__).resolve().parents[3]
BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-binaries.sh"


def missing_binaries(bin_dir: Path, required: tuple[str, ...] = BINARIES) -> list[str]:
    return [name for name in required if not os.access(bin_dir / name, os.X_OK)]


def find_bin_dir(required: tuple[str, ...] = BINARIES, *, build: bool = True) -> Path:
    """The directory holding every binary in `required`.

    In order: `$HDA_BIN_DIR`; the versioned cache reported by `hack/build-binaries.sh` (which
    builds the binaries first when they are missing, unless `build` is false, and is a no-op
    otherwise); the directory of `kube-apiserver` on PATH.
    """
    env_dir = os.environ.get("HDA_BIN_DIR")
    if env_dir:
        path = Path(env_dir).expanduser()
        missing = missing_binaries(path, required)
        if not missing:
            return path
        raise BinariesNotFoundError(f"$HDA_BIN_DIR={path} lacks {', '.join(missing)}")

    if build and BUILD_SCRIPT.is_file():
        log.info("locating binaries with %s (builds them if missing, ~30 min cold)", BUILD_SCRIPT)
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
        )
        if result.returncode != 0:
            raise BinariesNotFoundError(
                f"{BUILD_SCRIPT} failed with exit code {result.returncode}; see its output above"
            )
        lines = result.stdout.strip().splitlines()
        if lines:
            path = Path(lines[-1])
            missing = missing_binaries(path, required)
            if not missing:
                return path
            raise BinariesNotFoundError(f"{BUILD_SCRIPT} reported {path}, which lacks {missing}")

    on_path = shutil.which("kube-apiserver")
    if on_path is not None:
        path = Path(on_path).parent
        if not missing_binaries(path, required):
            return path
    raise BinariesNotFoundError(
        f"cannot find {', '.join(required)}: run `bash {BUILD_SCRIPT}` or set $HDA_BIN_DIR"
    )
