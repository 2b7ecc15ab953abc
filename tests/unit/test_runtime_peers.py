"""Which output replicas a subscribe gateway merges (PeerDirectory, parse_peer_map)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hda.runtime.subscribe import PeerDirectory, parse_peer_map

TEMPLATE = "http://{pod}.logs-output-headless.ns.svc:8081"


def spec_with_output_replicas(path: Path, replicas: int) -> Path:
    path.write_text(
        "apiVersion: hda.shitops.dev/v1alpha1\nkind: HyperDriveAccelerator\n"
        "metadata: {name: logs}\n"
        f"spec:\n  streams: [{{name: events}}]\n  output: {{replicas: {replicas}}}\n"
    )
    return path


def test_statefulset_peers_are_its_ordinals_read_from_the_spec_at_each_call(
    tmp_path: Path,
) -> None:
    spec = spec_with_output_replicas(tmp_path / "hda.yaml", 2)
    directory = PeerDirectory(
        own_name="logs-output-1", own_url="x", url_template=TEMPLATE, config_path=spec
    )
    assert directory.current() == {
        "logs-output-0": "http://logs-output-0.logs-output-headless.ns.svc:8081",
        "logs-output-1": "http://logs-output-1.logs-output-headless.ns.svc:8081",
    }
    spec_with_output_replicas(spec, 3)  # the kubelet updated the mounted spec after a scale
    assert list(directory.current()) == ["logs-output-0", "logs-output-1", "logs-output-2"]


def test_a_pod_name_without_an_ordinal_is_refused_by_name(tmp_path: Path) -> None:
    spec = spec_with_output_replicas(tmp_path / "hda.yaml", 2)
    directory = PeerDirectory(
        own_name="laptop", own_url="x", url_template=TEMPLATE, config_path=spec
    )
    with pytest.raises(ValueError, match="'laptop' is not STATEFULSET-ORDINAL"):
        directory.current()


def test_explicit_peers_win_and_alone_means_only_this_process() -> None:
    explicit = {"output-0": "http://127.0.0.1:1", "output-1": "http://127.0.0.1:2"}
    assert PeerDirectory(own_name="output-0", own_url="u", explicit=explicit).current() == explicit
    assert PeerDirectory(own_name="output-0", own_url="u").current() == {"output-0": "u"}


def test_peer_map_parsing_names_a_bad_item() -> None:
    assert parse_peer_map("a=http://h:1/, b=http://h:2") == {"a": "http://h:1", "b": "http://h:2"}
    assert parse_peer_map("") == {}
    with pytest.raises(ValueError, match="peer 'http://h:1': expected CONSUMER=URL"):
        parse_peer_map("http://h:1")
