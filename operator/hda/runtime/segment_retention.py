"""Segment file retention: which old segments to delete (pure), then deleting them.

Limits: an age (by a segment's last write) per stream and a total size for the whole volume.
Deletion goes oldest first within each stream and never reaches a protected segment: the one
being written, or any a subscriber is still reading history from. A subscriber that resumes
from a record in a deleted segment gets history from the oldest segment left (see output.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .segments import list_segments, segment_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentFile:
    stream: str
    number: int
    size: int
    modified: float  # seconds since the epoch of its last write


def segments_to_delete(
    segments: Mapping[str, list[SegmentFile]],
    protected_from: Mapping[str, int],
    *,
    now: float,
    max_age_seconds: float | None,
    max_total_bytes: int | None,
) -> list[SegmentFile]:
    """Oldest-first deletions; `segments` per stream in number order, `protected_from` the
    lowest number of each stream that must stay (with every later one)."""
    deletable = {
        stream: [s for s in files if s.number < protected_from.get(stream, files[-1].number)]
        for stream, files in segments.items()
        if files
    }
    chosen: list[SegmentFile] = []
    if max_age_seconds is not None:
        cut = now - max_age_seconds
        for stream, files in deletable.items():
            old = 0
            while old < len(files) and files[old].modified < cut:
                old += 1
            chosen.extend(files[:old])
            deletable[stream] = files[old:]
    if max_total_bytes is not None:
        total = sum(s.size for files in segments.values() for s in files)
        total -= sum(s.size for s in chosen)
        while total > max_total_bytes:
            heads = [files[0] for files in deletable.values() if files]
            if not heads:
                break  # only protected segments left: nothing more may go
            oldest = min(heads, key=lambda s: s.modified)
            deletable[oldest.stream].pop(0)
            chosen.append(oldest)
            total -= oldest.size
    return chosen


def scan_volume(data_dir: Path, streams: list[str]) -> dict[str, list[SegmentFile]]:
    found: dict[str, list[SegmentFile]] = {}
    for stream in streams:
        files = []
        for number, path in list_segments(data_dir / stream):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append(SegmentFile(stream, number, stat.st_size, stat.st_mtime))
        found[stream] = files
    return found


def delete_segments(data_dir: Path, chosen: list[SegmentFile]) -> int:
    """Delete the chosen files; returns the bytes freed."""
    freed = 0
    for segment in chosen:
        path = data_dir / segment.stream / segment_name(segment.number)
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        freed += segment.size
        log.info(
            "segment deleted by retention",
            extra={"stream": segment.stream, "segment": segment.number, "bytes": segment.size},
        )
    return freed
