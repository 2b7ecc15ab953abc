"""Ingest's series: events and replies per stream, and how long each request took."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web

from ..metrics import REQUEST_BUCKETS, Metrics

# Probes and scrapes are not ingest traffic; they would swamp the latency of the real requests.
UNTIMED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = Metrics()
        self.events = self.registry.counter(
            "hda_ingest_events_total", "Events accepted", ["stream"]
        )
        self.requests = self.registry.counter(
            "hda_ingest_requests_total", "Requests by status code", ["code", "stream"]
        )
        self.backlog = self.registry.gauge(
            "hda_ingest_backlog_events", "Estimated backlog in events", ["stream"]
        )
        self.request_duration = self.registry.histogram(
            "hda_ingest_request_duration_seconds",
            "Seconds from a request's arrival to its reply, by route and status class (2xx, 4xx, "
            "5xx); WebSocket sessions are not timed",
            ["route", "status_class"],
            buckets=REQUEST_BUCKETS,
        )

    def reply(self, status: int, stream: str) -> None:
        self.requests.labels(code=str(status), stream=stream).inc()

    @web.middleware
    async def time_requests(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Observe `hda_ingest_request_duration_seconds` around every ingest route."""
        if request.path in UNTIMED_PATHS:
            return await handler(request)
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as raised:  # aiohttp's own replies (e.g. 405) are raised
            self._observe(request, raised.status, started)
            raise
        if response.status != HTTPStatus.SWITCHING_PROTOCOLS:  # a WebSocket session ended
            self._observe(request, response.status, started)
        return response

    def _observe(self, request: web.Request, status: int, started: float) -> None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        self.request_duration.labels(route=route, status_class=f"{status // 100}xx").observe(
            time.perf_counter() - started
        )
