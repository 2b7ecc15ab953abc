"""Click commands of the clients: `hda load` (a numbered-event producer) and `hda tail`."""

from __future__ import annotations

import asyncio
import sys

import click
import orjson

from hda.api.consts import ENV_INGEST_TOKEN

from .load import LoadError, LoadOptions, run_load
from .tail import follow

_token_option = click.option(
    "--token", envvar=ENV_INGEST_TOKEN, default=None, help=f"Bearer token (env {ENV_INGEST_TOKEN})."
)


@click.command()
@click.argument("base_url")
@click.option("--stream", default="events", show_default=True)
@click.option("--events", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Events per request or WebSocket frame.")  # fmt: skip
@click.option("--transport", type=click.Choice(["rest", "ws"]), default="rest", show_default=True)
@click.option("--in-flight", type=click.IntRange(min=1), default=4, show_default=True,
              help="Requests (REST) or frames (WebSocket) awaiting their ack.")  # fmt: skip
@click.option("--producer", default="load", show_default=True,
              help='The "p" field of every event; the "s" field numbers them from 0.')  # fmt: skip
@click.option("--give-up-after", type=float, default=300.0, show_default=True,
              help="Fail when no batch was acknowledged for this many seconds.")  # fmt: skip
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Events per second to aim at (default: as fast as they are acknowledged).")  # fmt: skip
@click.option("--idempotency-keys/--no-idempotency-keys", default=True, show_default=True,
              help="Send each batch with an Idempotency-Key, so a batch sent again after a "
                   "refusal or a broken connection is stored once.")  # fmt: skip
@_token_option
def load(
    *,
    base_url: str,
    stream: str,
    events: int,
    batch: int,
    transport: str,
    in_flight: int,
    producer: str,
    give_up_after: float,
    rate: float | None,
    idempotency_keys: bool,
    token: str | None,
) -> None:
    """Send EVENTS numbered events to the ingest service at BASE_URL (http://HOST:PORT) and wait
    until each is acknowledged; prints a JSON report (acked events, retries, rate)."""
    options = LoadOptions(
        base_url=base_url.rstrip("/"),
        stream=stream,
        producer=producer,
        events=events,
        batch=batch,
        transport="ws" if transport == "ws" else "rest",
        in_flight=in_flight,
        token=token,
        give_up_after=give_up_after,
        rate=rate,
        idempotency_keys=idempotency_keys,
    )
    try:
        report = asyncio.run(run_load(options))
    except LoadError as error:
        raise click.ClickException(str(error)) from error
    click.echo(report.to_json().decode())


@click.command()
@click.argument("url")
@click.option("--from", "start", default="0", show_default=True,
              help="0: from the oldest record; $: only new ones; P/MS-SEQ[,P/MS-SEQ...]: after "
                   "those records (partitions not named: from the oldest).")  # fmt: skip
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="Stop after this many events."
)
@click.option(
    "--idle-timeout", type=float, default=None, help="Stop after this many quiet seconds."
)
@click.option("--brief", is_flag=True, help="One short line per record: ID, size, first event.")
@_token_option
def tail(
    *,
    url: str,
    start: str,
    count: int | None,
    idle_timeout: float | None,
    brief: bool,
    token: str | None,
) -> None:
    """Follow an output subscribe endpoint (ws://HOST:8081/v1/streams/NAME/subscribe, any output
    replica: each serves the whole stream) and print each durable record (one JSON line with its
    ID and events) as it lands."""

    def show(record: bytes) -> None:
        if brief:
            document = orjson.loads(record)
            events = document.get("events") or [None]
            first = orjson.dumps(events[0]).decode()[:100]
            sys.stdout.write(f"{document.get('id')}  {len(events):>5} events  first: {first}\n")
        else:
            sys.stdout.buffer.write(record + b"\n")
        sys.stdout.flush()

    seen = asyncio.run(
        follow(url, show, start=start, max_events=count, idle_timeout=idle_timeout, token=token)
    )
    click.echo(f"{seen} events", err=True)
