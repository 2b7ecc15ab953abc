"""Components started before their Valkey: they listen at once, refuse with 503, then serve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.runtime.conftest import Processes, read_output_events, wait_for

from hda.runtime.embedded import EmbeddedValkey, free_port

pytestmark = pytest.mark.runtime

NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def late_valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A Valkey whose port nothing listens on until the test starts it."""
    server = EmbeddedValkey(tmp_path / "valkey", appendfsync="always")
    yield server
    server.kill()


@pytest.fixture
def late_processes(tmp_path: Path, late_valkey: EmbeddedValkey) -> Iterator[Processes]:
    group = Processes(tmp_path, late_valkey)
    yield group
    group.stop_all()


async def status_of(session: aiohttp.ClientSession, url: str) -> int | None:
    """The HTTP status of a GET, or None while nothing listens."""
    try:
        async with session.get(url) as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return None


async def answers(session: aiohttp.ClientSession, url: str, status: int) -> bool:
    return await status_of(session, url) == status


async def test_ingest_answers_503_until_valkey_is_up_then_everything_flows(
    late_valkey: EmbeddedValkey,
    late_processes: Processes,
    write_manifest: Any,
    tmp_path: Path,
) -> None:
    manifest = write_manifest("    - {name: events, partitions: 2}\n")
    ingest_port, output_port = free_port(), free_port()
    late_processes.start("ingest", "ingest", manifest, "--port", str(ingest_port))
    late_processes.worker(manifest)
    late_processes.start(
        "output", "output", manifest, "--port", str(output_port), "--data-dir", str(tmp_path / "data")
    )  # fmt: skip
    ingest = f"http://127.0.0.1:{ingest_port}"
    async with aiohttp.ClientSession() as session:
        await wait_for(lambda: status_of(session, f"{ingest}/healthz"), within=30)
        assert await status_of(session, f"{ingest}/readyz") == 503
        async with session.post(
            f"{ingest}/v1/streams/events/events", data=b'{"early":1}', headers=NDJSON
        ) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{ingest}/v1/streams/events/ws")
        assert refused.value.status == 503
        assert refused.value.headers is not None
        assert refused.value.headers["Retry-After"] == "1"
        # output starts as a separate process: it answers once it listens, not ready until Valkey.
        output = f"http://127.0.0.1:{output_port}"
        await wait_for(lambda: status_of(session, f"{output}/healthz"), within=30)
        assert await status_of(session, f"{output}/readyz") == 503
        assert all(component.running for component in late_processes.components)

        late_valkey.start()
        await wait_for(lambda: answers(session, f"{ingest}/readyz", 200), within=30)
        async with session.post(
            f"{ingest}/v1/streams/events/events", data=b'{"late":1}', headers=NDJSON
        ) as response:
            assert response.status == 202
        await wait_for(
            lambda: answers(session, f"http://127.0.0.1:{output_port}/readyz", 200), within=30
        )

    def arrived() -> bool:
        return read_output_events(tmp_path / "data" / "events")[0] == [{"late": 1}]

    await wait_for(arrived, within=30)
    assert all(
        component.restarts == 0 and component.running for component in late_processes.components
    )
