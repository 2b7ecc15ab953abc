"""The wheelhouse is complete for the image's interpreter, not the host's."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.version import Version

from hda.cluster import wheelhouse
from hda.cluster.errors import ClusterError
from hda.cluster.wheelhouse import Distribution

ROOT = Path(__file__).resolve().parents[2]
BOOKWORM = wheelhouse.target_environment("3.11.2")
REDIS = Distribution(
    "redis",
    Version("8.1.0"),
    (
        'async-timeout>=4.0.3; python_full_version < "3.11.3"',
        'hiredis>=3.2.0; extra == "hiredis"',
    ),
)


def test_a_requirement_only_the_images_older_python_needs_is_found() -> None:
    missing = wheelhouse.missing_requirements(["redis>=5.2"], [REDIS], BOOKWORM)
    assert missing == ["async-timeout>=4.0.3"]


def test_the_same_requirement_is_not_needed_on_a_newer_python() -> None:
    newer = wheelhouse.target_environment("3.11.7")
    assert wheelhouse.missing_requirements(["redis>=5.2"], [REDIS], newer) == []


def test_extras_are_followed() -> None:
    timeout = Distribution("async-timeout", Version("5.0.1"), ())
    missing = wheelhouse.missing_requirements(["redis[hiredis]>=5.2"], [REDIS, timeout], BOOKWORM)
    assert missing == ["hiredis>=3.2.0"]


def test_a_wheel_of_the_wrong_version_does_not_count() -> None:
    old = Distribution("redis", Version("4.0.0"), ())
    assert wheelhouse.missing_requirements(["redis>=5.2"], [old], BOOKWORM) == ["redis>=5.2"]


def test_names_are_compared_canonically() -> None:
    dist = Distribution("pyyaml", Version("6.0.4"), ())
    assert wheelhouse.missing_requirements(["PyYAML>=6"], [dist], BOOKWORM) == []


def test_an_invalid_requirement_names_itself() -> None:
    with pytest.raises(ClusterError, match="not a requirement"):
        wheelhouse.missing_requirements(["not a requirement"], [], BOOKWORM)


def test_project_requirements_cover_dependencies_and_the_build_backend() -> None:
    requirements = wheelhouse.project_requirements((ROOT / "pyproject.toml").read_text())
    assert "pydantic>=2.7,<3" in requirements
    assert any(line.startswith("setuptools") for line in requirements)


def test_project_requirements_without_a_build_system_is_an_error() -> None:
    with pytest.raises(ClusterError, match="build-system"):
        wheelhouse.project_requirements("[project]\ndependencies = []\n")


def test_pip_downloads_for_cpython_3_11_2_on_manylinux() -> None:
    argv = wheelhouse.pip_download_args("/py", Path("/w"), ["redis"])
    assert argv[:4] == ["/py", "-m", "pip", "download"]
    assert argv[argv.index("--python-version") + 1] == "3.11.2"
    assert argv[argv.index("--abi") + 1] == "cp311"
    assert "--only-binary=:all:" in argv
    assert "manylinux2014_x86_64" in argv
    assert argv[-1] == "redis"
