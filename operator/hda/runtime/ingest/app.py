"""The ingest aiohttp app: wires the writer, the backlog monitor and the handlers, and serves
the probes and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from ..config import RuntimeConfig, consumer_name
from ..groups import ensure_groups
from ..otlp.handler import OtlpHandler
from ..probes import Liveness, Readiness, add_probe_routes, liveness_window
from ..resp import Reconnecting, RedisAddress
from ..supervise import run_until_stopped
from ..tracing import SERVICE_INGEST, PipelineTracer
from .admission import Admission
from .backlog import BacklogMonitor
from .deadletters import DeadLetterHandler
from .metrics import IngestMetrics
from .rest import RestHandler
from .websocket import WebSocketHandler
from .writer import EntryWriter

log = logging.getLogger(__name__)


class IngestServer:
    def __init__(
        self,
        config: RuntimeConfig,
        address: RedisAddress,
        *,
        tokens: list[str] | None = None,
    ) -> None:
        self.config = config
        self.metrics = IngestMetrics()
        self.metrics.registry.on_scrape(self._written)
        self.write_connection = Reconnecting(address)
        self.poll_connection = Reconnecting(address)
        self.admin_connection = Reconnecting(address)
        self.tracing = PipelineTracer(config.tracing, SERVICE_INGEST, consumer_name())
        self.writer = EntryWriter(
            self.write_connection,
            config.max_events_per_entry,
            config.acknowledge,
            self.tracing.current_context if self.tracing.enabled else None,
            config.idempotency_window_seconds,
            routed_streams=frozenset(s.name for s in config.streams if s.partition_key),
        )
        self.readiness = Readiness(self.metrics.registry, valkey="connecting to Valkey")
        self.liveness = Liveness(liveness_window(address.command_timeout))
        self.monitor = BacklogMonitor(
            config,
            self.poll_connection,
            self.writer,
            readiness=self.readiness,
            liveness=self.liveness,
        )
        self.shutting_down = asyncio.Event()
        admission = Admission(config, self.metrics, tokens or [], self.buffer_reachable)
        self.rest = RestHandler(admission, self.writer, self.monitor)
        self.websocket = WebSocketHandler(admission, self.writer, self.monitor, self.shutting_down)
        self.otlp = OtlpHandler(admission, self.writer, self.monitor)
        self.dead_letters = DeadLetterHandler(admission, self.admin_connection)

    def buffer_reachable(self) -> bool:
        """Groups exist and the last backlog poll succeeded: until then every request is 503."""
        return "valkey" not in self.readiness.causes

    async def _prepare_then_monitor(self) -> None:
        """Create the consumer groups once Valkey answers (retrying meanwhile), then poll."""

        async def create_groups() -> None:
            await ensure_groups(await self.poll_connection.get(), self.config)

        await run_until_stopped(create_groups, self.shutting_down, "ingest", liveness=self.liveness)
        if self.shutting_down.is_set():
            return
        log.info("ingest ready", extra={"streams": [s.name for s in self.config.streams]})
        await self.monitor.run()

    async def _context(self, app: web.Application) -> AsyncIterator[None]:
        # Listen at once; requests are 503 until Valkey is reachable (a fresh HDA starts its
        # Valkey and ingest together: crash-looping until Valkey is up helps nobody).
        monitor_task = asyncio.create_task(self._prepare_then_monitor())
        yield
        monitor_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor_task
        self.write_connection.close()
        self.poll_connection.close()
        self.admin_connection.close()

    def app(self) -> web.Application:
        # aiohttp enforces client_max_size when reading a body: that is our 413.
        app = web.Application(
            client_max_size=self.config.max_request_bytes,
            # the span (outermost) covers the time the latency histogram records
            middlewares=([self.tracing.request_middleware()] if self.tracing.enabled else [])
            + [self.metrics.time_requests],
        )
        app.cleanup_ctx.append(self._context)

        async def on_shutdown(app: web.Application) -> None:
            self.shutting_down.set()

        app.on_shutdown.append(on_shutdown)
        app.router.add_post("/v1/streams/{stream}/events", self.rest.post_events)
        app.router.add_get("/v1/streams/{stream}/ws", self.websocket.websocket)
        self.otlp.add_routes(app)
        self.dead_letters.add_routes(app)
        add_probe_routes(
            app,
            liveness=self.liveness,
            readiness=self.readiness,
            render_metrics=self.render_metrics,
        )
        return app

    def _written(self) -> list[Metric]:
        return [
            CounterMetricFamily(
                "hda_ingest_entries_total", "Stream entries written", self.writer.entries_written
            ),
            CounterMetricFamily(
                "hda_ingest_replayed_requests_total",
                "Requests whose Idempotency-Key was seen before: answered, nothing written",
                self.writer.requests_replayed,
            ),
        ]

    def render_metrics(self) -> bytes:
        for name, backlog in self.monitor.backlog_events.items():
            self.metrics.backlog.labels(stream=name).set(backlog)
        return self.metrics.registry.render()


async def serve_ingest(
    config: RuntimeConfig,
    address: RedisAddress,
    *,
    host: str,
    port: int,
    tokens: list[str] | None,
    stop: asyncio.Event,
    reuse_port: bool = False,
) -> None:
    server = IngestServer(config, address, tokens=tokens)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner, host, port, backlog=1024, reuse_address=True, reuse_port=reuse_port or None
    )
    await site.start()
    log.info("ingest listening", extra={"host": host, "port": port, "at": time.time()})
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        server.tracing.shutdown()
