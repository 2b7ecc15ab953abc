"""The Dockerfile and its build context (the image itself cannot be built on every machine).

Checks that every file the Dockerfile copies exists and survives .dockerignore (with Docker's
matching rules: last match wins, `!` re-includes, a pattern matching a parent directory covers
its contents), and that the image is what the chart expects: non-root numeric user, entrypoint
`hda`, no writes outside /tmp.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions, with line continuations joined and comments dropped."""
    result: list[Instruction] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, arguments = logical.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip()))
        logical = ""
    assert not logical, "Dockerfile ends in a line continuation"
    return result


def copy_sources(instruction: Instruction) -> list[str]:
    """The context sources of a COPY/ADD (none for COPY --from=stage)."""
    if instruction.arguments.startswith("["):
        parts: list[str] = json.loads(instruction.arguments)
    else:
        parts = shlex.split(instruction.arguments)
    flags = [part for part in parts if part.startswith("--")]
    if any(flag.startswith("--from") for flag in flags):
        return []
    paths = [part for part in parts if not part.startswith("--")]
    assert len(paths) >= 2, instruction
    return paths[:-1]


@dataclass(frozen=True)
class Pattern:
    regex: re.Pattern[str]
    exclusion: bool


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = "^"
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out += "(.*/)?"
            index += 3
            continue
        if pattern.startswith("**", index):
            out += ".*"
            index += 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", index)
            out += pattern[index : end + 1]
            index = end
        else:
            out += re.escape(char)
        index += 1
    return re.compile(out + "$")


def dockerignore_patterns(text: str) -> list[Pattern]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        line = line.removeprefix("!").strip()
        cleaned = str(Path("/" + line)).lstrip("/") or "."
        patterns.append(Pattern(_pattern_regex(cleaned), exclusion))
    return patterns


def is_ignored(path: str, patterns: list[Pattern]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: length + 1]) for length in range(len(parts))]
    ignored = False
    for pattern in patterns:
        if any(pattern.regex.match(candidate) for candidate in candidates):
            ignored = not pattern.exclusion
    return ignored


