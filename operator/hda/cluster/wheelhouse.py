"""The wheelhouse the runtime image installs from: built on the host for the image's interpreter.

pip inside a build step would need the network and a CA the base image does not carry, so pip
runs here instead and the Dockerfile installs with `--no-index` from this directory (the named
build context `wheels`). The wheels are for the image's Python (Debian bookworm: CPython 3.11.2),
not the host's. `pip download --python-version` picks wheels for that interpreter but still
evaluates environment markers against the host's, so requirements such as redis's
`async-timeout; python_full_version < "3.11.3"` are missed; `missing_requirements` finds them
with the target's markers and they are downloaded in a further round.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from hda.cluster.errors import ClusterError

log = logging.getLogger(__name__)

#: The interpreter of the Python base (Debian bookworm's python3).
TARGET_PYTHON: Final = "3.11.2"
#: glibc 2.36 in bookworm: every manylinux tag up to 2_36 loads there.
_MANYLINUX_PLATFORMS: Final = (
    "manylinux2014_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_34_x86_64",
    "linux_x86_64",
)
_MAX_ROUNDS: Final = 5
_PIP_TIMEOUT: Final = 600.0
_RECIPE_REVISION: Final = 1


def target_environment(python: str = TARGET_PYTHON) -> dict[str, str]:
    """PEP 508 marker values of the image's interpreter (CPython on Linux x86_64)."""
    major_minor = ".".join(python.split(".")[:2])
    return {
        "python_version": major_minor,
        "python_full_version": python,
        "implementation_name": "cpython",
        "implementation_version": python,
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "platform_release": "",
        "platform_version": "",
    }


def project_requirements(pyproject_text: str) -> list[str]:
    """What the Dockerfile installs from the wheelhouse: the project's dependencies, and the
    build backend that `pip install .` needs (build isolation, no index)."""
    data = tomllib.loads(pyproject_text)
    try:
        dependencies = list(data["project"]["dependencies"])
        build_requires = list(data["build-system"]["requires"])
    except KeyError as error:
        raise ClusterError(f"pyproject.toml has no {error.args[0]!r} table or key") from error
    return [*dependencies, *build_requires]


@dataclass(frozen=True)
class Distribution:
    """A wheel's name, version and Requires-Dist lines."""

    name: str
    version: Version
    requires: tuple[str, ...]


def wheel_distribution(wheel: Path) -> Distribution:
    """Name, version and requirements from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        metadata_names = [
            name
            for name in archive.namelist()
            if name.count("/") == 1 and name.endswith(".dist-info/METADATA")
        ]
        if len(metadata_names) != 1:
            raise ClusterError(f"{wheel.name}: expected one .dist-info/METADATA")
        text = archive.read(metadata_names[0]).decode()
    message = email.parser.Parser().parsestr(text, headersonly=True)
    try:
        version = Version(message["Version"])
    except (InvalidVersion, TypeError) as error:
        raise ClusterError(f"{wheel.name}: bad Version {message['Version']!r}") from error
    return Distribution(
        name=canonicalize_name(message["Name"]),
        version=version,
        requires=tuple(message.get_all("Requires-Dist") or ()),
    )


def missing_requirements(
    roots: list[str], distributions: list[Distribution], environment: dict[str, str]
) -> list[str]:
    """Requirements reachable from `roots` under `environment` that no distribution satisfies.

    Extras are followed: `redis[hiredis]` brings in redis's requirements marked
    `extra == "hiredis"`.
    """
    by_name = {dist.name: dist for dist in distributions}
    missing: list[str] = []
    seen: set[tuple[str, str]] = set()
    pending: list[tuple[str, str]] = [(line, "") for line in roots]
    while pending:
        line, extra = pending.pop()
        if (line, extra) in seen:
            continue
        seen.add((line, extra))
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            raise ClusterError(f"invalid requirement {line!r}: {error}") from error
        if requirement.marker is not None and not requirement.marker.evaluate(
            {**environment, "extra": extra}
        ):
            continue
        dist = by_name.get(canonicalize_name(requirement.name))
        if dist is None or not requirement.specifier.contains(dist.version, prereleases=True):
            missing.append(str(requirement).split(";")[0].strip())
            continue
        for wanted_extra in ("", *sorted(requirement.extras)):
            pending.extend((child, wanted_extra) for child in dist.requires)
    return sorted(set(missing))


def pip_download_args(python: str, dest: Path, requirements: list[str]) -> list[str]:
    """`pip download` of binary wheels for the image's interpreter, not the host's."""
    args = [python, "-m", "pip", "download", "--quiet", "--dest", str(dest)]
    args += ["--only-binary=:all:", "--implementation", "cp", "--python-version", TARGET_PYTHON]
    args += ["--abi", "cp" + "".join(TARGET_PYTHON.split(".")[:2])]
    for platform in _MANYLINUX_PLATFORMS:
        args += ["--platform", platform]
    return [*args, *requirements]


def cache_key(requirements: list[str]) -> str:
    payload = json.dumps([_RECIPE_REVISION, TARGET_PYTHON, _MANYLINUX_PLATFORMS, requirements])
    return "wheels-" + hashlib.sha256(payload.encode()).hexdigest()[:12]


def _distributions(directory: Path) -> list[Distribution]:
    return [wheel_distribution(wheel) for wheel in sorted(directory.glob("*.whl"))]


def _pip_download(dest: Path, requirements: list[str]) -> None:
    argv = pip_download_args(sys.executable, dest, requirements)
    log.info("wheelhouse: %s", " ".join(argv))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=_PIP_TIMEOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-15:])
        raise ClusterError(f"pip download failed (exit {result.returncode}):\n{tail}")


def build_wheelhouse(project_root: Path, cache_dir: Path) -> Path:
    """A directory of wheels covering the project's requirements on the image's interpreter.

    Cached by the requirement list: warm runs (and code-only changes) reuse it unchanged, so
    BuildKit's dependency layer stays cached too.
    """
    requirements = project_requirements((project_root / "pyproject.toml").read_text())
    final = cache_dir / "wheels" / cache_key(requirements)
    complete = final.with_name(final.name + ".complete")
    if complete.is_file() and final.is_dir():
        log.info("wheelhouse: cached (%s)", final.name)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    environment = target_environment()
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".wheels-") as scratch:
        work = Path(scratch)
        wanted = requirements
        for _ in range(_MAX_ROUNDS):
            _pip_download(work, wanted)
            wanted = missing_requirements(requirements, _distributions(work), environment)
            if not wanted:
                break
            log.info("wheelhouse: for Python %s also %s", TARGET_PYTHON, ", ".join(wanted))
        else:
            raise ClusterError(
                f"wheelhouse still misses {', '.join(wanted)} after {_MAX_ROUNDS} rounds"
            )
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
        # The temporary directory is gone now; recreate it so its cleanup does not fail.
        work.mkdir()
    complete.write_text(json.dumps(requirements))
    return final
