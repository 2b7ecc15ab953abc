"""The one reader of `CLUSTER NODES` (pure): the operator's probe and the runtime's resharding
both take their view of a Valkey Cluster from `parse_cluster_nodes`.

Each line is `id ip:port@cport[,hostname] flags primary-id ping-sent pong-recv epoch link
slot...`; a slot is `N` or `A-B`, and `[N->-id]` / `[N-<-id]` mark a slot in a legacy
migration, still served by its owner (skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .local import SLOTS
from .sentinel import HostPort

SlotRange = tuple[int, int]  # first, last (inclusive)
_FIELDS = 8  # before the slots
_LINK_STATES = frozenset({"connected", "disconnected"})
# Flags under which a node counts as down to its peers (`fail?`: suspected by this node only).
_DOWN_FLAGS = frozenset({"fail", "fail?", "noaddr"})


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES."""

    node_id: str
    address: HostPort  # the client address (`:0` when the node has none: `noaddr`)
    flags: frozenset[str]  # myself, master, slave, fail, fail?, noaddr, handshake, ...
    follows_id: str | None  # the node ID a replica replicates (None for a primary)
    connected: bool  # the cluster bus link to it is up (always, for `myself`)
    slot_ranges: tuple[SlotRange, ...]  # the slots it serves, as listed

    @property
    def myself(self) -> bool:
        return "myself" in self.flags

    @property
    def primary(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        """The cluster agrees it failed, or it has no address: not a node to work with."""
        return "fail" in self.flags or "noaddr" in self.flags

    @property
    def seen_down(self) -> bool:
        """The reporting node sees it failing (or suspects so) or has no link to it."""
        return bool(self.flags & _DOWN_FLAGS) or not self.connected

    @property
    def slots(self) -> tuple[int, ...]:
        """Every slot it serves, ascending."""
        return tuple(sorted(s for first, last in self.slot_ranges for s in range(first, last + 1)))


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """Every node of a CLUSTER NODES reply, in its order; blank lines are skipped. A malformed
    line raises ValueError naming its number and the line."""
    nodes = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                nodes.append(_parse_line(line))
            except ValueError as error:
                raise ValueError(f"CLUSTER NODES line {number}: {error}: {line!r}") from None
    return nodes


def myself(nodes: Sequence[ClusterNode]) -> ClusterNode:
    """The line of the node that answered; ValueError when there is none."""
    for node in nodes:
        if node.myself:
            return node
    raise ValueError("CLUSTER NODES has no `myself` line")


def _parse_line(line: str) -> ClusterNode:
    fields = line.split()
    if len(fields) < _FIELDS:
        raise ValueError(f"expected {_FIELDS} or more fields, got {len(fields)}")
    node_id, address, flags, follows, *_, link = fields[:_FIELDS]
    if link not in _LINK_STATES:
        raise ValueError(f"link state {link!r} is neither connected nor disconnected")
    return ClusterNode(
        node_id=node_id,
        address=_host_port(address),
        flags=frozenset(flags.split(",")),
        follows_id=None if follows == "-" else follows,
        connected=link == "connected",
        slot_ranges=tuple(
            _slot_range(token) for token in fields[_FIELDS:] if not token.startswith("[")
        ),
    )


def _host_port(address: str) -> HostPort:
    host, colon, port = address.split("@", maxsplit=1)[0].rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError(f"address {address!r} is not ip:port@cport")
    return host, int(port)


def _slot_range(token: str) -> SlotRange:
    first, dash, last = token.partition("-")
    if not first.isdigit() or (dash and not last.isdigit()):
        raise ValueError(f"slot {token!r} is not N or A-B")
    bounds = (int(first), int(last or first))
    if not bounds[0] <= bounds[1] < SLOTS:
        raise ValueError(f"slot range {token!r} is outside 0-{SLOTS - 1} or reversed")
    return bounds
