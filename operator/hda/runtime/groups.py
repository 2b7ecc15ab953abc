"""Consumer groups: created once at ID 0, before anything that must be read is written."""

from __future__ import annotations

from .codec import input_key, output_key
from .config import OUTPUT_GROUP, WORKER_GROUP, RuntimeConfig
from .resp import Arg, RespConnection, RespError


async def ensure_groups(connection: RespConnection, config: RuntimeConfig) -> None:
    """Create both consumer groups at ID 0 on every partition (idempotent), so no entry is ever
    written before the group that must read it exists."""
    commands: list[tuple[Arg, ...]] = []
    for stream in config.streams:
        for partition in range(stream.partitions):
            commands.append(
                (
                    "XGROUP",
                    "CREATE",
                    input_key(stream.name, partition),
                    WORKER_GROUP,
                    "0",
                    "MKSTREAM",
                )
            )
            commands.append(
                (
                    "XGROUP",
                    "CREATE",
                    output_key(stream.name, partition),
                    OUTPUT_GROUP,
                    "0",
                    "MKSTREAM",
                )
            )
    for reply in await connection.pipeline(commands):
        if isinstance(reply, RespError) and not str(reply).startswith("BUSYGROUP"):
            raise reply
