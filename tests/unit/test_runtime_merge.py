"""Merging the replicas' subscribe streams: what may be released, and when (pure)."""

from __future__ import annotations

import random

from hda.runtime.merge import PartitionMerge


def line(partition: int, ms: int) -> bytes:
    return b'{"id":"%d/%d-0"}' % (partition, ms)


def released_ms(lines: list[bytes]) -> list[int]:
    return [int(x.split(b"/")[1].split(b"-")[0]) for x in lines]


def merge_of(
    replicas: int,
    partitions: int = 1,
    *,
    start: dict[int, tuple[int, int]] | None = None,
    floor: dict[int, tuple[int, int]] | None = None,
) -> PartitionMerge:
    return PartitionMerge(replicas, partitions, start or {}, floor or {})


def test_a_record_waits_until_every_other_replica_is_past_it() -> None:
    merge = merge_of(2)
    merge.history_end(0, {})
    merge.history_end(1, {})
    merge.add(0, 0, (20, 0), line(0, 20))
    assert merge.release() == []  # replica 1 may still send 10..19
    merge.add(1, 0, (10, 0), line(0, 10))
    assert released_ms(merge.release()) == [10]
    merge.add(1, 0, (30, 0), line(0, 30))
    assert released_ms(merge.release()) == [20]
    assert merge.buffered == 1


def test_a_mark_moves_a_quiet_replica_up_to_the_durable_bound() -> None:
    merge = merge_of(2)
    merge.history_end(0, {})
    merge.history_end(1, {})
    merge.add(0, 0, (20, 0), line(0, 20))
    merge.add(0, 0, (25, 0), line(0, 25))
    merge.mark(1, {0: (22, 0)})  # replica 1 holds nothing at or below 22-0 not yet sent
    assert released_ms(merge.release()) == [20]
    merge.mark(1, {0: (40, 0)})
    assert released_ms(merge.release()) == [25]


def test_the_end_of_a_replicas_history_lifts_it_to_the_floor() -> None:
    merge = merge_of(2, floor={0: (50, 0)})
    merge.history_end(0, {0: (30, 0)})
    merge.history_end(1, {0: (40, 0)})
    merge.add(0, 0, (30, 0), line(0, 30))  # replica 0's history is complete
    assert merge.release() == []  # replica 1 has not sent its history (up to 40) yet
    merge.add(1, 0, (35, 0), line(0, 35))
    assert released_ms(merge.release()) == [30, 35]
    merge.add(1, 0, (40, 0), line(0, 40))
    assert released_ms(merge.release()) == [40]
    merge.add(0, 0, (45, 0), line(0, 45))  # live, below the floor both reached
    assert released_ms(merge.release()) == [45]


def test_a_replica_without_history_of_a_partition_starts_at_the_floor() -> None:
    merge = merge_of(2, partitions=2, floor={0: (10, 0), 1: (10, 0)})
    merge.history_end(0, {0: (8, 0)})
    merge.history_end(1, {1: (9, 0)})  # nothing of partition 0 in its files
    merge.add(0, 0, (8, 0), line(0, 8))
    assert released_ms(merge.release()) == [8]


def test_records_at_or_before_the_start_and_duplicates_are_dropped() -> None:
    merge = merge_of(1, start={0: (10, 0)})
    merge.history_end(0, {})
    merge.add(0, 0, (10, 0), line(0, 10))
    merge.add(0, 0, (11, 0), line(0, 11))
    merge.add(0, 0, (11, 0), line(0, 11))
    assert released_ms(merge.release()) == [11]
    assert merge.released == {0: (11, 0)}
    assert merge.buffered == 0


def test_any_interleaving_of_ordered_replica_streams_releases_in_id_order() -> None:
    rng = random.Random(7)
    for _ in range(200):
        replicas = rng.randint(1, 4)
        owned: list[list[int]] = [[] for _ in range(replicas)]
        for ms in range(1, 60):
            owned[rng.randrange(replicas)].append(ms)
        merge = merge_of(replicas)
        for replica in range(replicas):
            merge.history_end(replica, {})
        cursors = [0] * replicas
        released: list[int] = []
        while any(c < len(o) for c, o in zip(cursors, owned, strict=True)):
            replica = rng.choice([r for r in range(replicas) if cursors[r] < len(owned[r])])
            ms = owned[replica][cursors[replica]]
            cursors[replica] += 1
            merge.add(replica, 0, (ms, 0), line(0, ms))
            released += released_ms(merge.release())
            if rng.random() < 0.1:  # a mark answered after everything below `done` is sent
                done = min(
                    [
                        owned[r][cursors[r]] - 1
                        for r in range(replicas)
                        if cursors[r] < len(owned[r])
                    ]
                    or [59]
                )
                for r in range(replicas):
                    merge.mark(r, {0: (done, 0)})
                released += released_ms(merge.release())
        for r in range(replicas):
            merge.mark(r, {0: (59, 0)})
        released += released_ms(merge.release())
        assert released == list(range(1, 60))


def test_waiting_records_are_counted_per_replica() -> None:
    merge = merge_of(2)
    merge.history_end(0, {})
    merge.history_end(1, {})
    for ms in (4, 8, 12):
        merge.add(1, 0, (ms, 0), line(0, ms))
    merge.add(0, 0, (1, 0), line(0, 1))
    assert released_ms(merge.release()) == [1]
    assert merge.buffered_from == [0, 3]  # replica 1 is ahead: its reader can wait
    merge.add(0, 0, (9, 0), line(0, 9))
    assert released_ms(merge.release()) == [4, 8, 9]
    assert merge.buffered_from == [0, 1]
