"""Liveness and readiness, the same for every component.

Readiness says whether the process can do its work now; while it cannot, `/readyz` is 503 and
names each cause (`valkey`, `disk`) with a message, and `hda_not_ready{cause}` is 1. Liveness says
whether the process itself still turns: every wait on Valkey has a deadline, so a main loop that
stopped beating is stuck in itself, and a restart is the cure. Valkey being away never fails it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from .metrics import CONTENT_TYPE, Metrics

# A main loop beats at least once per command deadline plus the retry back-off (5 s at most).
LIVENESS_SLACK_SECONDS = 60.0


def liveness_window(command_timeout: float, block_seconds: float = 1.0) -> float:
    """Silence after which the process counts as stuck: several deadlines, never a stall."""
    return LIVENESS_SLACK_SECONDS + 3 * (command_timeout + block_seconds)


class Liveness:
    def __init__(self, max_silence: float) -> None:
        self.max_silence = max_silence
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def silence(self) -> float:
        return time.monotonic() - self._last

    def alive(self) -> bool:
        return self.silence() <= self.max_silence


class Readiness:
    """Why the process is not ready, by cause; ready when no cause is left."""

    def __init__(self, metrics: Metrics, **initial: str) -> None:
        self.not_ready = metrics.gauge(
            "hda_not_ready", "1 while this cause keeps it not ready", ["cause"]
        )
        self.causes: dict[str, str] = {}
        for cause, message in initial.items():
            self.set(cause, message)

    @property
    def ready(self) -> bool:
        return not self.causes

    def set(self, cause: str, message: str) -> None:
        self.causes[cause] = message
        self.not_ready.labels(cause=cause).set(1)

    def clear(self, cause: str) -> None:
        if self.causes.pop(cause, None) is not None:
            self.not_ready.labels(cause=cause).set(0)


def add_probe_routes(
    app: web.Application,
    *,
    liveness: Liveness,
    readiness: Readiness,
    render_metrics: Callable[[], bytes],
) -> None:
    """`/healthz`, `/readyz` and `/metrics`."""

    async def healthz(request: web.Request) -> web.Response:
        silence = round(liveness.silence(), 1)
        if liveness.alive():
            return web.json_response({"status": "ok", "silenceSeconds": silence})
        return web.json_response({"status": "stuck", "silenceSeconds": silence}, status=500)

    async def readyz(request: web.Request) -> web.Response:
        body = {"ready": readiness.ready, "causes": readiness.causes}
        return web.json_response(body, status=200 if readiness.ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render_metrics(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
