"""Segment files: the durable record of output. Pure parsing first, then the writer.

A segment is NDJSON. Its first line is a header carrying, per partition, the last record ID
written before the segment began, so recovery and resume read one segment, not all of them:

    {"segment":3,"stream":"events","createdMs":1700000000000,"last":{"0":"1700-0","1":"1699-4"}}
    {"id":"0/1700000000001-0","src":"1699999999999-0","n":2,"events":[{...},{...}]}

Every record line carries its output stream ID (partition/entry ID) and its input entry ID.
A line without its newline is a torn write from a crash: recovery truncates it away. A line that
is not one JSON object is where a torn write was continued (a full disk, an I/O error): scanning
stops there too. The writer never lets that happen: a failed write or fsync rolls the files back
to the last durable position before anything else is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .codec import StreamId, format_stream_id, parse_stream_id

SEGMENT_PREFIX = "segment-"
SEGMENT_SUFFIX = ".ndjson"
_RECORD_PREFIX = b'{"id":"'


READ_CHUNK_BYTES = 1 << 20  # what a subscriber's history read holds at a time
CHECKPOINT_BYTES = 1 << 20  # spacing of the writer's resume checkpoints in the current segment

# Errors of the disk, not of our data: output rolls back, stops acknowledging and retries.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def is_disk_error(error: OSError) -> bool:
    return error.errno in DISK_ERRNOS


def segment_name(number: int) -> str:
    return f"{SEGMENT_PREFIX}{number:08d}{SEGMENT_SUFFIX}"


def segment_number(path: Path) -> int | None:
    name = path.name
    if not (name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX)):
        return None
    digits = name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def encode_record(
    partition: int, entry_id: bytes, source_id: bytes, count: int, payload: bytes
) -> bytes:
    """One record line; the payload's NDJSON lines are spliced into a JSON array unchanged."""
    return b"".join(
        (
            b'{"id":"%d/' % partition,
            entry_id,
            b'","src":"',
            source_id,
            b'","n":%d,"events":[' % count,
            payload.replace(b"\n", b","),
            b"]}\n",
        )
    )


def encode_header(number: int, stream: str, created_ms: int, last: dict[int, StreamId]) -> bytes:
    header = {
        "segment": number,
        "stream": stream,
        "createdMs": created_ms,
        "last": {str(p): format_stream_id(i) for p, i in sorted(last.items())},
    }
    return orjson.dumps(header) + b"\n"


def record_position(line: bytes) -> tuple[int, StreamId] | None:
    """(partition, entry ID) of a record line without parsing its events; None for a header."""
    if not line.startswith(_RECORD_PREFIX):
        return None
    end = line.index(b'"', len(_RECORD_PREFIX))
    partition, _, entry_id = line[len(_RECORD_PREFIX) : end].partition(b"/")
    return int(partition), parse_stream_id(entry_id)


@dataclass
class SegmentScan:
    """What a segment holds: its header's starting positions, the last ID per partition,
    the byte length of its intact prefix, and where each record starts."""

    header_last: dict[int, StreamId] = field(default_factory=dict)
    last: dict[int, StreamId] = field(default_factory=dict)
    intact_length: int = 0
    records: int = 0
    created_ms: int | None = None


def scan_segment(data: bytes) -> SegmentScan:
    """Parse a segment's bytes; stops at the first torn or unreadable line."""
    scan = SegmentScan()
    offset = 0
    while True:
        newline = data.find(b"\n", offset)
        if newline < 0:
            break  # a torn tail (or nothing) after the last newline
        line = data[offset:newline]
        if line.startswith(_RECORD_PREFIX):
            # a torn line, or a torn line with a later record appended to it, ends the scan
            if not line.endswith(b"]}") or not _is_one_json_object(line):
                break
            try:
                position = record_position(line)
            except ValueError:
                break
            assert position is not None
            partition, entry_id = position
            scan.last[partition] = entry_id
            scan.records += 1
        else:
            try:
                header = orjson.loads(line)
            except orjson.JSONDecodeError:
                break
            if offset != 0 or not isinstance(header, dict) or "segment" not in header:
                break
            scan.header_last = {int(p): parse_stream_id(i) for p, i in header["last"].items()}
            scan.last = dict(scan.header_last)
            scan.created_ms = int(header.get("createdMs", 0))
        offset = newline + 1
    scan.intact_length = offset
    return scan


