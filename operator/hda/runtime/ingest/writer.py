"""The entry writer: coalesces concurrent submissions into entries and pipelines their XADDs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..codec import ParsedBatch, event_id, input_key
from ..durability import check_durable, wait_command
from ..resp import Arg, Reconnecting, RespError

MAX_ENTRY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Receipt:
    count: int
    first_id: str
    last_id: str

    def as_json(self) -> dict[str, object]:
        return {"count": self.count, "firstId": self.first_id, "lastId": self.last_id}


@dataclass
class Submission:
    stream: str
    groups: dict[int, list[bytes]]  # partition -> lines, in request order within the partition
    first: tuple[int, int]  # (partition, index within that partition's lines) of event 0
    last: tuple[int, int]
    count: int
    future: asyncio.Future[Receipt]


Slot = tuple[str, int]  # (stream, partition)
Spots = dict[tuple[int, int], tuple[int, int]]  # (partition, index) -> (entry number, offset)


def layout_entries(
    submissions: list[Submission], max_events: int, max_bytes: int
) -> tuple[dict[Slot, list[list[bytes]]], list[Spots]]:
    """Pack the submissions' lines into entries per (stream, partition), in submission order,
    each at most `max_events` lines and `max_bytes` (a single larger line gets its own entry).
    Also returns where each submission's first and last events landed."""
    entries: dict[Slot, list[list[bytes]]] = {}
    sizes: dict[Slot, int] = {}
    located: list[Spots] = []
    for submission in submissions:
        spots: Spots = {}
        for partition, lines in submission.groups.items():
            slot = (submission.stream, partition)
            chunks = entries.setdefault(slot, [[]])
            size = sizes.get(slot, 0)
            wanted = [i for p, i in (submission.first, submission.last) if p == partition]
            position, count = 0, len(lines)
            while position < count:
                current = chunks[-1]
                room = max_events - len(current)
                if room <= 0 or (current and size >= max_bytes):
                    current, size, room = [], 0, max_events
                    chunks.append(current)
                piece = lines[position : position + room]
                piece_bytes = sum(map(len, piece)) + len(piece)
                if size + piece_bytes > max_bytes:
                    fit, budget = 0, max_bytes - size
                    for line in piece:
                        if len(line) + 1 > budget and (fit or current):
                            break
                        budget -= len(line) + 1
                        fit += 1
                    if fit == 0:  # the next line does not fit here: start a new entry
                        current, size = [], 0
                        chunks.append(current)
                        continue
                    piece = piece[:fit]
                    piece_bytes = sum(map(len, piece)) + fit
                for index in wanted:
                    if position <= index < position + len(piece):
                        spots[(partition, index)] = (
                            len(chunks) - 1,
                            len(current) + index - position,
                        )
                current.extend(piece)
                size += piece_bytes
                position += len(piece)
            sizes[slot] = size
        located.append(spots)
    return entries, located


class EntryWriter:
    """Coalesces concurrent submissions into entries and pipelines their XADDs."""

    def __init__(
        self, connection: Reconnecting, max_events_per_entry: int, acknowledge: str = "primary"
    ) -> None:
        self.connection = connection
        self.max_events_per_entry = max_events_per_entry
        self.acknowledge = acknowledge
        self._durable = wait_command(acknowledge)  # appended to every pipeline of XADDs
        self._pending: list[Submission] = []
        self._scheduled = False
        self.entries_written = 0
        self.events_written = 0

    def submit(
        self, stream: str, batch: ParsedBatch, groups: dict[int, list[int]]
    ) -> asyncio.Future[Receipt]:
        loop = asyncio.get_running_loop()
        lines = batch.lines
        if len(groups) == 1:
            ((partition, _),) = groups.items()
            line_groups = {partition: lines}
            first = (partition, 0)
            last = (partition, len(lines) - 1)
        else:
            line_groups = {p: [lines[i] for i in indexes] for p, indexes in groups.items()}
            where = {i: (p, n) for p, indexes in groups.items() for n, i in enumerate(indexes)}
            first, last = where[0], where[len(lines) - 1]
        submission = Submission(stream, line_groups, first, last, len(lines), loop.create_future())
        self._pending.append(submission)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return submission.future

    def _flush(self) -> None:
        self._scheduled = False
        submissions, self._pending = self._pending, []
        entries, located = layout_entries(submissions, self.max_events_per_entry, MAX_ENTRY_BYTES)
        commands: list[tuple[Arg, ...]] = []
        first_command: dict[tuple[str, int], int] = {}
        for (stream, partition), chunks in entries.items():
            first_command[(stream, partition)] = len(commands)
            for chunk in chunks:
                commands.append(
                    (
                        "XADD",
                        input_key(stream, partition),
                        "*",
                        "n",
                        len(chunk),
                        "d",
                        b"\n".join(chunk),
                    )
                )
                self.events_written += len(chunk)
        self.entries_written += len(commands)
        task = asyncio.ensure_future(self._send(commands))
        task.add_done_callback(
            lambda done: self._resolve(done, submissions, located, first_command)
        )

    async def _send(self, commands: list[tuple[Arg, ...]]) -> list[object]:
        connection = await self.connection.get()
        if self._durable is None:
            return await connection.pipeline(commands)
        replies = await connection.pipeline([*commands, self._durable])
        check_durable(self.acknowledge, replies.pop())  # raises: no submission is accepted
        return replies

    @staticmethod
    def _resolve(
        done: asyncio.Future[list[object]],
        submissions: list[Submission],
        located: list[dict[tuple[int, int], tuple[int, int]]],
        first_command: dict[tuple[str, int], int],
    ) -> None:
        error = done.exception()
        replies: list[object] = [] if error is not None else done.result()
        for submission, spots in zip(submissions, located, strict=True):
            if submission.future.done():
                continue
            if error is not None:
                submission.future.set_exception(error)
                continue
            ids: list[str] = []
            failed: object = None
            for partition, index in (submission.first, submission.last):
                chunk, offset = spots[(partition, index)]
                reply = replies[first_command[(submission.stream, partition)] + chunk]
                if isinstance(reply, RespError):
                    failed = reply
                    break
                assert isinstance(reply, bytes)
                ids.append(event_id(partition, reply.decode(), offset))
            if failed is not None:
                submission.future.set_exception(RespError(str(failed)))
            else:
                submission.future.set_result(Receipt(submission.count, ids[0], ids[1]))
