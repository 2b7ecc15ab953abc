"""Merging the subscribe streams of every output replica into one, in ID order per partition
(pure: the gateway in `subscribe.py` feeds it frames and sends what it releases).

Each replica writes the entries its consumer received, in ID order per partition, so each
replica's stream is ordered per partition but holds only part of it. A record of partition P is
released once no smaller ID of P can still come from any replica: for each replica we keep a
frontier, the ID of P up to which that replica has sent all it will ever send. It moves with:

- every record the replica sends (its P records come in ID order);
- the end of its history for P: at connection it tells the last ID of P in its files (its
  `historyEnd` frame); once that record arrived, everything the replica held for P up to the
  durable bound read before connecting (`floor`) has arrived, and its later records are newer;
- a mark: the gateway reads the durable bound W from Valkey, then asks the replica for a mark;
  the replica answers after everything it had published by then, and every entry at or below W
  was published (and acknowledged) before W was read, so the frontier becomes at least W.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from .codec import StreamId
from .positions import BEGINNING, PositionVector


@dataclass
class _Replica:
    frontier: dict[int, StreamId]
    # partition -> the last ID of its history still to arrive; None until `historyEnd` came
    history_last: dict[int, StreamId] | None = None


@dataclass
class PartitionMerge:
    replicas: int
    partitions: int
    start: PositionVector  # resume after this (partitions not named: from the beginning)
    floor: PositionVector  # the durable bound read before the replicas' streams were opened
    released: PositionVector = field(init=False)
    buffered: int = field(init=False, default=0)
    buffered_from: list[int] = field(init=False)  # per replica: what its reader may pause on
    _heaps: dict[int, list[tuple[StreamId, int, bytes]]] = field(init=False)
    _replicas: list[_Replica] = field(init=False)

    def __post_init__(self) -> None:
        self.released = {p: self.start.get(p, BEGINNING) for p in range(self.partitions)}
        self._heaps = {p: [] for p in range(self.partitions)}
        self._replicas = [_Replica(dict(self.released)) for _ in range(self.replicas)]
        self.buffered_from = [0] * self.replicas

    def history_end(self, replica: int, last: PositionVector) -> None:
        """The replica's first frame: the last ID per partition in its files at connection."""
        state = self._replicas[replica]
        state.history_last = {}
        for partition in range(self.partitions):
            history_last = last.get(partition)
            if history_last is None or history_last <= state.frontier[partition]:
                self._history_done(state, partition)
            else:
                state.history_last[partition] = history_last

    def add(self, replica: int, partition: int, entry_id: StreamId, line: bytes) -> None:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"record of partition {partition}: the stream has {self.partitions}")
        state = self._replicas[replica]
        state.frontier[partition] = max(state.frontier[partition], entry_id)
        if state.history_last is not None:
            history_last = state.history_last.get(partition)
            if history_last is not None and entry_id >= history_last:
                self._history_done(state, partition)
        if entry_id > self.released[partition]:
            heapq.heappush(self._heaps[partition], (entry_id, replica, line))
            self.buffered += 1
            self.buffered_from[replica] += 1

    def mark(self, replica: int, bound: PositionVector) -> None:
        """The replica answered a mark sent after `bound` was read."""
        frontier = self._replicas[replica].frontier
        for partition, entry_id in bound.items():
            if entry_id > frontier.get(partition, BEGINNING):
                frontier[partition] = entry_id

    def _history_done(self, state: _Replica, partition: int) -> None:
        assert state.history_last is not None
        state.history_last.pop(partition, None)
        floor = self.floor.get(partition, BEGINNING)
        state.frontier[partition] = max(state.frontier[partition], floor)

    def bound(self, partition: int) -> StreamId:
        """Records of `partition` up to this ID can be released."""
        return min(replica.frontier[partition] for replica in self._replicas)

    def release(self) -> list[bytes]:
        """Every record that can go out now, in ID order per partition."""
        lines: list[bytes] = []
        for partition, heap in self._heaps.items():
            if not heap:
                continue
            bound = self.bound(partition)
            while heap and heap[0][0] <= bound:
                entry_id, replica, line = heapq.heappop(heap)
                self.buffered -= 1
                self.buffered_from[replica] -= 1
                if entry_id > self.released[partition]:  # a duplicate is dropped
                    self.released[partition] = entry_id
                    lines.append(line)
        return lines
