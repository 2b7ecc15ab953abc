"""Server-side scripts called by SHA, reloaded transparently after a Valkey restart."""

from __future__ import annotations

import hashlib

from .resp import Arg, RespConnection, RespError, RespValue


class Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def call_many(
        self, connection: RespConnection, calls: list[tuple[list[str], list[Arg]]]
    ) -> list[RespValue]:
        """Pipeline one EVALSHA per (keys, args); load the script once if the server lost it."""
        commands = [("EVALSHA", self.sha, len(keys), *keys, *args) for keys, args in calls]
        replies = await connection.pipeline(commands)
        if any(isinstance(r, RespError) and str(r).startswith("NOSCRIPT") for r in replies):
            await connection.execute("SCRIPT", "LOAD", self.source)
            # Only NOSCRIPT calls never ran; a script that failed midway must not run twice.
            retry = [
                i
                for i, r in enumerate(replies)
                if isinstance(r, RespError) and str(r).startswith("NOSCRIPT")
            ]
            for index, reply in zip(
                retry, await connection.pipeline([commands[i] for i in retry]), strict=True
            ):
                replies[index] = reply
        for reply in replies:
            if isinstance(reply, RespError):
                raise reply
        return replies
