"""Output volume use as gauges, read from the filesystem at each scrape.

Output calls `VolumeGauges(metrics, data_dir)` once and `update()` before rendering its metrics;
the dashboard's disk panel and the "output volume over 85%" alert read these two series.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .metrics import Metrics

USED = "hda_output_volume_used_bytes"
SIZE = "hda_output_volume_size_bytes"


@dataclass(frozen=True)
class VolumeUsage:
    used_bytes: int
    size_bytes: int


def volume_usage(path: str | Path) -> VolumeUsage:
    """Bytes used and total on the filesystem holding `path` (root's reserve counts as used:
    a volume whose only free space is the reserve is full for output, which does not run as
    root)."""
    stats = os.statvfs(path)
    size = stats.f_blocks * stats.f_frsize
    return VolumeUsage(used_bytes=size - stats.f_bavail * stats.f_frsize, size_bytes=size)


class VolumeGauges:
    def __init__(self, metrics: Metrics, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.used = metrics.gauge(USED, "Bytes in use on the output volume")
        self.size = metrics.gauge(SIZE, "Size of the output volume in bytes")

    def update(self) -> None:
        try:
            usage = volume_usage(self.data_dir)
        except OSError:
            return  # not mounted (yet): no sample rather than a wrong one
        self.used.set(usage.used_bytes)
        self.size.set(usage.size_bytes)
