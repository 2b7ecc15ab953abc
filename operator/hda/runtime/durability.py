"""`spec.redis.acknowledge`: how durable a write must be before anyone is told it happened.

`WAITAOF numlocal numreplicas timeout` waits until this connection's writes so far are fsynced to
the primary's AOF (numlocal) and to that many replicas' AOFs; it answers how many did. Appended to
the pipeline that wrote, it costs no extra round trip.
"""

from __future__ import annotations

from hda.api.v1alpha1 import Acknowledge

from .resp import Arg, RespConnection, RespError, RespValue, raise_errors

# (numlocal, numreplicas) per setting; `primary` waits for nothing beyond the write's reply.
REQUIRED: dict[Acknowledge, tuple[int, int] | None] = {
    "primary": None,
    "fsync": (1, 0),
    "replica": (1, 1),
}
# Milliseconds WAITAOF waits before the write counts as not durable (answered 503, or retried).
WAIT_TIMEOUT_MS = 2000


class NotDurableError(TimeoutError):
    """The write happened on the primary but did not reach the required AOFs in time: it was
    not acknowledged (it may still survive, and be delivered)."""


def wait_command(acknowledge: Acknowledge) -> tuple[Arg, ...] | None:
    required = REQUIRED[acknowledge]
    if required is None:
        return None
    return ("WAITAOF", required[0], required[1], WAIT_TIMEOUT_MS)


def check_durable(acknowledge: Acknowledge, reply: RespValue) -> None:
    """Raise NotDurableError unless WAITAOF's [local, replicas] reply meets the setting."""
    if isinstance(reply, RespError):
        raise reply
    required = REQUIRED[acknowledge]
    assert required is not None
    local, replicas = int(reply[0]), int(reply[1])
    if local < required[0] or replicas < required[1]:
        raise NotDurableError(
            f"acknowledge {acknowledge}: WAITAOF confirmed {local} local and {replicas} replica "
            f"AOF(s) in {WAIT_TIMEOUT_MS} ms, needs {required[0]} and {required[1]}"
        )


async def wait_durable(connection: RespConnection, acknowledge: Acknowledge) -> None:
    """Wait until everything this connection wrote so far is as durable as `acknowledge` says."""
    command = wait_command(acknowledge)
    if command is not None:
        (reply,) = raise_errors(await connection.pipeline([command]))
        check_durable(acknowledge, reply)
