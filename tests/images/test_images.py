"""The images `hda cluster images` pushes: what the pod specs expect, and that they run as the
kubelet would run them (read-only root, numeric non-root user, no capabilities)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.images.conftest import Image, run_in_runc
from tests.unit.test_specs_support import children, example, find, pod_templates

from hda.api.images import BUILTIN_RUNTIME_IMAGE
from hda.cluster import images, oci, processes
from hda.runtime.embedded import valkey_binary
from hda.specs.configmaps import VALKEY_CONF_KEY
from hda.specs.pods import RUNTIME_UID, VALKEY_UID
from hda.specs.scripts import VALKEY_CLI_AUTH_ENV, VALKEY_PASSWORD_ENV
from hda.specs.statefulsets import VALKEY_READINESS_SCRIPT

NO_CAPABILITIES = "0000000000000000"


#: The runtime containers are named after the `hda` command they run (specs/pods.py).
RUNTIME_COMMANDS = ("ingest", "worker", "output")


def _runtime_containers() -> list[dict[str, object]]:
    hda = example()
    return [
        container
        for _, template in pod_templates(children(hda))
        for container in template["spec"]["containers"]
        if container["name"] in RUNTIME_COMMANDS
    ]


def test_every_image_was_pushed(built: list[images.BuiltImage], registry: str) -> None:
    port = images.registry_port_from_url(registry)
    repository, tag = images.repository_and_tag(BUILTIN_RUNTIME_IMAGE)
    references = {reference for image in built for reference in image.references}
    assert images.image_reference(port, repository, tag) in references
    assert images.image_reference(port, images.VALKEY_REPOSITORY, "9.1") in references
    assert images.image_reference(port, images.PYTHON_BASE_REPOSITORY, "3.11-bookworm") in (
        references
    )
    assert all(image.digest.startswith("sha256:") for image in built)


def test_runtime_image_user_is_the_numeric_non_root_runtime_user(runtime_image: Image) -> None:
    assert runtime_image.settings["User"] == f"{RUNTIME_UID}:{RUNTIME_UID}"


def test_runtime_image_entrypoint_is_the_command_of_every_runtime_container(
    runtime_image: Image,
) -> None:
    containers = _runtime_containers()
    assert containers
    for container in containers:
        assert runtime_image.settings["Entrypoint"] == container["command"]


def test_runtime_image_works_in_tmp(runtime_image: Image) -> None:
    assert runtime_image.settings["WorkingDir"] == "/tmp"


@pytest.mark.parametrize(
    "args", [["--help"], ["ingest", "--help"], ["operator", "--help"]], ids=" ".join
)
def test_hda_runs_from_a_read_only_root_as_uid_10001(
    runtime_image: Image, tmp_path: Path, args: list[str]
) -> None:
    result = run_in_runc(runtime_image, [*runtime_image.settings["Entrypoint"], *args], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_runtime_container_has_no_capabilities_and_the_runtime_uid(
    runtime_image: Image, tmp_path: Path
) -> None:
    script = "id -u; id -g; grep CapEff /proc/self/status"
    result = run_in_runc(runtime_image, ["sh", "-c", script], tmp_path)
    assert result.returncode == 0, result.stderr
    uid, gid, capabilities = result.stdout.splitlines()
    assert (uid, gid) == (str(RUNTIME_UID), str(RUNTIME_UID))
    assert capabilities.split() == ["CapEff:", NO_CAPABILITIES]


def test_a_write_to_the_root_filesystem_fails_read_only(
    runtime_image: Image, tmp_path: Path
) -> None:
    result = run_in_runc(
        runtime_image, ["sh", "-c", "echo x > /tmp/ok && echo x > /probe"], tmp_path
    )
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr


def test_runtime_image_has_no_bytecode_to_write_at_run_time(runtime_image: Image) -> None:
    """compileall ran at build time: every module of the package has its .pyc."""
    package = next((runtime_image.rootfs / "opt/hda/lib").glob("python3*/site-packages/hda"))
    modules = list(package.rglob("*.py"))
    assert modules
    missing = [
        module
        for module in modules
        if not list((module.parent / "__pycache__").glob(f"{module.stem}.cpython-*.pyc"))
    ]
    assert missing == []


def test_python_base_is_labelled_as_a_local_stand_in(registry: str, built: object) -> None:
    pulled = oci.pull(registry, images.PYTHON_BASE_REPOSITORY, images.PYTHON_BASE_TAG)
    labels = pulled.config["config"]["Labels"]
    assert "stand-in" in labels["org.opencontainers.image.description"]
    assert labels["org.opencontainers.image.version"] == "3.11.2"


def test_valkey_image_runs_as_uid_999(valkey_image: Image) -> None:
    assert valkey_image.settings["User"] == f"{VALKEY_UID}:{VALKEY_UID}"


def test_valkey_tags_name_the_same_image(registry: str, valkey_image: Image) -> None:
    full = images.valkey_version(valkey_binary())
    assert oci.fetch_manifest(registry, images.VALKEY_REPOSITORY, full) == valkey_image.manifest


def test_valkey_server_runs_read_only_as_uid_999(valkey_image: Image, tmp_path: Path) -> None:
    result = run_in_runc(valkey_image, ["valkey-server", "--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"v={images.valkey_version(valkey_binary())}" in result.stdout
    assert "v=9.1." in result.stdout


def test_valkey_cli_exists(valkey_image: Image, tmp_path: Path) -> None:
    result = run_in_runc(valkey_image, ["valkey-cli", "--version"], tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_pods_readiness_probe_passes_against_a_password_protected_server(
    valkey_image: Image, tmp_path: Path
) -> None:
    """The StatefulSet's probe script, with the password in REDISCLI_AUTH, as in the pod."""
    script = (
        "valkey-server --port 6379 --bind 127.0.0.1 --dir /data --save '' --appendonly no"
        " --requirepass s3cret >/tmp/server.log 2>&1 &\n"
        "for _ in $(seq 50); do\n"
        f"  if {VALKEY_READINESS_SCRIPT}; then echo ready; exit 0; fi\n"
        "  sleep 0.1\n"
        "done\n"
        "cat /tmp/server.log; exit 1\n"
    )
    result = run_in_runc(
        valkey_image,
        ["sh", "-c", script],
        tmp_path,
        env=[f"{VALKEY_CLI_AUTH_ENV}=s3cret"],
        tmpfs=("/tmp", "/data"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ready")


def test_the_probe_fails_with_a_wrong_password(valkey_image: Image, tmp_path: Path) -> None:
    script = (
        "valkey-server --port 6379 --bind 127.0.0.1 --dir /data --save '' --appendonly no"
        " --requirepass s3cret >/dev/null 2>&1 &\n"
        "sleep 1\n"
        f"{VALKEY_READINESS_SCRIPT}\n"
    )
    result = run_in_runc(
        valkey_image,
        ["sh", "-c", script],
        tmp_path,
        env=[f"{VALKEY_CLI_AUTH_ENV}=wrong"],
        tmpfs=("/tmp", "/data"),
    )
    assert result.returncode != 0


def test_the_statefulsets_valkey_container_starts_with_its_config_and_passes_its_probe(
    valkey_image: Image, tmp_path: Path
) -> None:
    """The Valkey container as the operator specifies it: its command (the start script), its
    valkey.conf from the ConfigMap on a read-only mount, its writable volumes, the password in
    the environment; its readiness probe run beside it, as the kubelet's exec would."""
    objects = children(example())
    container = find(objects, "StatefulSet", "valkey")["spec"]["template"]["spec"]["containers"][0]
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    configmap = find(objects, "ConfigMap", "valkey-config")
    (conf_dir / VALKEY_CONF_KEY).write_text(configmap["data"][VALKEY_CONF_KEY])
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    writable = tuple(path for path, mount in mounts.items() if not mount.get("readOnly"))
    (config_path,) = [path for path, mount in mounts.items() if mount.get("readOnly")]
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["sh", "-c"]
    # "$@" is the container's command, started in the background; then the probe until ready.
    supervisor = (
        '"$@" & for _ in $(seq 100); do\n'
        f"  if sh -c '{probe[2]}'; then echo ready; exit 0; fi\n"
        "  sleep 0.1\n"
        "done\n"
        "exit 1\n"
    )
    result = run_in_runc(
        valkey_image,
        ["sh", "-c", supervisor, "supervisor", *container["command"]],
        tmp_path,
        env=[f'{VALKEY_PASSWORD_ENV}=p\\a"ss word', f'{VALKEY_CLI_AUTH_ENV}=p\\a"ss word'],
        tmpfs=writable,
        read_only_binds={config_path: conf_dir},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ready")


def test_the_build_leaves_no_buildkit_cgroup(built: list[images.BuiltImage]) -> None:
    assert not list(Path("/sys/fs/cgroup").glob("*/buildkit"))
    assert not Path("/sys/fs/cgroup/buildkit").exists()


def test_a_buildkitd_left_by_a_killed_run_is_stopped_by_the_next_run(
    bin_dir: Path, registry: str, tmp_path: Path
) -> None:
    paths = images.BuildkitPaths(tmp_path / "bk")
    port = images.registry_port_from_url(registry)
    leftover = images.start_buildkitd(bin_dir, paths, port)  # never stopped: as after SIGKILL
    fresh = images.start_buildkitd(bin_dir, paths, port)
    try:
        assert not processes.alive(leftover.pid)
        assert processes.is_ours(fresh, marker=str(paths.root))
    finally:
        images.stop_buildkitd(fresh, paths)
    assert not processes.alive(fresh.pid)
    assert not paths.socket.exists()
