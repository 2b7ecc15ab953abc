"""The entry writer: coalesces concurrent submissions into entries and pipelines their XADDs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from hda.api.v1alpha1 import Acknowledge

from ..codec import FIELD_TRACE, ParsedBatch, event_id, input_key
from ..durability import check_durable, wait_command
from ..resp import Arg, Reconnecting, RespError
from .idempotency import (
    WRITE_ONCE_SCRIPT,
    IdempotencyConflictError,
    WrittenRecord,
    digest,
    record_key,
    request_record_key,
)

MAX_ENTRY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Receipt:
    count: int
    first_id: str
    last_id: str
    replayed: bool = False  # the request's Idempotency-Key was seen: this is the first receipt

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {
            "count": self.count,
            "firstId": self.first_id,
            "lastId": self.last_id,
        }
        if self.replayed:
            body["replayed"] = True
        return body


@dataclass
class Submission:
    stream: str
    groups: dict[int, list[bytes]]  # partition -> lines, in request order within the partition
    first: tuple[int, int]  # (partition, index within that partition's lines) of event 0
    last: tuple[int, int]
    count: int
    future: asyncio.Future[Receipt]
    trace: bytes | None = None  # the request's sampled trace context (tracing.py)
    idempotency_key: str | None = None  # written once per key (idempotency.py)
    request_digest: str | None = None  # of the whole body: a keyed request on a routed stream


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
    """Coalesces concurrent submissions into entries and pipelines their XADDs. A submission
    with an idempotency key is not packed with others: its entries are written per partition by
    the write-once script (idempotency.py), in the same pipeline."""

    def __init__(
        self,
        connection: Reconnecting,
        max_events_per_entry: int,
        acknowledge: Acknowledge = "primary",
        trace_context: Callable[[], bytes | None] | None = None,
        idempotency_window_seconds: int = 600,
        *,
        routed_streams: frozenset[str] = frozenset(),
    ) -> None:
        self.connection = connection
        self.max_events_per_entry = max_events_per_entry
        self.acknowledge = acknowledge
        self._durable = wait_command(acknowledge)  # appended to every pipeline of XADDs
        self.trace_context = trace_context  # None: tracing off
        self.idempotency_window_seconds = idempotency_window_seconds
        # Streams that route events by partition key: a keyed request there is checked against
        # the record of its whole body before anything is written (idempotency.py).
        self.routed_streams = routed_streams
        self._unchecked: list[Submission] = []  # waiting for the read of their key's record
        self._checks: set[asyncio.Task[None]] = set()
        self._pending: list[Submission] = []
        self._scheduled = False
        self.entries_written = 0
        self.events_written = 0
        self.requests_replayed = 0  # keyed requests answered from their record

    def submit(
        self,
        stream: str,
        batch: ParsedBatch,
        groups: dict[int, list[int]],
        idempotency_key: str | None = None,
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
        submission = Submission(
            stream,
            line_groups,
            first,
            last,
            len(lines),
            loop.create_future(),
            idempotency_key=idempotency_key,
        )
        if self.trace_context is not None:
            submission.trace = self.trace_context()
        if idempotency_key is not None and stream in self.routed_streams:
            submission.request_digest = digest(lines)
            self._unchecked.append(submission)
            if len(self._unchecked) == 1:
                loop.call_soon(self._check_unchecked)
        else:
            self._queue(submission)
        return submission.future

    def _queue(self, submission: Submission) -> None:
        self._pending.append(submission)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _check_unchecked(self) -> None:
        """Read the whole-body records of this loop turn's keyed requests on routed streams, in
        one pipeline."""
        submissions, self._unchecked = self._unchecked, []
        check = asyncio.ensure_future(self._queue_unless_conflict(submissions))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    async def _queue_unless_conflict(self, submissions: list[Submission]) -> None:
        """Queue each keyed request on a routed stream unless its key's whole-body record names
        another body (then 422, with nothing written)."""
        keys = [str(s.idempotency_key) for s in submissions]
        reads: list[tuple[Arg, ...]] = [
            ("GET", request_record_key(s.stream, key))
            for s, key in zip(submissions, keys, strict=True)
        ]
        try:
            connection = await self.connection.get()
            records: list[object] = list(await connection.pipeline(reads))
        except (OSError, RespError) as failure:
            records = [failure] * len(submissions)
        for submission, key, record in zip(submissions, keys, records, strict=True):
            if submission.future.done():  # its client is gone
                continue
            if isinstance(record, (OSError, RespError)):
                submission.future.set_exception(record)
            elif isinstance(record, bytes) and record.decode() != submission.request_digest:
                submission.future.set_exception(IdempotencyConflictError(key))
            else:
                self._queue(submission)

    def _flush(self) -> None:
        self._scheduled = False
        submissions, self._pending = self._pending, []
        packed = [s for s in submissions if s.idempotency_key is None]
        keyed = [s for s in submissions if s.idempotency_key is not None]
        entries, located, traces = layout_entries(
            packed, self.max_events_per_entry, MAX_ENTRY_BYTES
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
        keyed_commands = [self._write_once_commands(s, commands) for s in keyed]
        task = asyncio.ensure_future(self._send(commands))

        def resolve(done: asyncio.Future[list[object]]) -> None:
            self._resolve(done, packed, located, first_command)
            self._resolve_keyed(done, keyed, keyed_commands)

        task.add_done_callback(resolve)

    def _write_once_commands(
        self, submission: Submission, commands: list[tuple[Arg, ...]]
    ) -> dict[int, tuple[int, str]]:
        """Append one write-once script call per partition of a keyed submission; returns
        partition -> (its command's index, the digest of its lines)."""
        assert submission.idempotency_key is not None
        where: dict[int, tuple[int, str]] = {}
        trace = submission.trace or b""
        for partition, lines in submission.groups.items():
            alone = Submission(
                submission.stream,
                {partition: lines},
                (partition, 0),
                (partition, len(lines) - 1),
                len(lines),
                submission.future,
            )
            entries, _, _ = layout_entries([alone], self.max_events_per_entry, MAX_ENTRY_BYTES)
            lines_digest = digest(lines)
            arguments: list[Arg] = [self.idempotency_window_seconds, lines_digest]
            for chunk in entries[(submission.stream, partition)]:
                arguments += [len(chunk), b"\n".join(chunk), trace]
            where[partition] = (len(commands), lines_digest)
            commands.append(
                (
                    "EVAL",
                    WRITE_ONCE_SCRIPT,
                    2,
                    input_key(submission.stream, partition),
                    record_key(submission.stream, partition, submission.idempotency_key),
                    *arguments,
                )
            )
        if submission.request_digest is not None:
            commands.append(
                (
                    "SET",
                    request_record_key(submission.stream, submission.idempotency_key),
                    submission.request_digest,
                    "EX",
                    self.idempotency_window_seconds,
                    "NX",
                )
            )
        return where

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

    def _resolve_keyed(
        self,
        done: asyncio.Future[list[object]],
        submissions: list[Submission],
        keyed_commands: list[dict[int, tuple[int, str]]],
    ) -> None:
        error = done.exception()
        replies: list[object] = [] if error is not None else done.result()
        for submission, where in zip(submissions, keyed_commands, strict=True):
            if submission.future.done():
                continue
            if error is not None:
                submission.future.set_exception(error)
                continue
            try:
                records = self._records(submission, where, replies)
            except (RespError, IdempotencyConflictError) as failure:
                submission.future.set_exception(failure)
                continue
            (first_partition, first_index), (last_partition, last_index) = (
                submission.first,
                submission.last,
            )
            replayed = not any(record.written for record in records.values())
            self.requests_replayed += replayed
            submission.future.set_result(
                Receipt(
                    submission.count,
                    records[first_partition].event_id(first_partition, first_index),
                    records[last_partition].event_id(last_partition, last_index),
                    replayed=replayed,
                )
            )

    def _records(
        self, submission: Submission, where: dict[int, tuple[int, str]], replies: list[object]
    ) -> dict[int, WrittenRecord]:
        """Each partition's record of a keyed submission; counts what was written now."""
        records: dict[int, WrittenRecord] = {}
        for partition, (index, lines_digest) in where.items():
            reply = replies[index]
            if isinstance(reply, RespError):
                raise reply
            try:
                record = WrittenRecord.parse(reply)
            except ValueError as unreadable:  # answered 503 like any Valkey error, never hung
                raise RespError(str(unreadable)) from None
            if record.written:
                self.entries_written += len(record.entries)
                self.events_written += sum(count for _, count in record.entries)
            elif record.digest != lines_digest:
                raise IdempotencyConflictError(str(submission.idempotency_key))
            records[partition] = record
        return records
