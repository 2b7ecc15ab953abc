"""Resharding a Valkey Cluster with atomic slot migration (Valkey 9 `CLUSTER MIGRATESLOTS`).

`plan_moves` is pure: from who owns which slots now, and which primaries should own slots
afterwards, the slot ranges each source sends to each target so that every remaining primary
ends with an even share. `reshard` reads the cluster (CLUSTER NODES) at explicit addresses, runs
the plan (one MIGRATESLOTS per source, polled with CLUSTER GETSLOTMIGRATIONS until it succeeds)
and returns it. The operator calls the same function when `spec.redis.shards` changes; a new
shard's primary must already have joined the cluster (CLUSTER MEET), empty.

A slot moves atomically: its keys are copied in the background, then the source pauses writes
to it for a moment and hands ownership over; a client's next command there gets MOVED, and
nothing is half-moved in between. So moving a partition (one hash tag, one slot) under load
loses and duplicates nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..resp import RedisAddress, RespConnection
from .local import SLOTS
from .nodes import ClusterNode, SlotRange, parse_cluster_nodes
from .sentinel import HostPort

log = logging.getLogger(__name__)

MIGRATION_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class SlotMove:
    source: str  # node IDs
    target: str
    ranges: tuple[SlotRange, ...]

    @property
    def slot_count(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)


def as_ranges(slots: list[int]) -> tuple[SlotRange, ...]:
    """Ascending slots as maximal runs: [1, 2, 3, 7] -> ((1, 3), (7, 7))."""
    runs: list[list[int]] = []
    for slot in sorted(slots):
        if runs and runs[-1][1] + 1 == slot:
            runs[-1][1] = slot
        else:
            runs.append([slot, slot])
    return tuple((first, last) for first, last in runs)


def plan_moves(owned: dict[str, tuple[int, ...]], keep: list[str]) -> list[SlotMove]:
    """Moves that leave the primaries in `keep` (in this order) with even shares of all slots,
    and every other primary in `owned` with none. A primary keeps the lowest slots of its own."""
    if not keep:
        raise ValueError("resharding needs at least one primary to keep")
    unknown = [node for node in keep if node not in owned]
    if unknown:
        raise ValueError(f"primaries to keep are not in the cluster: {unknown}")
    total = sum(len(slots) for slots in owned.values())
    shares = {
        node: total * (n + 1) // len(keep) - total * n // len(keep) for n, node in enumerate(keep)
    }
    surplus: list[tuple[str, int]] = []  # (source, slot), in donor order
    for node, slots in owned.items():
        excess = len(slots) - shares.get(node, 0)
        if excess > 0:
            surplus.extend((node, slot) for slot in slots[len(slots) - excess :])
    moves: dict[tuple[str, str], list[int]] = {}
    for node in keep:
        missing = shares[node] - len(owned[node])
        taken, surplus = surplus[: max(0, missing)], surplus[max(0, missing) :]
        for source, slot in taken:
            moves.setdefault((source, node), []).append(slot)
    return [SlotMove(source, target, as_ranges(slots)) for (source, target), slots in moves.items()]


async def _connect(address: HostPort, password: str | None) -> RespConnection:
    return await RespConnection.connect(
        RedisAddress(host=address[0], port=address[1], password=password)
    )


@dataclass(frozen=True)
class ReshardProgress:
    """How far a running resharding is: moves and slots done, and the running move's state as
    CLUSTER GETSLOTMIGRATIONS reports it."""

    moves_done: int
    moves: int
    slots_done: int
    slots: int
    state: str = ""  # of the running move; "" between moves

    def describe(self) -> str:
        running = f"; move {self.moves_done + 1}: {self.state}" if self.state else ""
        return (
            f"{self.slots_done} of {self.slots} slots moved "
            f"({self.moves_done} of {self.moves} moves){running}"
        )


ProgressCallback = Callable[[ReshardProgress], None]


async def cluster_nodes(address: HostPort, password: str | None = None) -> list[ClusterNode]:
    """Every node the node at `address` knows (`parse_cluster_nodes`), failed ones included."""
    connection = await _connect(address, password)
    try:
        text = await connection.execute("CLUSTER", "NODES")
    finally:
        connection.close()
    return parse_cluster_nodes(_text(text))


async def reshard(
    address: HostPort,
    *,
    keep: list[str] | None = None,
    password: str | None = None,
    migration_timeout: float = 600.0,
    progress: ProgressCallback | None = None,
) -> list[SlotMove]:
    """Spread all slots evenly over `keep` (node IDs; default: every primary the node at
    `address` knows, so a newly joined empty one gets its share) with atomic slot migration,
    one source at a time. Returns the moves made (none when already even). `progress` hears
    how far it is at every poll of the running move."""
    nodes = await cluster_nodes(address, password)
    primaries = [node for node in nodes if node.primary and not node.failed]
    owned = {node.node_id: node.slots for node in primaries}
    if sum(map(len, owned.values())) != SLOTS:
        raise RuntimeError(
            f"the cluster serves {sum(map(len, owned.values()))} of {SLOTS} slots: "
            "fix its coverage before resharding"
        )
    if keep is None:  # serving primaries in slot order, then the empty ones
        keep = [n.node_id for n in sorted(primaries, key=lambda n: n.slots[:1] or (SLOTS,))]
    moves = plan_moves(owned, keep)
    by_id = {node.node_id: node for node in primaries}
    total = sum(move.slot_count for move in moves)
    done = 0

    def report(moves_done: int, state: str = "") -> None:
        if progress is not None:
            progress(ReshardProgress(moves_done, len(moves), done, total, state))

    report(0)
    for number, move in enumerate(moves):
        await _migrate(
            by_id[move.source].address,
            move,
            password,
            migration_timeout,
            functools.partial(report, number),
        )
        done += move.slot_count
        report(number + 1)
    return moves


async def _migrate(
    source: HostPort,
    move: SlotMove,
    password: str | None,
    migration_timeout: float,
    on_state: Callable[[str], None],
) -> None:
    ranges = [bound for pair in move.ranges for bound in pair]
    wanted = " ".join(f"{first}-{last}" for first, last in move.ranges)
    client = await _connect(source, password)
    started = time.monotonic()
    try:
        await client.execute("CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", *ranges, "NODE", move.target)
        log.info(
            "slot migration started",
            extra={"source": move.source, "target": move.target, "slots": move.slot_count},
        )
        while True:
            state, message = await _migration_state(client, move.target, wanted)
            on_state(state)
            if state == "success":
                break
            if state in ("failed", "cancelled"):
                raise RuntimeError(
                    f"slot migration {move.source} -> {move.target} ({wanted}) {state}: {message}"
                )
            if time.monotonic() - started > migration_timeout:
                raise TimeoutError(
                    f"slot migration {move.source} -> {move.target} ({wanted}) still {state} "
                    f"after {migration_timeout}s"
                )
            await asyncio.sleep(MIGRATION_POLL_SECONDS)
    finally:
        client.close()
    log.info(
        "slot migration done",
        extra={
            "source": move.source,
            "target": move.target,
            "seconds": round(time.monotonic() - started, 3),
        },
    )


# States in which a slot migration job is over (CLUSTER GETSLOTMIGRATIONS keeps a log of them).
MIGRATION_ENDED = frozenset({"success", "failed", "cancelled"})


@dataclass(frozen=True)
class SlotMigration:
    """One entry of CLUSTER GETSLOTMIGRATIONS, as the node asked sees its part in it."""

    operation: str  # EXPORT (this node is the source) or IMPORT (the target)
    target: str  # node ID of the primary receiving the slots
    ranges: str  # "first-last first-last ..."
    state: str
    message: str

    @property
    def running(self) -> bool:
        return self.state not in MIGRATION_ENDED


def slot_migrations(reply: object) -> list[SlotMigration]:
    """CLUSTER GETSLOTMIGRATIONS, oldest first: each entry a flat field/value list (RESP) or a
    mapping (redis-py), bytes or str; ValueError on a reply of another shape."""
    if not isinstance(reply, list):
        raise ValueError(f"CLUSTER GETSLOTMIGRATIONS: expected a list, got {reply!r:.80}")
    migrations = []
    for entry in reply:
        if isinstance(entry, Mapping):
            pairs = list(entry.items())
        elif isinstance(entry, list) and not len(entry) % 2:
            pairs = list(zip(entry[0::2], entry[1::2], strict=True))
        else:
            raise ValueError(f"CLUSTER GETSLOTMIGRATIONS: malformed entry {entry!r:.80}")
        text = {_text(k): _text(v) for k, v in pairs}
        migrations.append(
            SlotMigration(
                operation=text.get("operation", ""),
                target=text.get("target_node", ""),
                ranges=text.get("slot_ranges", ""),
                state=text.get("state", "unknown"),
                message=text.get("message", ""),
            )
        )
    return migrations


async def _migration_state(client: RespConnection, target: str, ranges: str) -> tuple[str, str]:
    """(state, message) of the newest export of `ranges` to `target` on the source."""
    found = ("unknown", "")
    for migration in slot_migrations(await client.execute("CLUSTER", "GETSLOTMIGRATIONS")):
        if migration.operation == "EXPORT" and (migration.target, migration.ranges) == (
            target,
            ranges,
        ):
            found = (migration.state, migration.message)
    return found


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
