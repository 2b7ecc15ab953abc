"""Finding the primary of a replicated topology through Valkey Sentinel (redis-py's client).

Only discovery goes through redis-py; the data path stays on our own wire (resp.py). A
connection is made to whatever Sentinel names as primary right now, so reconnecting after a
failover is the ordinary reconnect.
"""

from __future__ import annotations

from redis import exceptions as redis_errors
from redis.asyncio.sentinel import Sentinel

HostPort = tuple[str, int]


class PrimaryNotFoundError(ConnectionError):
    """No Sentinel names a healthy primary (all unreachable, or a failover is under way)."""


async def discover_primary(
    sentinels: tuple[HostPort, ...],
    name: str,
    socket_timeout: float,
    *,
    username: str | None = None,
    password: str | None = None,
) -> HostPort:
    """The primary that a Sentinel reports as up (not subjectively or objectively down).

    `username`/`password` are the buffer's: the operator's Sentinels require the same password
    as the Valkey servers they watch."""
    timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(sentinels),
        sentinel_kwargs={**timeouts, "username": username, "password": password},
        **timeouts,
    )
    try:
        host, port = await sentinel.discover_master(name)
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as error:
        raise PrimaryNotFoundError(f"Sentinel found no primary {name!r}: {error}") from error
    finally:
        await sentinel.aclose()
    return str(host), int(port)
