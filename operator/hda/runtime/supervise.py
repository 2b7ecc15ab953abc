"""Running a component until it is told to stop: signals, and reconnecting after Valkey failures."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

from .probes import Liveness, Readiness
from .resp import RespError

log = logging.getLogger(__name__)


def tune_gc() -> None:
    """Fewer, cheaper collections: the hot loops allocate many short-lived dicts and bytes, and
    everything imported at start-up never dies, so move it out of the collector's sight."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM (Kubernetes) and SIGINT (Ctrl-C) both mean: finish the current batch, then exit."""
    tune_gc()  # called once per component, after its start-up imports
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def run_until_stopped(
    body: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    component: str,
    *,
    liveness: Liveness | None = None,
    readiness: Readiness | None = None,
) -> None:
    """Run `body()` again after Valkey failures (refused, lost, timed out) with back-off until
    `stop`; each failure makes the component not ready with cause `valkey`."""
    delay = 0.2
    while not stop.is_set():
        if liveness is not None:
            liveness.beat()
        try:
            await body()
            return
        except (ConnectionError, TimeoutError, RespError) as error:
            if readiness is not None:
                readiness.set("valkey", f"Valkey unavailable: {error}")
            log.warning(
                "Valkey connection failed; retrying",
                extra={"component": component, "error": str(error), "retry_in": delay},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)
