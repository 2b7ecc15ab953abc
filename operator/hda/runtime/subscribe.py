"""The whole-stream subscribe endpoint of output: a gateway over every output replica.

The replica that receives `GET /v1/streams/NAME/subscribe` opens the per-replica stream
(`?scope=local`) of every peer (itself included), each from the same position vector, and merges
them per partition in ID order (`merge.py`). Before opening them it reads the durable bound of
every partition from Valkey: `from=$` starts there, and it is the merge's floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiohttp import WSMsgType, web
from prometheus_client import Counter

from .auth import BearerTokens
from .codec import StreamId, output_key, parse_stream_id
from .config import OUTPUT_GROUP, StreamConfig, load_config_text
from .merge import PartitionMerge
from .positions import BEGINNING, PositionVector, durable_bound, format_position_vector
from .resp import Reconnecting, RedisAddress, RespError
from .retention import group_positions
from .segments import record_position

log = logging.getLogger(__name__)

CLOSE_SLOW_SUBSCRIBER = 4008
# A consumer of the output group that read this recently (or holds pending entries) is a
# replica that may hold records: the gateway must merge it. Older ones are replicas scaled away.
ACTIVE_CONSUMER_SECONDS = 60.0
MARK_INTERVAL_SECONDS = 0.05
PEER_CONNECT_TIMEOUT_SECONDS = 10.0
# A WebSocket close reason holds at most 123 bytes.
MAX_CLOSE_REASON = 123

HISTORY_END_PREFIX = b'{"historyEnd":'
MARK_PREFIX = b'{"mark":'
RECORD_PREFIX = b'{"id":"'


def history_end_frame(last: PositionVector) -> bytes:
    return orjson.dumps({"historyEnd": {str(p): f"{i[0]}-{i[1]}" for p, i in sorted(last.items())}})


def mark_frame(sequence: int) -> bytes:
    return orjson.dumps({"mark": sequence})


def close_reason(problem: str, resume: PositionVector) -> bytes:
    """`problem; resume with from=VECTOR`, or a hint when the vector does not fit."""
    reason = f"{problem}; resume with from={format_position_vector(resume)}".encode()
    if len(reason) <= MAX_CLOSE_REASON:
        return reason
    return f"{problem}; resume from your last ID per partition".encode()[:MAX_CLOSE_REASON]


class PeerDirectory:
    """The output replicas a gateway merges, by consumer name (= pod name) -> base URL: an
    explicit map, or this pod's StatefulSet ordinals 0..spec.output.replicas-1 (re-read from
    the mounted spec at every call, so a scale needs no new pod template)."""

    def __init__(
        self,
        *,
        own_name: str,
        own_url: str,
        explicit: dict[str, str] | None = None,
        url_template: str | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.own_name = own_name
        self.own_url = own_url
        self.explicit = explicit or {}
        self.url_template = url_template
        self.config_path = config_path
        self._replicas: tuple[str, int] | None = None  # (spec text, replicas)

    def current(self) -> dict[str, str]:
        """Blocking (reads the spec file): call it in a thread."""
        if self.explicit:
            return dict(self.explicit)
        if self.url_template is None or self.config_path is None:
            return {self.own_name: self.own_url}
        statefulset, _, ordinal = self.own_name.rpartition("-")
        if not ordinal.isdigit():
            raise ValueError(
                f"pod name {self.own_name!r} is not STATEFULSET-ORDINAL: cannot name the peers"
            )
        text = self.config_path.read_text()  # small; parsed again only when it changed
        if self._replicas is None or self._replicas[0] != text:
            config = load_config_text(text, source=str(self.config_path))
            self._replicas = (text, config.output_replicas)
        pods = [f"{statefulset}-{ordinal}" for ordinal in range(self._replicas[1])]
        return {pod: self.url_template.format(pod=pod) for pod in pods}


def parse_peer_map(text: str) -> dict[str, str]:
    """`NAME=URL,NAME=URL` (the consumer name of each output process and its base URL)."""
    peers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, url = item.partition("=")
        if not name or not url:
            raise ValueError(f"peer {item!r}: expected CONSUMER=URL")
        peers[name] = url.rstrip("/")
    return peers


class PeersChangedError(Exception):
    """A consumer of the output group is not among the peers (a scale-up the mounted spec
    does not show yet): merging without it could miss its records."""


class SubscriptionEndedError(Exception):
    """Why a gateway subscription ended: the close code and reason for the client."""

    def __init__(self, code: int, problem: str) -> None:
        super().__init__(problem)
        self.code = code
        self.problem = problem


@dataclass
class _Peer:
    index: int
    name: str
    url: str
    ws: aiohttp.ClientWebSocketResponse
    mark_bound: PositionVector | None = None  # the bound of the mark awaiting its answer
    marks: int = field(default=0)


class SubscribeGateway:
    def __init__(
        self,
        peers: PeerDirectory,
        tokens: BearerTokens,
        address: RedisAddress,
        slow_disconnects: Counter,
        max_buffered: int,
    ) -> None:
        self.peers = peers
        self.tokens = tokens
        self.valkey = Reconnecting(address)
        self.slow_disconnects = slow_disconnects
        self.max_buffered = max_buffered

    def close(self) -> None:
        self.valkey.close()

    async def durable_bounds(self, stream: StreamConfig) -> PositionVector:
        """Per partition, the ID up to which every entry is durable in some replica's files."""
        connection = await self.valkey.get()
        bounds: PositionVector = {}
        for partition in range(stream.partitions):
            positions = await group_positions(connection, output_key(stream.name, partition))
            group = next((g for g in positions if g.name == OUTPUT_GROUP.encode()), None)
            bounds[partition] = (
                BEGINNING
                if group is None
                else durable_bound(group.last_delivered, group.oldest_pending)
            )
        return bounds

    async def active_consumers(self, stream: StreamConfig) -> set[str]:
        """Consumers of the output group that may hold records not in the files yet or that
        write still: pending entries, or a read within ACTIVE_CONSUMER_SECONDS."""
        connection = await self.valkey.get()
        active: set[str] = set()
        for partition in range(stream.partitions):
            try:
                rows = await connection.execute(
                    "XINFO", "CONSUMERS", output_key(stream.name, partition), OUTPUT_GROUP
                )
            except RespError:
                continue  # no group yet: nobody consumed
            for flat in rows:
                info = dict(zip(flat[0::2], flat[1::2], strict=True))
                if int(info[b"pending"]) or int(info[b"idle"]) < ACTIVE_CONSUMER_SECONDS * 1000:
                    active.add(info[b"name"].decode())
        return active

    async def _peers_covering(self, stream: StreamConfig) -> dict[str, str]:
        """The peers, checked against the consumers that may hold records (read after the
        durable bound, so every consumer delivered an entry at or below it is seen)."""
        peers = await asyncio.to_thread(self.peers.current)
        missing = sorted((await self.active_consumers(stream)) - peers.keys())
        if missing:
            raise PeersChangedError(
                f"output replica {missing[0]} is not among the peers yet (output replicas are "
                "changing); retry"
            )
        return peers

    async def subscribe(
        self, request: web.Request, stream: StreamConfig, start: PositionVector | None
    ) -> web.StreamResponse:
        """`start` None: live only (from the durable bound now)."""
        try:
            floor = await self.durable_bounds(stream)
        except (OSError, RespError) as error:
            return _unavailable(f"Valkey unavailable: {error}")
        try:
            peer_urls = await self._peers_covering(stream)
        except (OSError, RespError, ValueError, PeersChangedError) as error:
            return _unavailable(str(error))
        position = floor if start is None else start
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=PEER_CONNECT_TIMEOUT_SECONDS)
        )
        try:
            peers = await self._open_peers(session, stream, position, peer_urls)
        except (aiohttp.ClientError, TimeoutError) as error:
            await session.close()
            return _unavailable(str(error))
        ws = web.WebSocketResponse(heartbeat=30)
        try:
            await ws.prepare(request)
            merge = PartitionMerge(len(peers), stream.partitions, position, floor)
            ended = await self._relay(ws, stream, peers, merge)
            if ended is not None and not ws.closed:
                if ended.code == CLOSE_SLOW_SUBSCRIBER:
                    self.slow_disconnects.labels(stream=stream.name).inc()
                with contextlib.suppress(ConnectionError):
                    await ws.close(
                        code=ended.code, message=close_reason(ended.problem, merge.released)
                    )
        finally:
            for peer in peers:
                await peer.ws.close()
            await session.close()
        return ws

    async def _open_peers(
        self,
        session: aiohttp.ClientSession,
        stream: StreamConfig,
        position: PositionVector,
        urls: dict[str, str],
    ) -> list[_Peer]:
        peers: list[_Peer] = []
        try:
            for index, (name, url) in enumerate(urls.items()):
                try:
                    ws = await session.ws_connect(
                        f"{url}/v1/streams/{stream.name}/subscribe",
                        params={"scope": "local", "from": format_position_vector(position)},
                        headers=self.tokens.outgoing_headers(),
                        heartbeat=30,
                        max_msg_size=0,  # records are as large as output wrote them
                    )
                except (aiohttp.ClientError, TimeoutError) as error:
                    raise aiohttp.ClientError(
                        f"output replica {url} unreachable: {error}"
                    ) from error
                peers.append(_Peer(index, name, url, ws))
        except BaseException:
            for peer in peers:
                await peer.ws.close()
            raise
        return peers

    async def _relay(
        self,
        ws: web.WebSocketResponse,
        stream: StreamConfig,
        peers: list[_Peer],
        merge: PartitionMerge,
    ) -> SubscriptionEndedError | None:
        """Relay until the client leaves (None) or a peer ends the subscription."""
        lock = asyncio.Lock()  # one sender at a time keeps the release order
        released = asyncio.Condition(lock)
        # A replica far ahead of the others (its files hold more of the stream, or in another
        # order) is not read on until they catch up; all of them that far ahead (in different
        # partitions) is the overflow.
        per_peer = max(1, self.max_buffered // len(peers))

        async def read_peer(peer: _Peer) -> None:
            async for message in peer.ws:
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                data = message.data if isinstance(message.data, bytes) else message.data.encode()
                async with lock:
                    self._take(peer, data, merge)
                    lines = merge.release()
                    for line in lines:
                        await ws.send_frame(line, WSMsgType.TEXT)  # already UTF-8 JSON
                    if lines:
                        released.notify_all()
                    while merge.buffered_from[peer.index] > per_peer:
                        if all(count > per_peer for count in merge.buffered_from):
                            raise SubscriptionEndedError(
                                CLOSE_SLOW_SUBSCRIBER, "subscriber too slow"
                            )
                        await released.wait()
            if peer.ws.close_code == CLOSE_SLOW_SUBSCRIBER:
                raise SubscriptionEndedError(CLOSE_SLOW_SUBSCRIBER, "subscriber too slow")
            raise SubscriptionEndedError(
                aiohttp.WSCloseCode.TRY_AGAIN_LATER, f"output replica {peer.index} went away"
            )

        async def mark_peers() -> None:
            while True:
                await asyncio.sleep(MARK_INTERVAL_SECONDS)
                if not merge.buffered:
                    continue  # nothing waits for another replica
                try:
                    bound = await self.durable_bounds(stream)
                    names = (await self._peers_covering(stream)).keys()
                except (OSError, RespError, ValueError) as error:
                    log.debug("durable bound unavailable", extra={"error": str(error)})
                    continue
                except PeersChangedError as error:
                    raise SubscriptionEndedError(
                        aiohttp.WSCloseCode.TRY_AGAIN_LATER, "output replicas changed"
                    ) from error
                if set(names) != {peer.name for peer in peers}:
                    raise SubscriptionEndedError(
                        aiohttp.WSCloseCode.TRY_AGAIN_LATER, "output replicas changed"
                    )
                for peer in peers:
                    if peer.mark_bound is None:  # one mark in flight per peer
                        peer.mark_bound = bound
                        peer.marks += 1
                        await peer.ws.send_bytes(mark_frame(peer.marks))

        async def watch_client() -> None:  # subscribers only listen; a read is their close
            async for _ in ws:
                pass

        tasks = [asyncio.create_task(read_peer(peer)) for peer in peers]
        tasks += [asyncio.create_task(mark_peers()), asyncio.create_task(watch_client())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if isinstance(error, SubscriptionEndedError):
                    return error
                if isinstance(error, ConnectionError | aiohttp.ClientError):
                    # a peer connection broke (or the client's: then nobody hears this)
                    return SubscriptionEndedError(
                        aiohttp.WSCloseCode.TRY_AGAIN_LATER, "an output replica connection broke"
                    )
                if error is not None:
                    raise error
            return None  # the client left
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    @staticmethod
    def _take(peer: _Peer, data: bytes, merge: PartitionMerge) -> None:
        if data.startswith(RECORD_PREFIX):
            position = record_position(data)
            assert position is not None
            merge.add(peer.index, position[0], position[1], data)
        elif data.startswith(MARK_PREFIX):
            if peer.mark_bound is not None:
                merge.mark(peer.index, peer.mark_bound)
                peer.mark_bound = None
        elif data.startswith(HISTORY_END_PREFIX):
            last = orjson.loads(data)["historyEnd"]
            merge.history_end(peer.index, _parse_vector_object(last))


def _parse_vector_object(last: dict[str, str]) -> dict[int, StreamId]:
    return {int(p): parse_stream_id(i) for p, i in last.items()}


def _unavailable(message: str) -> web.Response:
    return web.json_response({"error": message}, status=503, headers={"Retry-After": "1"})
