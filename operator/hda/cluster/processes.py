"""Starting component processes that outlive `hda cluster up`, and stopping only our own.

A process is ours when its command line starts with the binary we launched and mentions the
cluster's state directory; `stop` checks that before sending any signal, so a recycled PID is
never killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Keep the Popen objects of children started by this interpreter, so they are reaped (no zombies,
# no "subprocess is still running" warnings) when the same process also stops them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_EXIT_CODES: dict[int, int] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """What `down` needs to find and verify a component process."""

    component: str
    pid: int
    binary: str
    log: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(
            component=str(data["component"]),
            pid=int(data["pid"]),
            binary=str(data["binary"]),
            log=str(data["log"]),
        )


def start(
    component: str,
    argv: list[str],
    log_path: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> ProcessRecord:
    """Start `argv` in its own session, stdout and stderr appended to `log_path`.

    `env` adds to (does not replace) this process's environment.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        log_file.write(f"\n==> {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        log_file.flush()
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **env} if env else None,
            start_new_session=True,
        )
    _CHILDREN[child.pid] = child
    _EXIT_CODES.pop(child.pid, None)
    log.info("started %s (pid %d), log %s", component, child.pid, log_path)
    return ProcessRecord(component=component, pid=child.pid, binary=argv[0], log=str(log_path))


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (our own exited children are reaped)."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in {"Z", "X"}:
        _reap(pid)
        return False
    return True


def cmdline(pid: int) -> list[str] | None:
    """The command line of a live `pid` (empty while it is in the middle of exec), else None."""
    if not alive(pid):
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_ours(record: ProcessRecord, marker: str) -> bool:
    """True if `record.pid` is alive and still runs our binary for the cluster `marker`."""
    argv = cmdline(record.pid)
    if not argv or argv[0] != record.binary:
        return False
    return any(marker in arg for arg in argv[1:])


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _EXIT_CODES[pid] = child.returncode
        del _CHILDREN[pid]


def exit_status(record: ProcessRecord) -> int | None:
    """The exit code if this interpreter started the process and it exited, else None."""
    _reap(record.pid)
    return _EXIT_CODES.get(record.pid)


def stop(record: ProcessRecord, marker: str, timeout: float = 10.0) -> bool:
    """SIGTERM the process (then SIGKILL after `timeout`) if it is ours; True if it was."""
    if not is_ours(record, marker):
        log.info("%s (pid %d) is not running; nothing to stop", record.component, record.pid)
        return False
    log.info("stopping %s (pid %d)", record.component, record.pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(record.pid):
            return True
        time.sleep(0.05)
    log.warning(
        "%s (pid %d) ignored SIGTERM for %.0fs; killing", record.component, record.pid, timeout
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and alive(record.pid):
        time.sleep(0.05)
    return True


def tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            last = deque(handle.read().decode(errors="replace").splitlines(), maxlen=lines)
    except FileNotFoundError:
        return ""
    return "\n".join(last)