def tracked_files(directory: str) -> list[str]:
    result = subprocess.run(
        ["git", "ls-files", "--", directory],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return [line for line in result.stdout.splitlines() if line]


PATTERNS = dockerignore_patterns(DOCKERIGNORE.read_text())
INSTRUCTIONS = instructions(DOCKERFILE.read_text())
SOURCES = [
    source
    for instruction in INSTRUCTIONS
    if instruction.keyword in {"COPY", "ADD"}
    for source in copy_sources(instruction)
]


def test_the_dockerfile_copies_something() -> None:
    assert "pyproject.toml" in SOURCES
    assert any(source.rstrip("/") == "operator" for source in SOURCES)


@pytest.mark.parametrize("source", SOURCES)
def test_copy_source_is_in_the_build_context(source: str) -> None:
    path = ROOT / source
    assert path.exists(), f"COPY {source}: missing from the repository"
    relative = source.rstrip("/")
    assert not is_ignored(relative, PATTERNS), f"COPY {source}: excluded by .dockerignore"
    if path.is_dir():
        files = tracked_files(relative)
        assert files, f"COPY {source}: no tracked files"
        for file in files:
            assert not is_ignored(file, PATTERNS), f"{file} is excluded by .dockerignore"


def test_dockerignore_keeps_caches_and_secrets_out() -> None:
    for path in (
        ".git/config",
        ".venv/bin/python",
        "operator/hda/__pycache__/cli.cpython-312.pyc",
        "operator/hyperdrive_accelerator.egg-info/PKG-INFO",
        "tests/unit/test_chart.py",
        "charts/hda-operator/values.yaml",
        ".env",
    ):
        assert is_ignored(path, PATTERNS), path
    assert not is_ignored("operator/hda/cli.py", PATTERNS)


def test_dockerignore_matcher_follows_docker_rules() -> None:
    patterns = dockerignore_patterns("*.md\n!README.md\ndocs/**/*.png\n/build\n")
    assert is_ignored("CHANGES.md", patterns)
    assert not is_ignored("README.md", patterns)
    assert not is_ignored("docs/README.md", patterns), "* does not cross directories"
    assert is_ignored("docs/a/b/c.png", patterns)
    assert is_ignored("docs/c.png", patterns)
    assert is_ignored("build/lib/x.py", patterns), "a matching parent covers its contents"


def test_package_metadata_the_build_needs_is_copied() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["hda"] == "hda.cli:main"
    readme = project.get("readme")
    if readme is not None:
        assert readme in SOURCES, "pyproject's readme file must be copied for `pip install .`"


def _values(keyword: str) -> list[str]:
    return [item.arguments for item in INSTRUCTIONS if item.keyword == keyword]


def test_image_runs_hda_as_a_non_root_numeric_user() -> None:
    assert _values("ENTRYPOINT") == ['["hda"]']
    users = _values("USER")
    assert users, "no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), "a numeric USER lets kubelet verify runAsNonRoot"
    assert int(user) != 0
    assert not group or (group.isdigit() and int(group) != 0)
    chart_values = yaml.safe_load((ROOT / "charts" / "hda-operator" / "values.yaml").read_text())
    assert chart_values["podSecurityContext"]["runAsUser"] == int(user)


def test_image_uses_a_slim_python_base() -> None:
    build_args = dict(
        item.arguments.split("=", 1)
        for item in INSTRUCTIONS
        if item.keyword == "ARG" and "=" in item.arguments
    )
    final = _values("FROM")[-1].split()[0]
    final = build_args.get(final.removeprefix("${").removesuffix("}"), final)
    assert re.match(r"^python:3\.1[1-9]-slim", final), final


def test_image_works_with_a_read_only_root_filesystem() -> None:
    env = " ".join(_values("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    assert "TMPDIR=/tmp" in env
    run = " ".join(_values("RUN"))
    assert "compileall" in run, "bytecode is compiled at build time, not at run time"


def test_no_syntax_directive_so_buildkit_resolves_no_frontend_image() -> None:
    first_lines = DOCKERFILE.read_text().splitlines()[:5]
    assert not [line for line in first_lines if re.match(r"#\s*syntax\s*=", line)]


def _stage(name: str) -> list[Instruction]:
    """The instructions of the stage `FROM ... AS name`."""
    stages: dict[str, list[Instruction]] = {}
    current: list[Instruction] = []
    for item in INSTRUCTIONS:
        if item.keyword == "FROM":
            current = []
            parts = item.arguments.split()
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages[parts[2]] = current
            continue
        current.append(item)
    return stages[name]


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    build = _stage("build")
    installs_deps = next(
        index for index, item in enumerate(build) if "pip install -r" in item.arguments
    )
    copies_source = next(
        index
        for index, item in enumerate(build)
        if item.keyword == "COPY" and "operator/" in item.arguments
    )
    assert installs_deps < copies_source
    copied_before = [
        source
        for item in build[:installs_deps]
        if item.keyword == "COPY"
        for source in copy_sources(item)
    ]
    assert set(copied_before) <= {"pyproject.toml", "README.md"}


def test_wheels_context_is_optional_and_makes_pip_offline() -> None:
    assert "FROM scratch AS wheels" in [f"FROM {item.arguments}" for item in INSTRUCTIONS]
    pip_runs = [item.arguments for item in INSTRUCTIONS if "pip install" in item.arguments]
    assert len(pip_runs) == 2
    for run in pip_runs:
        assert run.startswith("--mount=type=bind,from=wheels,target=/wheels ")
        assert (
            'if [ -n "$(ls -A /wheels)" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi'
            in run
        )


def test_the_interpreter_is_called_python3_which_every_python_base_has() -> None:
    runs = " ".join(_values("RUN"))
    assert "python3 -m venv /opt/hda" in runs
    assert not re.search(r"(^|[\s;&])python ", runs), "Debian's python3 package has no `python`"
