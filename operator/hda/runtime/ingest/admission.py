"""What every ingest request passes first: the bearer token, a known stream, a reachable Valkey,
and error replies that are counted in the metrics."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from aiohttp import web

from ..auth import REFUSAL_HEADERS, BearerTokens
from ..codec import ParsedBatch, split_by_partition
from ..config import RuntimeConfig, StreamConfig
from .idempotency import HEADER, QUERY, check_key, keyed_partition
from .metrics import IngestMetrics
from .writer import EntryWriter, Receipt

# While Valkey is unreachable (not up yet, or stalled) every request is 503 after this many seconds.
UNAVAILABLE_RETRY_AFTER = "1"


class Admission:
    def __init__(
        self,
        config: RuntimeConfig,
        metrics: IngestMetrics,
        tokens: list[str],
        buffer_reachable: Callable[[], bool],
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.buffer_reachable = buffer_reachable
        self.tokens = BearerTokens(tokens, accept_in_query=config.accept_token_in_query)
        self._round_robin = {s.name: itertools.count() for s in config.streams}

    def authorized(self, request: web.Request) -> bool:
        return self.tokens.authorized(request)

    def error(
        self, status: int, message: str, stream: str = "", headers: dict[str, str] | None = None
    ) -> web.Response:
        self.metrics.reply(status, stream)
        return web.json_response({"error": message}, status=status, headers=headers)

    def precheck(self, request: web.Request) -> tuple[StreamConfig | None, web.Response | None]:
        name = request.match_info["stream"]
        if not self.authorized(request):
            return None, self.error(401, self.tokens.refusal_message(), headers=REFUSAL_HEADERS)
        stream = self.config.stream(name)
        if stream is None:
            return None, self.error(404, f"unknown stream {name!r}")
        if not self.buffer_reachable():
            return None, self.unavailable(stream.name)
        return stream, None

    def unavailable(self, stream: str) -> web.Response:
        return self.error(
            503,
            "Valkey unavailable; retry",
            stream,
            headers={"Retry-After": UNAVAILABLE_RETRY_AFTER},
        )

    def submit(
        self,
        writer: EntryWriter,
        stream: StreamConfig,
        batch: ParsedBatch,
        idempotency_key: str | None,
    ) -> asyncio.Future[Receipt]:
        """Hand `batch` to `writer`, its events split over the stream's partitions."""
        groups = self._partition_groups(stream, batch, idempotency_key)
        return writer.submit(stream.name, batch, groups, idempotency_key)

    def _partition_groups(
        self, stream: StreamConfig, batch: ParsedBatch, idempotency_key: str | None
    ) -> dict[int, list[int]]:
        """Events without a partition key go round robin, or, for a keyed request, to the
        partition its key picks (the same one when it is sent again)."""
        if idempotency_key is not None:
            unkeyed_partition = keyed_partition(idempotency_key, stream.partitions)
        else:
            unkeyed_partition = next(self._round_robin[stream.name]) % stream.partitions
        return split_by_partition(batch, stream.partitions, unkeyed_partition)

    @staticmethod
    def idempotency_key(request: web.Request, *, in_query: bool = False) -> str | None:
        """The request's Idempotency-Key header (or, with `in_query`, the `idempotencyKey` query
        parameter); BadIdempotencyKeyError names which one is wrong and why."""
        if HEADER in request.headers:
            return check_key(request.headers[HEADER])
        if in_query and QUERY in request.query:
            return check_key(request.query[QUERY], source=f"query parameter {QUERY}")
        return None
