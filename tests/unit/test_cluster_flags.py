"""Command lines of the local control plane: every listener on loopback, on its own port."""

from __future__ import annotations

from pathlib import Path

import pytest

from hda.cluster import flags
from hda.cluster.layout import (
    APISERVER,
    COMPONENTS,
    CONTROLLER_MANAGER,
    ETCD,
    KWOK,
    SCHEDULER,
    ClusterLayout,
    InvalidClusterNameError,
    Ports,
    default_state_root,
    validate_name,
)

BIN = Path("/opt/hda-bin")
# Distinct ports 20001, 20002, ... in field order (registry is 20007).
PORTS = Ports.from_list(list(range(20001, 20001 + Ports.count())))


@pytest.fixture
def layout(tmp_path: Path) -> ClusterLayout:
    return ClusterLayout.for_name("unit", state_root=tmp_path)


def args_of(component: str, layout: ClusterLayout) -> dict[str, str]:
    argv = flags.component_args(component, BIN, layout, PORTS)
    assert argv[0] == str(BIN / component)
    parsed: dict[str, str] = {}
    for arg in argv[1:]:
        key, _, value = arg.partition("=")
        assert key not in parsed, f"{component}: {key} given twice"
        parsed[key] = value
    return parsed


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_component_references_the_state_dir(component: str, layout: ClusterLayout) -> None:
    """`down` recognises its processes by the state dir in their command line."""
    argv = flags.component_args(component, BIN, layout, PORTS)
    assert any(str(layout.state_dir) in arg for arg in argv[1:])


@pytest.mark.parametrize("component", COMPONENTS)
def test_listeners_bind_loopback_only(component: str, layout: ClusterLayout) -> None:
    for key, value in args_of(component, layout).items():
        if key in {"--bind-address", "--advertise-address"}:
            assert value == "127.0.0.1"
        if key.endswith("-urls") or key in {"--server-address", "--etcd-servers"}:
            for url in value.split(","):
                assert "127.0.0.1:" in url, f"{component} {key}={value}"


def test_each_component_gets_its_own_port(layout: ClusterLayout) -> None:
    etcd = args_of(ETCD, layout)
    assert etcd["--listen-client-urls"] == "http://127.0.0.1:20001"
    assert etcd["--listen-peer-urls"] == "http://127.0.0.1:20002"
    assert etcd["--initial-cluster"] == "hda=http://127.0.0.1:20002"
    assert args_of(APISERVER, layout)["--secure-port"] == "20003"
    assert args_of(APISERVER, layout)["--etcd-servers"] == "http://127.0.0.1:20001"
    assert args_of(CONTROLLER_MANAGER, layout)["--secure-port"] == "20004"
    assert args_of(SCHEDULER, layout)["--secure-port"] == "20005"
    assert args_of(KWOK, layout)["--server-address"] == "127.0.0.1:20006"


def test_apiserver_is_secured(layout: ClusterLayout) -> None:
    args = args_of(APISERVER, layout)
    assert args["--authorization-mode"] == "Node,RBAC"
    assert args["--endpoint-reconciler-type"] == "none"
    assert args["--client-ca-file"] == str(layout.pki("ca.crt"))
    assert args["--tls-cert-file"] == str(layout.pki("apiserver.crt"))
    assert args["--service-account-signing-key-file"] == str(layout.pki("sa.key"))
    assert args["--service-account-key-file"] == str(layout.pki("sa.pub"))
    # The default admission plugins (PodSecurity among them) are not switched off.
    assert "--disable-admission-plugins" not in args
    assert "--admission-control" not in args
    assert "--enable-admission-plugins" not in args


@pytest.mark.parametrize("component", [CONTROLLER_MANAGER, SCHEDULER])
def test_controllers_use_the_admin_kubeconfig_and_allow_health_probes(
    component: str, layout: ClusterLayout
) -> None:
    args = args_of(component, layout)
    assert args["--kubeconfig"] == str(layout.kubeconfig)
    assert args["--leader-elect"] == "false"
    assert "/healthz" in args["--authorization-always-allow-paths"].split(",")


def test_kwok_manages_only_annotated_nodes(layout: ClusterLayout) -> None:
    args = args_of(KWOK, layout)
    assert args["--manage-all-nodes"] == "false"
    assert args["--manage-nodes-with-annotation-selector"] == "kwok.x-k8s.io/node=fake"
    assert args["--config"] == str(layout.kwok_config)


def test_health_urls() -> None:
    assert flags.health_url(ETCD, PORTS) == "http://127.0.0.1:20001/health"
    assert flags.health_url(APISERVER, PORTS) == "https://127.0.0.1:20003/readyz"
    assert flags.health_url(CONTROLLER_MANAGER, PORTS) == "https://127.0.0.1:20004/healthz"
    assert flags.health_url(SCHEDULER, PORTS) == "https://127.0.0.1:20005/healthz"
    assert flags.health_url(KWOK, PORTS) == "http://127.0.0.1:20006/healthz"
    with pytest.raises(ValueError, match="unknown component"):
        flags.health_url("kubelet", PORTS)


def test_ports_round_trip() -> None:
    assert Ports.from_dict(PORTS.to_dict()) == PORTS
    assert Ports.count() == 10


@pytest.mark.parametrize("name", ["hda", "pytest-1234", "a", "x" * 40])
def test_valid_cluster_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Dev", "-a", "a-", "a_b", "../x", "x" * 41])
def test_invalid_cluster_names(name: str) -> None:
    with pytest.raises(InvalidClusterNameError):
        validate_name(name)


def test_state_root_precedence() -> None:
    assert default_state_root({"HDA_STATE_DIR": "/s", "XDG_STATE_HOME": "/x"}) == Path("/s")
    assert default_state_root({"XDG_STATE_HOME": "/x"}) == Path("/x/hda")
    assert default_state_root({}) == Path.home() / ".local" / "state" / "hda"
    layout = ClusterLayout.for_name("dev", Path("/s"))
    assert layout.state_dir == Path("/s/clusters/dev")
    assert layout.log_path(ETCD) == Path("/s/clusters/dev/logs/etcd.log")
