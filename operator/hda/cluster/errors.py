"""Errors of the local control plane; each one says what failed and where to look."""

from __future__ import annotations

from pathlib import Path


class ClusterError(Exception):
    """A local cluster could not be started, inspected or stopped."""


class BinariesNotFoundError(ClusterError):
    """The pinned upstream binaries are neither built nor on PATH."""


class ComponentFailedError(ClusterError):
    """One component did not become healthy; names it and the path of its log."""

    def __init__(self, component: str, log_path: Path, reason: str, log_tail: str = "") -> None:
        self.component = component
        self.log_path = log_path
        self.reason = reason
        message = f"{component} failed: {reason} (log: {log_path})"
        if log_tail:
            message += f"\nlast lines of {log_path}:\n{log_tail}"
        super().__init__(message)
