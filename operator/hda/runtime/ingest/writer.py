"""The entry writer: coalesces concurrent submissions into entries and pipelines their XADDs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from hda.api.v1alpha1 import Acknowledge

from ..codec import FIELD_TRACE, ParsedBatch, event_id, input_key
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
    trace: bytes | None = None  # the request's sampled trace context (tracing.py)


Slot = tuple[str, int]  # (stream, partition)
Spots = dict[tuple[int, int], tuple[int, int]]  # (partition, index) -> (entry number, offset)
Traces = dict[Slot, dict[int, list[bytes]]]  # slot -> entry number -> contexts of its requests


def layout_entries(
    submissions: list[Submission], max_events: int, max_bytes: int
) -> tuple[dict[Slot, list[list[bytes]]], list[Spots], Traces]:
    """Pack the submissions' lines into entries per (stream, partition), in submission order,
    each at most `max_events` lines and `max_bytes` (a single larger line gets its own entry).
    Also returns where each submission's first and last events landed, and the trace contexts
    of the traced submissions each entry holds events of."""
    entries: dict[Slot, list[list[bytes]]] = {}
    sizes: dict[Slot, int] = {}
    located: list[Spots] = []
    traces: Traces = {}
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
                if submission.trace is not None:
                    traces.setdefault(slot, {}).setdefault(len(chunks) - 1, []).append(
                        submission.trace
                    )
                position += len(piece)
            sizes[slot] = size
        located.append(spots)
    return entries, located, traces


class EntryWriter:
    """Coalesces concurrent submissions into entries and pipelines their XADDs."""

    def __init__(
        self,
        connection: Reconnecting,
        max_events_per_entry: int,
        acknowledge: Acknowledge = "primary",
        trace_context: Callable[[], bytes | None] | None = None,
    ) -> None:
        self.connection = connection
        self.max_events_per_entry = max_events_per_entry
        self.acknowledge = acknowledge
        self._durable = wait_command(acknowledge)  # appended to every pipeline of XADDs
        self.trace_context = trace_context  # None: tracing off
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
        if self.trace_context is not None:
            submission.trace = self.trace_context()
        self._pending.append(submission)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return submission.future

    def _flush(self) -> None:
        self._scheduled = False
        submissions, self._pending = self._pending, []
        entries, located, traces = layout_entries(
            submissions, self.max_events_per_entry, MAX_ENTRY_BYTES
        )
        commands: list[tuple[Arg, ...]] = []
        first_command: dict[tuple[str, int], int] = {}
        for (stream, partition), chunks in entries.items():
            first_command[(stream, partition)] = len(commands)
            slot_traces = traces.get((stream, partition), {})
            for number, chunk in enumerate(chunks):
                command: tuple[Arg, ...] = (
                    "XADD",
                    input_key(stream, partition),
                    "*",
                    "n",
                    len(chunk),
                    "d",
                    b"\n".join(chunk),
                )
                if number in slot_traces:
                    command += (FIELD_TRACE, b"\n".join(slot_traces[number]))
                commands.append(command)
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