def _is_one_json_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def iter_lines(data: bytes, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(end offset, line without newline) of each complete line from `start`."""
    offset = start
    while True:
        newline = data.find(b"\n", offset)
        if newline < 0:
            return
        yield newline + 1, data[offset:newline]
        offset = newline + 1


@dataclass(frozen=True, order=True)
class FilePosition:
    """A byte position in a stream's sequence of segments: orders all records of one replica."""

    segment: int
    offset: int


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(segment_number(path), path) for path in directory.iterdir()]
    return sorted((number, path) for number, path in found if number is not None)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until done: a short write is how a filling disk first shows (ENOSPC follows)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class SegmentWriter:
    """Appends records of one stream; `sync` makes everything written so far durable."""

    def __init__(
        self, directory: Path, stream: str, *, max_bytes: int, max_age_seconds: float
    ) -> None:
        self.directory = directory
        self.stream = stream
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self.durable_last: dict[int, StreamId] = {}
        self._written_last: dict[int, StreamId] = {}
        self._number = 0
        self._size = 0
        self._created = 0.0
        self._file: int | None = None
        self._dirty = False
        self.durable_position = FilePosition(0, 0)
        self._durable_created = 0.0
        self._broken = False  # a write or fsync failed: roll back before writing again
        # Offsets in the current segment with the last ID per partition before each, every
        # CHECKPOINT_BYTES: a live subscriber starts near the end instead of reading it all.
        self._checkpoints: list[tuple[int, dict[int, StreamId]]] = []

    @property
    def current_segment(self) -> int:
        """The number of the segment being written (retention never deletes it)."""
        return self._number

    def recover(self) -> dict[int, StreamId]:
        """Open the newest segment, cut a torn tail, fsync; returns the last durable ID per
        partition (everything intact in the files counts: we fsync it before returning)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        segments = list_segments(self.directory)
        if not segments:
            self._open_new(1, {})
            self._mark_durable()
            return {}
        number, path = segments[-1]
        data = path.read_bytes()
        scan = scan_segment(data)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        if scan.intact_length < len(data):
            os.ftruncate(fd, scan.intact_length)
        if scan.intact_length == 0:  # even the header was torn: rewrite it
            previous = scan_segment(segments[-2][1].read_bytes()).last if len(segments) > 1 else {}
            _write_all(fd, encode_header(number, self.stream, int(time.time() * 1000), previous))
            scan = scan_segment(encode_header(number, self.stream, 0, previous))
        os.fsync(fd)
        self._file = fd
        self._number = number
        self._size = os.fstat(fd).st_size
        self._created = (scan.created_ms or int(time.time() * 1000)) / 1000
        self.durable_last = dict(scan.last)
        self._written_last = dict(scan.last)
        self._checkpoints = [(self._size, dict(scan.last))]
        self._mark_durable()
        return dict(scan.last)

    def _open_new(self, number: int, last: dict[int, StreamId]) -> None:
        path = self.directory / segment_name(number)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
        now = time.time()
        header = encode_header(number, self.stream, int(now * 1000), last)
        try:
            _write_all(fd, header)
            os.fsync(fd)
            _fsync_directory(self.directory)
        except OSError:
            os.close(fd)
            raise
        self._file = fd
        self._number = number
        self._size = len(header)
        self._created = now
        self._checkpoints = [(self._size, dict(last))]

    def _rotate_if_due(self) -> None:
        if self._size >= self.max_bytes or time.time() - self._created >= self.max_age_seconds:
            assert self._file is not None
            os.fsync(self._file)
            os.close(self._file)
            self._file = None
            self._open_new(self._number + 1, dict(self._written_last))

    def append(self, records: list[tuple[int, StreamId, bytes]]) -> None:
        """Write records (partition, entry ID, line); durable only after `sync`. Rotation can
        happen between any two records, so a segment never grows far past its size."""
        if not records:
            return
        if self._broken:
            self.rollback()
        try:
            start = 0
            while start < len(records):
                self._rotate_if_due()
                end = start
                size = self._size
                while end < len(records) and (end == start or size < self.max_bytes):
                    size += len(records[end][2])
                    end += 1
                self._write(records[start:end])
                start = end
        except OSError:
            self._broken = True
            raise

    def _write(self, records: list[tuple[int, StreamId, bytes]]) -> None:
        assert self._file is not None
        data = b"".join(line for _, _, line in records)
        _write_all(self._file, data)
        for partition, entry_id, line in records:
            if self._size - self._checkpoints[-1][0] >= CHECKPOINT_BYTES:
                self._checkpoints.append((self._size, dict(self._written_last)))
            self._written_last[partition] = entry_id
            self._size += len(line)
        self._dirty = True

    def sync(self) -> FilePosition:
        if self._broken:
            raise OSError(errno.EIO, f"segment writer of {self.stream} needs a rollback first")
        if self._dirty and self._file is not None:
            try:
                os.fsync(self._file)
            except OSError:
                self._broken = True
                raise
            self._dirty = False
        self.durable_last = dict(self._written_last)
        self._mark_durable()
        return self.durable_position

    def live_start(self, after: dict[int, StreamId], partitions: int) -> FilePosition:
        """Where in the current segment to start reading for the records after `after`: the
        last checkpoint with nothing past `after` before it (an unnamed partition is from the
        beginning: the segment's start)."""
        best = 0
        for offset, last in self._checkpoints:
            if offset > self.durable_position.offset:
                break
            if all(p in after and last.get(p, (0, 0)) <= after[p] for p in range(partitions)):
                best = offset
        return FilePosition(self._number, best)

    def _mark_durable(self) -> None:
        self.durable_position = FilePosition(self._number, self._size)
        self._durable_created = self._created

    def rollback(self) -> int:
        """Forget everything written since the last `sync`: after a failed write or fsync those
        bytes are unknown (a torn line, or pages the kernel dropped). Segments begun since are
        deleted, the durable one is cut back to the durable position. Returns the bytes cut."""
        durable = self.durable_position
        self._broken = True  # until this rollback completes
        if self._file is not None:
            with contextlib.suppress(OSError):  # the close of a failed file may fail too
                os.close(self._file)
            self._file = None
        discarded = 0
        for number, path in list_segments(self.directory):
            if number > durable.segment:
                discarded += path.stat().st_size
                path.unlink(missing_ok=True)
        fd = os.open(self.directory / segment_name(durable.segment), os.O_WRONLY | os.O_APPEND)
        try:
            discarded += os.fstat(fd).st_size - durable.offset
            os.ftruncate(fd, durable.offset)
            os.fsync(fd)
            _fsync_directory(self.directory)
        except OSError:
            os.close(fd)
            raise
        self._file = fd
        if self._number != durable.segment:
            self._checkpoints = [(0, {})]  # its checkpoints are gone: from the start
        self._checkpoints = [c for c in self._checkpoints if c[0] <= durable.offset]
        self._number = durable.segment
        self._size = durable.offset
        self._created = self._durable_created
        self._written_last = dict(self.durable_last)
        self._dirty = False
        self._broken = False
        return discarded

    def close(self) -> None:
        if self._broken:
            with contextlib.suppress(OSError):  # recovery cuts whatever is left torn
                self.rollback()
        if self._file is not None:
            self.sync()
            os.close(self._file)
            self._file = None


def resume_segment(directory: Path, after: dict[int, StreamId], partitions: int) -> int | None:
    """The earliest segment that can hold a record after the position vector `after` (a
    partition it does not name starts from the beginning); None without segments. Only segment
    headers are read: the reader skips the records at or below `after` itself."""
    segments = list_segments(directory)
    if not segments:
        return None
    if len(after) < partitions:
        return segments[0][0]
    headers = [(number, _header_last(path)) for number, path in segments]
    earliest = segments[-1][0]
    for partition, position in after.items():
        candidate = segments[0][0]
        for number, header_last in headers:
            started_after = header_last.get(partition)
            if started_after is not None and started_after >= position:
                break  # this segment starts past the position: the next record is earlier
            candidate = number
        earliest = min(earliest, candidate)
    return earliest


def _header_last(path: Path) -> dict[int, StreamId]:
    with path.open("rb") as handle:
        header_line = handle.readline(1 << 20)
    try:
        header = orjson.loads(header_line)
        return {int(p): parse_stream_id(i) for p, i in header["last"].items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return {}


def iter_file_lines(
    path: Path, start: int = 0, end: int | None = None, chunk_bytes: int = READ_CHUNK_BYTES
) -> Iterator[tuple[int, bytes]]:
    """(end offset, line) of each complete line of a file between two offsets, read a chunk
    at a time: memory is one chunk plus the longest line, whatever the file's size."""
    with path.open("rb") as handle:
        handle.seek(start)
        offset = start
        carry = b""
        while end is None or offset < end:
            data = handle.read(chunk_bytes if end is None else min(chunk_bytes, end - offset))
            if not data:
                return
            offset += len(data)
            buffer = carry + data if carry else data
            base = offset - len(buffer)
            line_start = 0
            while (newline := buffer.find(b"\n", line_start)) >= 0:
                yield base + newline + 1, buffer[line_start:newline]
                line_start = newline + 1
            carry = buffer[line_start:]


class SegmentRangeReader:
    """Record lines of a stream's segments from `start` up to `end` (durable bytes only),
    about `chunk_bytes` per `read` call; blocking, so callers run `read` in a thread.
    A segment deleted by retention before the reader reaches it is skipped."""

    def __init__(
        self,
        directory: Path,
        start: FilePosition,
        end: FilePosition,
        chunk_bytes: int = READ_CHUNK_BYTES,
    ) -> None:
        self.directory = directory
        self.start = start
        self.end = end
        self.chunk_bytes = chunk_bytes
        self.segment = start.segment  # the one being read: retention keeps it
        self._pending = [
            n for n, _ in list_segments(directory) if start.segment <= n <= end.segment
        ]
        self._lines: Iterator[tuple[int, bytes]] | None = None

    def read(self) -> list[bytes] | None:
        """The next record lines; None once everything up to `end` was returned."""
        lines: list[bytes] = []
        size = 0
        while size < self.chunk_bytes:
            if self._lines is None:
                if not self._pending:
                    break
                number = self._pending.pop(0)
                self.segment = number
                self._lines = iter_file_lines(
                    self.directory / segment_name(number),
                    self.start.offset if number == self.start.segment else 0,
                    self.end.offset if number == self.end.segment else None,
                    self.chunk_bytes,
                )
            try:
                _, line = next(self._lines)
            except (StopIteration, FileNotFoundError):
                self._lines = None
                continue
            if line.startswith(_RECORD_PREFIX):
                lines.append(line)
                size += len(line)
        return lines or None  # empty only once exhausted
