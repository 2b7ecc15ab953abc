"""Local topologies for `hda run` and the runtime tests, from the embedded valkey-server binary.

Every server is a child process whose first argument is a config file naming its role as
started (`valkey-primary.conf`, `valkey-replica-1.conf`, `sentinel-1.conf`): after a failover
the roles move, so `primary()` asks Sentinel which one is the primary now.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from hda.api.v1alpha1.buffer import BufferSpec

from ..embedded import PROC_TITLE, EmbeddedValkey, free_port, valkey_binary
from ..resp import CLUSTER_SCHEME
from .sentinel import HostPort

PRIMARY_NAME = "hda"
SENTINEL_COUNT = 3  # a majority (2) survives one lost Sentinel
# A primary silent this long counts as down: small, so a local failover takes about a second
# (Kubernetes deployments keep Sentinel's own default of 30 s unless told otherwise).
DEFAULT_DOWN_AFTER_MS = 1000
DEFAULT_FAILOVER_TIMEOUT_MS = 10_000
# Every node may become a primary: replicas sync at once instead of Valkey's 5 s batching wait.
NODE_ARGS = ("--repl-diskless-sync-delay", "0")


def node_arguments(min_replicas_to_write: int) -> tuple[str, ...]:
    """Every node's arguments: NODE_ARGS, and under `acknowledge: replica` the refusal of a
    write no replica would get (what the operator's valkey.conf says too)."""
    if not min_replicas_to_write:
        return NODE_ARGS
    return (*NODE_ARGS, "--min-replicas-to-write", str(min_replicas_to_write))


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
        return [
            str(valkey_binary()), str(config), "--sentinel", "--proc-title-template", PROC_TITLE
        ]  # fmt: skip


class ReplicatedValkey:
    """One primary, `replicas` replicas and three Sentinels on loopback."""

    def __init__(
        self,
        data_dir: Path,
        *,
        replicas: int,
        appendfsync: str = "everysec",
        settings: FailoverSettings | None = None,
        min_replicas_to_write: int = 0,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"a replicated topology needs replicas >= 1, got {replicas}")
        self.data_dir = data_dir
        self.settings = settings or FailoverSettings()
        primary_port = free_port()
        node_args = node_arguments(min_replicas_to_write)
        self.nodes = [
            EmbeddedValkey(
                data_dir / "primary",
                port=primary_port,
                appendfsync=appendfsync,
                role="primary",
                extra_args=node_args,
            )
        ]
        self.nodes += [
            EmbeddedValkey(
                data_dir / f"replica-{n}",
                appendfsync=appendfsync,
                role=f"replica-{n}",
                extra_args=(*node_args, "--replicaof", "127.0.0.1", str(primary_port)),
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

    def start(self, timeout: float = 60.0) -> None:
        try:
            for server in [*self.nodes, *self.sentinels]:
                server.start()
            self.wait_settled(timeout)
        except BaseException:
            self.kill()  # no half-started topology left behind
            raise

    def wait_settled(self, timeout: float = 60.0) -> None:
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


SLOTS = 16384


def slot_ranges(shards: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal slot ranges [first, last] for `shards` primaries."""
    if shards < 1:
        raise ValueError(f"a cluster needs at least one shard, got {shards}")
    bounds = [SLOTS * n // shards for n in range(shards + 1)]
    return [(bounds[n], bounds[n + 1] - 1) for n in range(shards)]


@dataclass
class Shard:
    primary: EmbeddedValkey
    replicas: list[EmbeddedValkey]

    @property
    def nodes(self) -> list[EmbeddedValkey]:
        return [self.primary, *self.replicas]


class ClusterValkey:
    """Valkey Cluster on loopback: `shards` primaries, each with `replicas` replicas, slots
    spread evenly, bootstrapped with CLUSTER ADDSLOTSRANGE, MEET and REPLICATE."""

    def __init__(
        self,
        data_dir: Path,
        *,
        shards: int,
        replicas: int,
        appendfsync: str = "everysec",
        settings: FailoverSettings | None = None,
        min_replicas_to_write: int = 0,
    ) -> None:
        self.data_dir = data_dir
        self.appendfsync = appendfsync
        self.node_args = node_arguments(min_replicas_to_write)
        self.settings = settings or FailoverSettings()
        self.replica_count = replicas
        self.bus_ports: dict[int, int] = {}
        self.shards = [self._shard(number, replicas) for number in range(1, shards + 1)]

    def _node(self, role: str) -> EmbeddedValkey:
        bus_port = free_port()  # not port + 10000: that may be taken, or past 65535
        node = EmbeddedValkey(
            self.data_dir / role,
            appendfsync=self.appendfsync,
            role=role,
            extra_args=(
                *self.node_args,
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(bus_port),
                "--cluster-node-timeout", str(self.settings.down_after_ms),
                # one shard failing over must not stop the others
                "--cluster-require-full-coverage", "no",
            ),
        )  # fmt: skip
        self.bus_ports[node.port] = bus_port
        return node

    def _shard(self, number: int, replicas: int) -> Shard:
        return Shard(
            self._node(f"shard{number}-primary"),
            [self._node(f"shard{number}-replica-{n}") for n in range(1, replicas + 1)],
        )

    @property
    def nodes(self) -> list[EmbeddedValkey]:
        return [node for shard in self.shards for node in shard.nodes]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{shard.primary.port}" for shard in self.shards)
        return f"{CLUSTER_SCHEME}://{hosts}/0"

    def start(self, timeout: float = 60.0) -> None:
        try:
            for node in self.nodes:
                node.start()
            if not self._formed():
                self._bootstrap(self.shards)
            self.wait_settled(timeout)
        except BaseException:
            self.kill()  # no half-started topology left behind
            raise

    def _formed(self) -> bool:
        """Restarted on the same directories: the nodes remember their cluster (nodes.conf)."""
        with redis.Redis(port=self.shards[0].primary.port, socket_timeout=2) as client:
            return int(client.cluster("INFO")["cluster_known_nodes"]) > 1

    def add_shard(self, timeout: float = 60.0) -> Shard:
        """A new, empty shard (no slots) joined to the cluster: resharding gives it slots."""
        shard = self._shard(len(self.shards) + 1, self.replica_count)
        for node in shard.nodes:
            node.start()
        self.shards.append(shard)
        self._bootstrap([shard], assign_slots=False)
        self.wait_settled(timeout)
        return shard

    def _bootstrap(self, shards: list[Shard], *, assign_slots: bool = True) -> None:
        if assign_slots:
            for shard, (first, last) in zip(shards, slot_ranges(len(shards)), strict=True):
                with redis.Redis(port=shard.primary.port) as client:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        seed = self.shards[0].primary.port
        for node in self.nodes:
            if node.port != seed:
                with redis.Redis(port=node.port) as client:
                    client.execute_command(
                        "CLUSTER", "MEET", "127.0.0.1", seed, self.bus_ports[seed]
                    )
        self._wait(lambda: all(self._known_nodes(n) == len(self.nodes) for n in self.nodes), 30)
        for shard in shards:
            primary_id = node_id(shard.primary)
            for replica in shard.replicas:
                with redis.Redis(port=replica.port) as client:
                    client.execute_command("CLUSTER", "REPLICATE", primary_id)

    @staticmethod
    def _known_nodes(node: EmbeddedValkey) -> int:
        with redis.Redis(port=node.port, socket_timeout=2) as client:
            return int(client.cluster("INFO")["cluster_known_nodes"])

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if condition():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"Valkey Cluster did not settle in {timeout}s")

    def wait_settled(self, timeout: float = 60.0) -> None:
        """Until every live node says cluster_state ok with all slots served, and every shard's
        primary has all its replicas online."""

        def settled() -> bool:
            for node in self.nodes:
                if node.process is None or node.process.poll() is not None:
                    continue
                with redis.Redis(port=node.port, socket_timeout=2) as client:
                    info = client.cluster("INFO")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != SLOTS:
                    return False
            for primary in self.primaries():
                with redis.Redis(port=primary.port, socket_timeout=2) as client:
                    replication = client.info("replication")
                if int(replication["connected_slaves"]) < self.replica_count - self._dead(primary):
                    return False
            return True

        self._wait(settled, timeout)

    def _dead(self, primary: EmbeddedValkey) -> int:
        """Replicas of `primary`'s shard that are not running (a killed former primary)."""
        shard = next(s for s in self.shards if primary in s.nodes)
        return sum(
            1 for node in shard.nodes if node.process is None or node.process.poll() is not None
        )

    def primaries(self) -> list[EmbeddedValkey]:
        """The nodes that are primaries now (after failovers, not the names they started with)."""
        found = []
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            with redis.Redis(port=node.port, socket_timeout=2) as client:
                if client.execute_command("ROLE")[0] in (b"master", "master"):
                    found.append(node)
        return found

    def primary_of(self, shard: Shard) -> EmbeddedValkey:
        return next(node for node in self.primaries() if node in shard.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(OSError):
                node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


def node_id(node: EmbeddedValkey) -> str:
    with redis.Redis(port=node.port, socket_timeout=2) as client:
        return str(client.execute_command("CLUSTER", "MYID").decode())


LocalBuffer = EmbeddedValkey | ReplicatedValkey | ClusterValkey


def local_buffer(
    spec: BufferSpec, data_dir: Path, appendfsync: str, settings: FailoverSettings
) -> LocalBuffer:
    """The topology `spec.redis` asks for, not started yet."""
    if spec.topology == "replicated":
        return ReplicatedValkey(
            data_dir,
            replicas=spec.replica_count,
            appendfsync=appendfsync,
            settings=settings,
            min_replicas_to_write=spec.min_replicas_to_write,
        )
    if spec.topology == "cluster":
        return ClusterValkey(
            data_dir,
            shards=spec.shard_count,
            replicas=spec.replica_count,
            appendfsync=appendfsync,
            settings=settings,
            min_replicas_to_write=spec.min_replicas_to_write,
        )
    return EmbeddedValkey(data_dir, appendfsync=appendfsync)
