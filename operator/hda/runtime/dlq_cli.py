"""`hda dlq list|show|replay`: the dead letters of a stream, straight from Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from .cli import config_option, redis_address, redis_option, redis_timeout_option
from .config import StreamConfig, load_config
from .deadletters import (
    DeadLetterNotFoundError,
    get_dead_letter,
    list_dead_letters,
    replay_all,
    replay_dead_letter,
)
from .resp import RespConnection

T = TypeVar("T")

stream_option = click.option("--stream", required=True, help="Stream name from the spec.")


def _run(
    config_path: Path,
    redis_url: str,
    redis_timeout: float,
    stream_name: str,
    action: Callable[[RespConnection, StreamConfig], Awaitable[T]],
) -> T:
    stream = load_config(config_path).stream(stream_name)
    if stream is None:
        raise click.BadParameter(
            f"no stream {stream_name!r} in {config_path}", param_hint="--stream"
        )

    async def main() -> T:
        connection = await RespConnection.connect(redis_address(redis_url, redis_timeout))
        try:
            return await action(connection, stream)
        finally:
            connection.close()

    try:
        return asyncio.run(main())
    except (ValueError, DeadLetterNotFoundError) as error:
        raise click.ClickException(str(error)) from error


def _echo(document: Any) -> None:
    click.echo(orjson.dumps(document).decode())


@click.group()
def dlq() -> None:
    """List, inspect and replay dead letters (IDs are PARTITION/MS-SEQ)."""


@dlq.command("list")
@config_option
@redis_option
@redis_timeout_option
@stream_option
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def list_command(
    *, config_path: Path, redis_url: str, redis_timeout: float, stream: str, limit: int
) -> None:
    """Print the oldest dead letters, one JSON line each."""
    letters = _run(
        config_path, redis_url, redis_timeout, stream,
        lambda connection, config: list_dead_letters(connection, config, limit=limit),
    )  # fmt: skip
    for letter in letters:
        _echo(letter.as_json())


@dlq.command("show")
@config_option
@redis_option
@redis_timeout_option
@stream_option
@click.argument("dead_letter_id")
def show_command(
    *, config_path: Path, redis_url: str, redis_timeout: float, stream: str, dead_letter_id: str
) -> None:
    """Print one dead letter: its source entry and every failed event with its error."""
    letter = _run(
        config_path, redis_url, redis_timeout, stream,
        lambda connection, config: get_dead_letter(connection, config, dead_letter_id),
    )  # fmt: skip
    _echo(letter.as_json())


@dlq.command("replay")
@config_option
@redis_option
@redis_timeout_option
@stream_option
@click.argument("dead_letter_id", required=False)
@click.option("--all", "replay_every", is_flag=True, help="Replay every dead letter.")
def replay_command(
    *,
    config_path: Path,
    redis_url: str,
    redis_timeout: float,
    stream: str,
    dead_letter_id: str | None,
    replay_every: bool,
) -> None:
    """Move a dead letter's events (or, with --all, every one's) back to the input stream."""
    if replay_every == (dead_letter_id is not None):
        raise click.UsageError("give either a DEAD_LETTER_ID or --all")
    if dead_letter_id is None:
        replayed = _run(config_path, redis_url, redis_timeout, stream, replay_all)
        _echo({"replayed": replayed})
        return
    entry = _run(
        config_path, redis_url, redis_timeout, stream,
        lambda connection, config: replay_dead_letter(connection, config, dead_letter_id),
    )  # fmt: skip
    _echo({"replayed": [dead_letter_id], "inputEntry": entry})
