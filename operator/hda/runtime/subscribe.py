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

import aiohttp
import orjson
from aiohttp import WSMsgType, web

from .auth import BearerTokens
from .codec import StreamId, output_key, parse_stream_id
from .config import OUTPUT_GROUP, StreamConfig
from .merge import PartitionMerge
from .metrics import Metrics
from .positions import BEGINNING, PositionVector, durable_bound, format_position_vector
from .resp import Reconnecting, RedisAddress, RespError
from .retention import group_positions
from .segments import record_position

log = logging.getLogger(__name__)

CLOSE_SLOW_SUBSCRIBER = 4008
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


class SubscriptionEndedError(Exception):
    """Why a gateway subscription ended: the close code and reason for the client."""

    def __init__(self, code: int, problem: str) -> None:
        super().__init__(problem)
        self.code = code
        self.problem = problem


@dataclass
class _Peer:
    index: int
    url: str
    ws: aiohttp.ClientWebSocketResponse
    mark_bound: PositionVector | None = None  # the bound of the mark awaiting its answer
    marks: int = field(default=0)


class SubscribeGateway:
    def __init__(
        self,
        peers: list[str],
        tokens: BearerTokens,
        address: RedisAddress,
        metrics: Metrics,
        max_buffered: int,
    ) -> None:
        self.peers = peers
        self.tokens = tokens
        self.valkey = Reconnecting(address)
        self.metrics = metrics
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

    async def subscribe(
        self, request: web.Request, stream: StreamConfig, start: PositionVector | None
    ) -> web.StreamResponse:
        """`start` None: live only (from the durable bound now)."""
        try:
            floor = await self.durable_bounds(stream)
        except (OSError, RespError) as error:
            return _unavailable(f"Valkey unavailable: {error}")
        position = floor if start is None else start
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=PEER_CONNECT_TIMEOUT_SECONDS)
        )
        try:
            peers = await self._open_peers(session, stream, position)
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
                    self.metrics.inc("hda_output_slow_disconnects_total", stream=stream.name)
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
        self, session: aiohttp.ClientSession, stream: StreamConfig, position: PositionVector
    ) -> list[_Peer]:
        peers: list[_Peer] = []
        try:
            for index, url in enumerate(self.peers):
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
                peers.append(_Peer(index, url, ws))
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
                except (OSError, RespError) as error:
                    log.debug("durable bound unavailable", extra={"error": str(error)})
                    continue
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
