"""Fixtures of the runtime tier: a real Valkey server process and real component processes."""

from __future__ import annotations

import asyncio
import collections
import itertools
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from hda.runtime.codec import input_key, output_key
from hda.runtime.config import OUTPUT_GROUP, WORKER_GROUP
from hda.runtime.embedded import EmbeddedValkey, free_port
from hda.runtime.local import Component, wait_ready
from hda.runtime.resp import RedisAddress, RespConnection
from hda.runtime.segments import iter_lines, list_segments, record_position
from hda.runtime.topology.local import LocalBuffer


def manifest_text(streams: str, extra: str = "") -> str:
    return (
        "apiVersion: hda.shitops.dev/v1alpha1\n"
        "kind: HyperDriveAccelerator\n"
        "metadata: {name: test}\n"
        "spec:\n"
        "  streams:\n"
        f"{streams}"
        f"{extra}"
    )


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path / "valkey", appendfsync="always")
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def redis(valkey: EmbeddedValkey) -> AsyncIterator[RespConnection]:
    connection = await RespConnection.connect(RedisAddress(port=valkey.port))
    yield connection
    connection.close()


class Processes:
    """Runtime components as child processes (`python -m hda.runtime ...`), always reaped."""

    def __init__(self, root: Path, valkey: LocalBuffer) -> None:
        self.root = root
        self.valkey = valkey
        self.components: list[Component] = []

    def start(
        self,
        name: str,
        command: str,
        manifest: Path,
        *args: str,
        env: dict[str, str] | None = None,
        ready_port: int | None = None,
    ) -> Component:
        component = Component(
            name=name,
            command=[command, "--config", str(manifest), "--redis-url", self.valkey.url, *args],
            env={"HDA_POD_NAME": name, **(env or {})},
            log_path=self.root / "logs" / f"{name}.log",
        )
        component.start()
        self.components.append(component)
        if ready_port is not None:
            wait_ready(f"http://127.0.0.1:{ready_port}/readyz", process=component)
        return component

    def ingest(self, manifest: Path, *, env: dict[str, str] | None = None) -> int:
        port = free_port()
        self.start(
            f"ingest-{port}", "ingest", manifest, "--port", str(port), env=env, ready_port=port
        )
        return port

    def worker(self, manifest: Path, name: str = "worker-0", *args: str) -> Component:
        return self.start(name, "worker", manifest, "--port", "0", *args)

    def output(
        self,
        manifest: Path,
        data_dir: Path,
        name: str = "output-0",
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[Component, int]:
        port = port or free_port()
        component = self.start(
            name, "output", manifest, "--port", str(port), "--data-dir", str(data_dir), *args,
            env=env, ready_port=port,
        )  # fmt: skip
        return component, port

    def output_replicas(
        self, manifest: Path, root: Path, count: int, *, env: dict[str, str] | None = None
    ) -> list[int]:
        """`count` output processes that know each other (`--peers`); returns their ports."""
        ports = [free_port() for _ in range(count)]
        peers = ",".join(f"output-{i}=http://127.0.0.1:{port}" for i, port in enumerate(ports))
        for i, port in enumerate(ports):
            self.output(
                manifest, root / f"output-{i}", f"output-{i}", "--peers", peers, port=port, env=env
            )
        return ports

    def stop_all(self) -> None:
        for component in self.components:
            component.signal(signal.SIGTERM)
        for component in self.components:
            component.stop(timeout=15)


@pytest.fixture
def processes(tmp_path: Path, valkey: EmbeddedValkey) -> Iterator[Processes]:
    group = Processes(tmp_path, valkey)
    yield group
    group.stop_all()


@pytest.fixture
def write_manifest(tmp_path: Path) -> Any:
    def write(streams: str, extra: str = "", name: str = "hda.yaml") -> Path:
        path = tmp_path / name
        path.write_text(manifest_text(streams, extra))
        return path

    return write


async def stream_entries(redis: RespConnection, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    rows = await redis.execute("XRANGE", key, "-", "+")
    return [(entry_id, dict(zip(flat[0::2], flat[1::2], strict=True))) for entry_id, flat in rows]


async def total_length(
    redis: RespConnection, stream: str, partitions: int, *, output: bool = False
) -> int:
    key = output_key if output else input_key
    return sum([int(await redis.execute("XLEN", key(stream, p))) for p in range(partitions)])


async def stream_events(
    redis: RespConnection, stream: str, partitions: int, *, output: bool = False
) -> list[dict[str, Any]]:
    """Every event stored in a stream's input (or output) keys, decoded from the entries."""
    key = output_key if output else input_key
    events: list[dict[str, Any]] = []
    for partition in range(partitions):
        for _, fields in await stream_entries(redis, key(stream, partition)):
            events.extend(orjson.loads(line) for line in fields[b"d"].split(b"\n"))
    return events


def read_output_events(directory: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every event in a stream's segments, and every record ID, in file order."""
    events: list[dict[str, Any]] = []
    ids: list[str] = []
    for _, path in list_segments(directory):
        for _, line in iter_lines(path.read_bytes()):
            if record_position(line) is None:
                continue
            record = orjson.loads(line)
            ids.append(record["id"])
            events.extend(record["events"])
    return events, ids


async def wait_for(predicate: Any, *, within: float = 60.0, interval: float = 0.05) -> None:
    """Poll until `predicate()` (sync or async) is true; the timeout only bounds a hang."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s: {predicate}")
        await asyncio.sleep(interval)


async def group_idle(redis: RespConnection, keys: list[str], group: str) -> bool:
    """True when `group` has delivered and acknowledged everything on every key."""
    for key in keys:
        stream_info = await redis.execute("XINFO", "STREAM", key)
        last_generated = dict(zip(stream_info[0::2], stream_info[1::2], strict=False))[
            b"last-generated-id"
        ]
        for flat in await redis.execute("XINFO", "GROUPS", key):
            info = dict(zip(flat[0::2], flat[1::2], strict=True))
            if info[b"name"] != group.encode():
                continue
            # lag can be NULL after trims, so compare positions instead
            if int(info[b"pending"]) or info[b"last-delivered-id"] != last_generated:
                return False
    return True


async def wait_until_drained(url: str, stream: str, partitions: int) -> None:
    """Wait until the workers and output have acknowledged everything in `stream`'s input and
    output keys, through a connection of its own to the buffer at `url`."""
    redis = await RespConnection.connect(RedisAddress.from_url(url))
    try:
        inputs = [input_key(stream, p) for p in range(partitions)]
        outputs = [output_key(stream, p) for p in range(partitions)]
        await wait_for(lambda: group_idle(redis, inputs, WORKER_GROUP))
        await wait_for(lambda: group_idle(redis, outputs, OUTPUT_GROUP))
    finally:
        redis.close()


class AckingProducers:
    """Lanes that POST batches of `{"seq": n}` events until stopped, recording which sequence
    numbers were acknowledged (202) and every outcome. A refused batch is never resent: after a
    503 it may still land, so the tests check `acked` exactly and the rest at most once."""

    def __init__(
        self, url: str, *, lanes: int = 4, batch: int = 50, pad: str = "", pace: float = 0.0
    ) -> None:
        self.url = url
        self.lanes = lanes
        self.batch = batch
        self.pad = pad
        self.pace = pace  # seconds between a lane's batches
        self.acked: set[int] = set()
        self.acked_at: list[tuple[float, int]] = []  # (monotonic time, partition) per 202
        self.outcomes: collections.Counter[str] = collections.Counter()
        self._sequence = itertools.count()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, session: aiohttp.ClientSession) -> None:
        self._tasks = [asyncio.create_task(self._lane(session)) for _ in range(self.lanes)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _lane(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            batch = [next(self._sequence) for _ in range(self.batch)]
            event = {"pad": self.pad} if self.pad else {}
            body = b"\n".join(orjson.dumps({"seq": s, **event}) for s in batch)
            refused = False
            try:
                async with session.post(
                    self.url, data=body, headers={"Content-Type": "application/x-ndjson"}
                ) as response:
                    body = await response.read()
                    self.outcomes[str(response.status)] += 1
                    if response.status == 202:
                        self.acked.update(batch)
                        first_id = orjson.loads(body)["firstId"]
                        self.acked_at.append((time.monotonic(), int(first_id.split("/")[0])))
                    else:
                        refused = True
            except aiohttp.ClientError:
                self.outcomes["error"] += 1
                refused = True
            await asyncio.sleep(0.05 if refused else self.pace)
