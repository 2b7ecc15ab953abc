"""`hda load`: a producer that sends numbered events to an ingest service and counts the acks.

Each event is `{"p": PRODUCER, "s": SEQUENCE}`, so whoever reads the output can check that every
acknowledged event arrived exactly once. Batches go as NDJSON over REST (several requests in
flight) or over one WebSocket (a window of frames in flight). Backpressure (429) and a buffer
that is not reachable (503) are answered by sending the same batch again after `Retry-After`;
a connection that breaks mid-request is retried too and counted as `ambiguous`, since its batch
may or may not have been accepted.

Every batch carries an Idempotency-Key unique to the run (REST: one per request; WebSocket: one
per run, frame N being the run's N-th batch), so a batch sent again is stored once: a refusal is
not a promise that nothing was written. `--no-idempotency-keys` sends none, to measure what a
producer without them gets.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Final, Literal

import aiohttp
import orjson

from hda.runtime.ingest.idempotency import REPLAYED_HEADER

Transport = Literal["rest", "ws"]
_NDJSON: Final = {"Content-Type": "application/x-ndjson"}
_RETRYABLE_STATUS: Final = frozenset({429, 502, 503, 504})
_DEFAULT_RETRY_AFTER: Final = 0.5
_MAX_RETRY_AFTER: Final = 5.0
#: Status changes kept in `LoadReport.timeline`: enough for a few outages of a long run.
_TIMELINE_LIMIT: Final = 200


class LoadError(Exception):
    """The ingest service refused a batch for good (4xx other than 429) or never came back."""


@dataclass
class LoadReport:
    """What a producer did; printed as JSON by `hda load`."""

    producer: str
    transport: str
    events: int
    acked_events: int = 0
    batches: int = 0
    retries: int = 0
    ambiguous: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    # [unix time, status] each time the answer changed (202 -> 503 -> 202 ...): when an outage
    # began and ended, comparable with the clock of whoever caused it (same host or NTP).
    timeline: list[tuple[float, str]] = field(default_factory=list)
    # [first, count] of each batch acknowledged only after it was sent again (refused, or its
    # connection broke). Without idempotency keys its events may be stored twice, since a
    # refusal is not a promise that nothing was written; with them, never.
    resent_batches: list[tuple[int, int]] = field(default_factory=list)
    idempotency_keys: bool = True
    # Acks that repeated an earlier receipt: the batch had been stored by an earlier attempt.
    replayed_batches: int = 0

    @property
    def events_per_second(self) -> float:
        return self.acked_events / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> bytes:
        return orjson.dumps({**asdict(self), "eventsPerSecond": round(self.events_per_second)})


def batch_body(producer: str, first: int, count: int) -> bytes:
    """NDJSON of events `first .. first+count-1` of `producer`."""
    name = orjson.dumps(producer)
    return b"\n".join(b'{"p":%s,"s":%d}' % (name, s) for s in range(first, first + count))


def _retry_after(headers: Mapping[str, str]) -> float:
    value = headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.05), _MAX_RETRY_AFTER)
    except (TypeError, ValueError):
        return _DEFAULT_RETRY_AFTER


@dataclass(frozen=True)
class LoadOptions:
    base_url: str  # e.g. http://logs-ingest.pipelines.svc:8080
    stream: str
    producer: str
    events: int
    batch: int = 1000
    transport: Transport = "rest"
    in_flight: int = 4
    token: str | None = None
    give_up_after: float = 300.0  # seconds without a single ack
    rate: float | None = None  # events per second over the whole run; None: as fast as acked
    idempotency_keys: bool = True  # one Idempotency-Key per batch, unique to the run


class _Producer:
    def __init__(self, options: LoadOptions) -> None:
        self.options = options
        self.report = LoadReport(
            options.producer,
            options.transport,
            options.events,
            idempotency_keys=options.idempotency_keys,
        )
        # Unique to this run: a producer name used again later must not replay old receipts.
        self.run_key = (
            f"{options.producer}-{secrets.token_hex(6)}" if options.idempotency_keys else None
        )
        self.last_progress = time.monotonic()
        self.started = time.monotonic()
        self.scheduled_events = 0
        self.resent: set[int] = set()  # first event of each batch that is sent again

    async def _pace(self, count: int) -> None:
        """Hold a batch back until the run's average rate allows it (`--rate`)."""
        if not self.options.rate:
            return
        due = self.started + self.scheduled_events / self.options.rate
        self.scheduled_events += count
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        headers = {}
        if self.options.token:
            headers["Authorization"] = f"Bearer {self.options.token}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _count(self, status: int | str) -> None:
        key = str(status)
        self.report.statuses[key] = self.report.statuses.get(key, 0) + 1
        timeline = self.report.timeline
        if (not timeline or timeline[-1][1] != key) and len(timeline) < _TIMELINE_LIMIT:
            timeline.append((round(time.time(), 3), key))

    def _check_stalled(self) -> None:
        if time.monotonic() - self.last_progress > self.options.give_up_after:
            raise LoadError(
                f"no batch acknowledged for {self.options.give_up_after:.0f}s; "
                f"statuses so far: {self.report.statuses}"
            )

    def _acked(self, first: int, count: int, *, replayed: bool = False) -> None:
        self.report.replayed_batches += replayed
        if first in self.resent:
            self.report.resent_batches.append((first, count))
        self.report.acked_events += count
        self.report.batches += 1
        self.last_progress = time.monotonic()

    def _batches(self) -> list[tuple[int, int]]:
        size = self.options.batch
        total = self.options.events
        return [(first, min(size, total - first)) for first in range(0, total, size)]

    # --- REST ---

    async def _post_until_acked(
        self, session: aiohttp.ClientSession, first: int, count: int
    ) -> None:
        url = f"{self.options.base_url}/v1/streams/{self.options.stream}/events"
        body = batch_body(self.options.producer, first, count)
        key = None if self.run_key is None else f"{self.run_key}-{first}"
        while True:
            self._check_stalled()
            try:
                async with session.post(
                    url, data=body, headers={**_NDJSON, **self._headers(key)}
                ) as response:
                    text = await response.text()
                    retry_after_missing = (
                        response.status in _RETRYABLE_STATUS
                        and "Retry-After" not in response.headers
                    )
                    # A refusal must say when to come back; one that does not is counted apart.
                    self._count(
                        f"{response.status} without Retry-After"
                        if retry_after_missing
                        else response.status
                    )
                    if response.status == 202:
                        self._acked(first, count, replayed=REPLAYED_HEADER in response.headers)
                        return
                    if response.status not in _RETRYABLE_STATUS:
                        raise LoadError(f"POST {url}: HTTP {response.status} {text[:300]}")
                    delay = _retry_after(response.headers)
            except (TimeoutError, aiohttp.ClientConnectionError) as error:
                # The batch may have been written before the connection broke.
                self._count(type(error).__name__)
                self.report.ambiguous += 1
                delay = _DEFAULT_RETRY_AFTER
            self.resent.add(first)
            self.report.retries += 1
            await asyncio.sleep(delay)

    async def run_rest(self, session: aiohttp.ClientSession) -> None:
        queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        for item in self._batches():
            queue.put_nowait(item)

        async def lane() -> None:
            while not queue.empty():
                first, count = queue.get_nowait()
                await self._pace(count)
                await self._post_until_acked(session, first, count)

        await asyncio.gather(*(lane() for _ in range(max(1, self.options.in_flight))))

    # --- WebSocket ---

    async def run_ws(self, session: aiohttp.ClientSession) -> None:
        url = f"{self.options.base_url}/v1/streams/{self.options.stream}/ws"
        url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        if self.run_key is not None:
            await self._run_ws_keyed(session, url, self.run_key)
            return
        pending = self._batches()
        while pending:
            self._check_stalled()
            try:
                pending = await self._ws_session(session, url, pending)
            except (aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError) as error:
                self._count(type(error).__name__)
            if pending:
                await asyncio.sleep(_DEFAULT_RETRY_AFTER)

    async def _ws_session(
        self, session: aiohttp.ClientSession, url: str, pending: list[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        """Send what is pending on one connection; returns what is still unacknowledged."""
        in_flight: dict[int, tuple[int, int]] = {}
        retry: list[tuple[int, int]] = []
        queue = list(pending)
        async with session.ws_connect(url, headers=self._headers(), heartbeat=30) as ws:
            sequence = 0
            while queue or in_flight:
                while queue and len(in_flight) < max(1, self.options.in_flight):
                    first, count = queue.pop(0)
                    await self._pace(count)
                    sequence += 1
                    in_flight[sequence] = (first, count)
                    await ws.send_bytes(batch_body(self.options.producer, first, count))
                message = await ws.receive(timeout=self.options.give_up_after)
                if message.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    # Closed (ingest restarting): whatever is in flight is ambiguous.
                    self.report.ambiguous += len(in_flight)
                    self.resent.update(first for first, _ in in_flight.values())
                    break
                reply = orjson.loads(message.data)
                batch = in_flight.pop(int(reply["seq"]))
                status = int(reply.get("status", 202))
                self._count(status)
                if "error" not in reply:
                    self._acked(*batch)
                elif status in _RETRYABLE_STATUS:
                    self.report.retries += 1
                    self.resent.add(batch[0])
                    retry.append(batch)
                else:
                    raise LoadError(f"WebSocket {url}: {reply}")
        return sorted([*retry, *in_flight.values(), *queue])

    async def _run_ws_keyed(self, session: aiohttp.ClientSession, url: str, key: str) -> None:
        """Frame N of every connection is the run's N-th batch: after a refusal or a lost
        connection, a new connection resends from the first unacknowledged batch (`?seq=`), and
        the batches stored before are acknowledged again rather than stored twice."""
        batches = self._batches()
        acked = [False] * len(batches)
        sent: set[int] = set()  # indexes of the batches sent at least once
        while not all(acked):
            self._check_stalled()
            start = acked.index(False)
            try:
                await self._ws_keyed_session(
                    session, f"{url}?seq={start + 1}", key, batches=batches, acked=acked, sent=sent
                )
            except (aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError) as error:
                self._count(type(error).__name__)
            if not all(acked):
                self.resent.update(batches[i][0] for i in sent if not acked[i])
                await asyncio.sleep(_DEFAULT_RETRY_AFTER)

    async def _ws_keyed_session(
        self,
        session: aiohttp.ClientSession,
        url: str,
        key: str,
        *,
        batches: list[tuple[int, int]],
        acked: list[bool],
        sent: set[int],
    ) -> None:
        """Send batches from the first unacknowledged one, in order, until one is refused or
        the connection ends; marks what was acknowledged."""
        next_index = acked.index(False)
        in_flight = 0
        async with session.ws_connect(url, headers=self._headers(key), heartbeat=30) as ws:
            while next_index < len(batches) or in_flight:
                while next_index < len(batches) and in_flight < max(1, self.options.in_flight):
                    first, count = batches[next_index]
                    if next_index not in sent:
                        await self._pace(count)
                        sent.add(next_index)
                    await ws.send_bytes(batch_body(self.options.producer, first, count))
                    next_index += 1
                    in_flight += 1
                message = await ws.receive(timeout=self.options.give_up_after)
                if message.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    self.report.ambiguous += in_flight  # closed (ingest restarting)
                    return
                reply = orjson.loads(message.data)
                in_flight -= 1
                index = int(reply["seq"]) - 1
                status = int(reply.get("status", 202))
                self._count(status)
                if "error" not in reply:
                    if not acked[index]:
                        acked[index] = True
                        self._acked(*batches[index], replayed=bool(reply.get("replayed")))
                    continue
                if status not in _RETRYABLE_STATUS:
                    raise LoadError(f"WebSocket {url}: {reply}")
                self.report.retries += 1
                return  # resend from the first unacknowledged batch on a new connection


async def run_load(options: LoadOptions) -> LoadReport:
    """Send every event of `options` and wait for its acknowledgement."""
    producer = _Producer(options)
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if options.transport == "ws":
            await producer.run_ws(session)
        else:
            await producer.run_rest(session)
    producer.report.seconds = round(time.monotonic() - started, 3)
    return producer.report
