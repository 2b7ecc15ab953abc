"""The one CLUSTER NODES parser: addresses, flags, follows, link state, slot ranges, and a clear
error naming the line of a malformed reply."""

from __future__ import annotations

import pytest

from hda.runtime.topology.nodes import ClusterNode, myself, parse_cluster_nodes

REPLY = (
    "aa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-2 5 [6->-bb] [7-<-cc]\n"
    "bb 127.0.0.1:7001@17001,v-1.h master - 0 1700000000000 2 connected\n"
    "cc 127.0.0.1:7002@17002 slave aa 0 0 1 connected\n"
    "dd 127.0.0.1:7003@17003 master,fail - 0 0 3 disconnected 9\n"
    "ee :0@0 master,noaddr - 0 0 4 disconnected\n"
    "ff 127.0.0.1:7005@17005 master,fail? - 0 0 5 connected 10-20\n"
    "gg ::1:7006@17006 slave bb 0 0 2 disconnected\n"
)


@pytest.fixture
def nodes() -> dict[str, ClusterNode]:
    return {node.node_id: node for node in parse_cluster_nodes(REPLY)}


def test_every_line_is_one_node_in_order() -> None:
    ids = [node.node_id for node in parse_cluster_nodes(REPLY)]
    assert ids == ["aa", "bb", "cc", "dd", "ee", "ff", "gg"]


def test_address_drops_the_bus_port_and_hostname(nodes: dict[str, ClusterNode]) -> None:
    assert nodes["aa"].address == ("127.0.0.1", 7000)
    assert nodes["bb"].address == ("127.0.0.1", 7001)
    assert nodes["gg"].address == ("::1", 7006)


def test_a_node_without_address_is_failed(nodes: dict[str, ClusterNode]) -> None:
    assert nodes["ee"].address == ("", 0)
    assert (nodes["ee"].failed, nodes["ee"].seen_down) == (True, True)


def test_myself_is_the_answering_node(nodes: dict[str, ClusterNode]) -> None:
    assert [n.node_id for n in nodes.values() if n.myself] == ["aa"]
    assert myself(list(nodes.values())).node_id == "aa"


def test_primary_and_replica_with_the_id_it_follows(nodes: dict[str, ClusterNode]) -> None:
    assert (nodes["aa"].primary, nodes["aa"].follows_id) == (True, None)
    assert (nodes["cc"].primary, nodes["cc"].follows_id) == (False, "aa")


def test_fail_is_failed_and_down(nodes: dict[str, ClusterNode]) -> None:
    assert (nodes["dd"].failed, nodes["dd"].seen_down) == (True, True)


def test_suspected_failure_is_down_but_not_failed(nodes: dict[str, ClusterNode]) -> None:
    assert (nodes["ff"].failed, nodes["ff"].seen_down) == (False, True)


def test_a_disconnected_link_is_down_but_not_failed(nodes: dict[str, ClusterNode]) -> None:
    assert (nodes["gg"].connected, nodes["gg"].failed, nodes["gg"].seen_down) == (
        False,
        False,
        True,
    )


def test_a_healthy_peer_is_neither(nodes: dict[str, ClusterNode]) -> None:
    assert (nodes["bb"].connected, nodes["bb"].failed, nodes["bb"].seen_down) == (
        True,
        False,
        False,
    )


def test_slot_ranges_and_single_slots_skip_migration_tokens(
    nodes: dict[str, ClusterNode],
) -> None:
    assert nodes["aa"].slot_ranges == ((0, 2), (5, 5))
    assert nodes["aa"].slots == (0, 1, 2, 5)
    assert nodes["bb"].slot_ranges == ()
    assert nodes["ff"].slots == tuple(range(10, 21))


def test_blank_lines_are_skipped() -> None:
    text = "\n" + REPLY.splitlines()[0] + "\n\n"
    assert [node.node_id for node in parse_cluster_nodes(text)] == ["aa"]


def test_no_myself_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="no `myself` line"):
        myself(parse_cluster_nodes(REPLY.split("\n", 1)[1]))


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("hh 127.0.0.1:7000 master", "expected 8 or more fields, got 3"),
        ("hh 127.0.0.1 master - 0 0 1 connected", "address '127.0.0.1' is not ip:port@cport"),
        ("hh 127.0.0.1:x@1 master - 0 0 1 connected", r"address '127.0.0.1:x@1'"),
        ("hh 1.2.3.4:1@2 master - 0 0 1 linked", "link state 'linked'"),
        ("hh 1.2.3.4:1@2 master - 0 0 1 connected 5-x", "slot '5-x' is not N or A-B"),
        ("hh 1.2.3.4:1@2 master - 0 0 1 connected -5", "slot '-5' is not N or A-B"),
        ("hh 1.2.3.4:1@2 master - 0 0 1 connected 9-3", "slot range '9-3' is outside"),
        ("hh 1.2.3.4:1@2 master - 0 0 1 connected 16384", "slot range '16384' is outside"),
    ],
)
def test_a_malformed_line_names_its_number_and_why(bad_line: str, reason: str) -> None:
    text = REPLY.splitlines()[0] + "\n\n" + bad_line + "\n"
    with pytest.raises(ValueError, match=f"CLUSTER NODES line 3: {reason}") as caught:
        parse_cluster_nodes(text)
    assert bad_line in str(caught.value)
