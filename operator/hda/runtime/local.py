"""`hda run`: the pipeline of one manifest as local processes on an embedded Valkey.

Also what `hda bench` and the runtime tests use to start real component processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hda.api.consts import ENV_REDIS_URL
from hda.api.v1alpha1 import load_manifest

from .config import ENV_CONSUMER_NAME, load_config
from .topology.local import FailoverSettings, LocalBuffer, local_buffer

log = logging.getLogger(__name__)


@dataclass
class Component:
    """One child process: `python -m hda.runtime COMMAND ARGS`, logging to a file."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            # Own session: Ctrl-C reaches only `hda run`, which stops children in order.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hda.runtime", *self.command],
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL and reap: a crash."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode


def wait_ready(url: str, timeout: float = 30.0, process: Component | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.running:
            raise RuntimeError(f"{process.name} exited; see {process.log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our http URL)
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s")


class LocalPipeline:
    def __init__(
        self,
        manifest: Path,
        *,
        data_dir: Path,
        redis_url: str | None = None,
        workers: int | None = None,
        ingest_port: int = 8080,
        output_port: int = 8081,
        worker_port: int = 0,
        appendfsync: str | None = None,
        log_level: str = "INFO",
        ingest_processes: int = 1,
        outputs: int = 1,
        worker_args: list[str] | None = None,
        ingest_args: list[str] | None = None,
        failover: FailoverSettings | None = None,
    ) -> None:
        self.manifest = manifest.resolve()
        self.config = load_config(manifest)
        self.data_dir = data_dir.resolve()
        self.redis_url = redis_url
        self.valkey: LocalBuffer | None = None
        spec = load_manifest(manifest.read_text(), source=str(manifest)).spec
        self.redis_spec = spec.redis
        self.failover = failover or FailoverSettings()
        self.worker_count = workers if workers is not None else max(1, spec.workers.replicas)
        self.appendfsync = appendfsync or spec.redis.persistence.append_fsync
        self.ingest_port = ingest_port
        self.output_port = output_port
        self.worker_port = worker_port  # worker i listens on worker_port + i; 0: not at all
        self.log_level = log_level
        self.ingest_processes = ingest_processes
        self.outputs = outputs
        self.worker_args = worker_args or []
        self.ingest_args = ingest_args or []
        self.components: list[Component] = []

    @property
    def output_dir(self) -> Path:
        return self.output_dir_of(0)

    def output_dir_of(self, replica: int) -> Path:
        return self.data_dir / ("output" if replica == 0 else f"output-{replica}")

    @property
    def output_ports(self) -> list[int]:
        """Output replica i listens on output_port + i; any of them serves the whole stream."""
        return [self.output_port + i for i in range(self.outputs)]

    def _component(self, name: str, command: list[str]) -> Component:
        assert self.redis_url is not None
        common = ["--config", str(self.manifest), "--redis-url", self.redis_url]
        return Component(
            name=name,
            command=[command[0], *common, "--log-level", self.log_level, *command[1:]],
            env={ENV_CONSUMER_NAME: name, ENV_REDIS_URL: self.redis_url},
            log_path=self.data_dir / "logs" / f"{name}.log",
        )

    def start(self) -> None:
        if self.redis_url is None:
            self.valkey = local_buffer(
                self.redis_spec, self.data_dir / "valkey", self.appendfsync, self.failover
            )
            self.valkey.start()
            self.redis_url = self.valkey.url
        reuse = ["--reuse-port"] if self.ingest_processes > 1 else []
        self.components = [
            self._component(
                f"ingest-{i}",
                ["ingest", "--port", str(self.ingest_port), *reuse, *self.ingest_args],
            )
            for i in range(self.ingest_processes)
        ]
        self.components += [
            self._component(
                f"worker-{i}", ["worker", "--port", str(self._worker_port(i)), *self.worker_args]
            )
            for i in range(self.worker_count)
        ]
        peers = ",".join(
            f"output-{i}=http://127.0.0.1:{port}" for i, port in enumerate(self.output_ports)
        )
        outputs = [
            self._component(
                f"output-{i}",
                [
                    "output",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(self.output_dir_of(i)),
                    "--peers",
                    peers,
                ],
            )
            for i, port in enumerate(self.output_ports)
        ]
        self.components += outputs
        for component in self.components:
            component.start()
        wait_ready(f"http://127.0.0.1:{self.ingest_port}/readyz", process=self.components[0])
        for port, component in zip(self.output_ports, outputs, strict=True):
            wait_ready(f"http://127.0.0.1:{port}/readyz", process=component)

    def _worker_port(self, index: int) -> int:
        return self.worker_port + index if self.worker_port else 0

    def by_name(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def restart_crashed(self) -> list[str]:
        restarted = []
        for component in self.components:
            if component.process is not None and not component.running:
                log.warning(
                    "component exited; restarting",
                    extra={"component": component.name, "code": component.process.returncode},
                )
                component.restarts += 1
                component.start()
                restarted.append(component.name)
        return restarted

    def stop(self) -> None:
        """Ingest first (no new events), then workers and output finish their batches."""
        for component in self.components:
            if component.name.startswith("ingest"):
                component.stop()
        for component in self.components:
            if not component.name.startswith("ingest"):
                component.signal(signal.SIGTERM)
        for component in self.components:
            component.stop()
        if self.valkey is not None:
            self.valkey.stop()

    def run_until_interrupted(self, announce: Callable[[str], None]) -> None:
        stopping = False

        def request_stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        previous = signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            self.start()
            names = ", ".join(s.name for s in self.config.streams)
            announce(
                f"HDA running: streams [{names}]\n"
                f"  ingest  POST http://127.0.0.1:{self.ingest_port}/v1/streams/NAME/events\n"
                f"          WS   ws://127.0.0.1:{self.ingest_port}/v1/streams/NAME/ws\n"
                f"  output  {self.data_dir}/output*  (segments, {self.outputs} replicas)\n"
                f"          WS   ws://127.0.0.1:{self.output_port}/v1/streams/NAME/subscribe?from=0\n"
                f"  metrics http://127.0.0.1:{{{self.ingest_port},{self.output_port}}}/metrics"
                + (
                    f", workers on {self.worker_port}..{self._worker_port(self.worker_count - 1)}"
                    if self.worker_port
                    else " (workers: --worker-port)"
                )
                + "\n"
                f"  valkey  {self.redis_url}\n"
                f"  logs    {self.data_dir / 'logs'}\n"
                "Ctrl-C stops everything."
            )
            while not stopping:
                time.sleep(0.2)
                self.restart_crashed()
        finally:
            announce("stopping ...")
            self.stop()
            signal.signal(signal.SIGTERM, previous)
            announce("stopped")
