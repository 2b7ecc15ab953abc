"""Resharding plans: even shares, lowest slots kept, drained primaries emptied."""

from __future__ import annotations

import pytest

from hda.runtime.topology.local import SLOTS, slot_ranges
from hda.runtime.topology.reshard import SlotMigration, as_ranges, plan_moves, slot_migrations


def owned_by(ranges: dict[str, tuple[int, int]]) -> dict[str, tuple[int, ...]]:
    return {node: tuple(range(first, last + 1)) for node, (first, last) in ranges.items()}


def after(owned: dict[str, tuple[int, ...]], keep: list[str]) -> dict[str, set[int]]:
    result = {node: set(slots) for node, slots in owned.items()}
    for move in plan_moves(owned, keep):
        for first, last in move.ranges:
            moved = set(range(first, last + 1))
            assert moved <= result[move.source], "a move takes slots its source does not own"
            result[move.source] -= moved
            result[move.target] |= moved
    return result


def test_three_to_four_gives_the_new_primary_an_even_share_from_each() -> None:
    owned = owned_by(dict(zip("abc", slot_ranges(3), strict=True)))
    owned["d"] = ()
    result = after(owned, ["a", "b", "c", "d"])
    assert [len(result[n]) for n in "abcd"] == [SLOTS // 4] * 4
    assert {move.target for move in plan_moves(owned, ["a", "b", "c", "d"])} == {"d"}
    assert min(result["a"]) == 0  # each keeps the lowest slots of its own


def test_draining_a_primary_moves_all_its_slots_to_the_others() -> None:
    owned = owned_by(dict(zip("abcd", slot_ranges(4), strict=True)))
    result = after(owned, ["a", "b", "c"])
    assert result["d"] == set()
    assert sorted(len(result[n]) for n in "abc") == [5461, 5461, 5462]


def test_an_even_cluster_needs_no_move() -> None:
    owned = owned_by(dict(zip("abc", slot_ranges(3), strict=True)))
    assert plan_moves(owned, ["a", "b", "c"]) == []


def test_keeping_an_unknown_primary_is_refused() -> None:
    with pytest.raises(ValueError, match=r"not in the cluster: \['z'\]"):
        plan_moves({"a": (0, 1)}, ["a", "z"])


def test_as_ranges_joins_runs() -> None:
    assert as_ranges([7, 1, 2, 3]) == ((1, 3), (7, 7))


def test_slot_migrations_reads_each_entry_and_knows_which_still_run() -> None:
    # RESP gives an entry as a flat field/value list; redis-py hands it over as a dict
    reply = [
        [
            b"name",
            b"a" * 40,
            b"operation",
            b"EXPORT",
            b"slot_ranges",
            b"0-9 20-29",
            b"target_node",
            b"t" * 40,
            b"state",
            b"success",
            b"message",
            b"",
        ],
        {
            "operation": "EXPORT",
            "slot_ranges": "30-39",
            "target_node": "u" * 40,
            "state": "snapshotting",
            "message": "",
            "cow_size": 0,
        },
    ]

    migrations = slot_migrations(reply)

    assert migrations == [
        SlotMigration("EXPORT", "t" * 40, "0-9 20-29", "success", ""),
        SlotMigration("EXPORT", "u" * 40, "30-39", "snapshotting", ""),
    ]
    assert [m.running for m in migrations] == [False, True]


@pytest.mark.parametrize("reply", [b"OK", [[b"operation"]], [b"EXPORT"]])
def test_a_slot_migrations_reply_of_another_shape_is_a_value_error(reply: object) -> None:
    with pytest.raises(ValueError, match="CLUSTER GETSLOTMIGRATIONS"):
        slot_migrations(reply)
