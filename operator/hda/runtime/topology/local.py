"""Local topologies for `hda run` and the runtime tests, from the embedded valkey-server binary.

Every server is a child process whose first argument is a config file naming its role as
started (`valkey-primary.conf`, `valkey-replica-1.conf`, `sentinel-1.conf`): after a failover
the roles move, so `primary()` asks Sentinel which one is the primary now.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from hda.api.v1alpha1.buffer import RedisSpec

from ..embedded import EmbeddedValkey, free_port, valkey_binary
from .sentinel import HostPort

PRIMARY_NAME = "hda"
SENTINEL_COUNT = 3  # a majority (2) survives one lost Sentinel
# A primary silent this long counts as down: small, so a local failover takes about a second
# (Kubernetes deployments keep Sentinel's own default of 30 s unless told otherwise).
DEFAULT_DOWN_AFTER_MS = 1000
DEFAULT_FAILOVER_TIMEOUT_MS = 10_000
# Every node may become a primary: replicas sync at once instead of Valkey's 5 s batching wait.
NODE_ARGS = ("--repl-diskless-sync-delay", "0")


@dataclass(frozen=True)
class FailoverSettings:
    down_after_ms: int = DEFAULT_DOWN_AFTER_MS
    failover_timeout_ms: int = DEFAULT_FAILOVER_TIMEOUT_MS


class EmbeddedSentinel(EmbeddedValkey):
    """`valkey-server sentinel-N.conf --sentinel`: Sentinel rewrites that file as it learns."""

    def __init__(
        self, data_dir: Path, number: int, primary: HostPort, settings: FailoverSettings
    ) -> None:
        super().__init__(data_dir, role=f"sentinel-{number}")
        self.number = number
        self.primary_address = primary
        self.settings = settings

    def command(self) -> list[str]:
        config = self.data_dir / f"sentinel-{self.number}.conf"
        host, port = self.primary_address
        config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f'dir "{self.data_dir}"\n'
            'logfile "sentinel.log"\n'
            f"sentinel monitor {PRIMARY_NAME} {host} {port} {SENTINEL_COUNT // 2 + 1}\n"
            f"sentinel down-after-milliseconds {PRIMARY_NAME} {self.settings.down_after_ms}\n"
            f"sentinel failover-timeout {PRIMARY_NAME} {self.settings.failover_timeout_ms}\n"
        )
        return [str(valkey_binary()), str(config), "--sentinel"]


class ReplicatedValkey:
    """One primary, `replicas` replicas and three Sentinels on loopback."""

    def __init__(
        self,
        data_dir: Path,
        *,
        replicas: int,
        appendfsync: str = "everysec",
        settings: FailoverSettings | None = None,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"a replicated topology needs replicas >= 1, got {replicas}")
        self.data_dir = data_dir
        self.settings = settings or FailoverSettings()
        primary_port = free_port()
        self.nodes = [
            EmbeddedValkey(
                data_dir / "primary",
                port=primary_port,
                appendfsync=appendfsync,
                role="primary",
                extra_args=NODE_ARGS,
            )
        ]
        self.nodes += [
            EmbeddedValkey(
                data_dir / f"replica-{n}",
                appendfsync=appendfsync,
                role=f"replica-{n}",
                extra_args=(*NODE_ARGS, "--replicaof", "127.0.0.1", str(primary_port)),
            )
            for n in range(1, replicas + 1)
        ]
        self.sentinels = [
            EmbeddedSentinel(
                data_dir / f"sentinel-{n}", n, ("127.0.0.1", primary_port), self.settings
            )
            for n in range(1, SENTINEL_COUNT + 1)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{PRIMARY_NAME}/0"

    def start(self, timeout: float = 30.0) -> None:
        for server in [*self.nodes, *self.sentinels]:
            server.start()
        self.wait_settled(timeout)

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Until every replica is in sync and every Sentinel knows all replicas and the other
        Sentinels: before that a failover could not happen."""
        deadline = time.monotonic() + timeout
        replicas = len(self.nodes) - 1
        state = ""
        while time.monotonic() < deadline:
            try:
                primary = self.primary()
                with redis.Redis(port=primary.port, socket_timeout=2) as client:
                    info = client.info("replication")
                online = sum(
                    1
                    for key, value in info.items()
                    if key.startswith("slave")
                    and isinstance(value, dict)
                    and value.get("state") == "online"
                )
                known = []
                for sentinel in self.sentinels:
                    with redis.Redis(port=sentinel.port, socket_timeout=2) as client:
                        master = client.sentinel_master(PRIMARY_NAME)
                    known.append((master["num-slaves"], master["num-other-sentinels"]))
                state = f"replicas online {online}, sentinels know (replicas, sentinels) {known}"
                if online == replicas and all(k == (replicas, SENTINEL_COUNT - 1) for k in known):
                    return
            except (redis.RedisError, LookupError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"replicated Valkey did not settle in {timeout}s: {state}")

    def primary(self) -> EmbeddedValkey:
        """The node the Sentinels name primary now."""
        for sentinel in self.sentinels:
            if sentinel.process is None or sentinel.process.poll() is not None:
                continue
            with (
                contextlib.suppress(redis.RedisError),
                redis.Redis(port=sentinel.port, socket_timeout=2) as client,
            ):
                _, port = client.sentinel_get_master_addr_by_name(PRIMARY_NAME)
                return next(node for node in self.nodes if node.port == int(port))
        raise LookupError("no Sentinel answers with a primary")

    def stop(self) -> None:
        for server in [*self.sentinels, *self.nodes]:
            with contextlib.suppress(OSError):
                server.stop()

    def kill(self) -> None:
        for server in [*self.sentinels, *self.nodes]:
            server.kill()


LocalBuffer = EmbeddedValkey | ReplicatedValkey


def local_buffer(
    spec: RedisSpec, data_dir: Path, appendfsync: str, settings: FailoverSettings
) -> LocalBuffer:
    """The topology `spec.redis` asks for, not started yet."""
    if spec.topology == "replicated":
        return ReplicatedValkey(
            data_dir, replicas=spec.replica_count, appendfsync=appendfsync, settings=settings
        )
    if spec.topology == "cluster":
        raise NotImplementedError("hda run does not start a cluster topology yet")
    return EmbeddedValkey(data_dir, appendfsync=appendfsync)
