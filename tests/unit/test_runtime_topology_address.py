"""Addresses of replicated topologies, and what `acknowledge` requires of WAITAOF's answer."""

from __future__ import annotations

import pytest

from hda.api.v1alpha1 import Acknowledge
from hda.runtime.durability import NotDurableError, check_durable, wait_command
from hda.runtime.resp import RedisAddress, RespError


def test_sentinel_url_names_every_sentinel_the_primary_name_and_db() -> None:
    address = RedisAddress.from_url("redis+sentinel://:pw@s1:26380,s2,10.0.0.3:5000/hda/2")
    assert address.sentinels == (("s1", 26380), ("s2", 26379), ("10.0.0.3", 5000))
    assert (address.primary_name, address.db, address.password) == ("hda", 2, "pw")


def test_sentinel_url_without_primary_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no primary name"):
        RedisAddress.from_url("redis+sentinel://s1:26379,s2:26379")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1:x/hda", "port must be a number.*'x'"),
        ("redis://valkey:6379/zero", "database must be a number.*'zero'"),
        ("redis+sentinel://s1,/hda", "empty host"),
    ],
)
def test_malformed_urls_name_the_bad_part(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisAddress.from_url(url)


def test_plain_url_has_no_sentinels() -> None:
    address = RedisAddress.from_url("redis://[::1]:6390/1")
    assert (address.host, address.port, address.db, address.sentinels) == ("::1", 6390, 1, ())


@pytest.mark.parametrize(
    ("acknowledge", "command"),
    [("primary", None), ("fsync", ("WAITAOF", 1, 0)), ("replica", ("WAITAOF", 1, 1))],
)
def test_acknowledge_maps_to_waitaof_counts(
    acknowledge: Acknowledge, command: tuple[object, ...] | None
) -> None:
    waited = wait_command(acknowledge)
    assert (waited[:3] if waited else None) == command


def test_replica_acknowledge_needs_one_replica_aof() -> None:
    check_durable("replica", [1, 2])
    with pytest.raises(NotDurableError, match="1 local and 0 replica"):
        check_durable("replica", [1, 0])


def test_fsync_acknowledge_needs_the_local_aof_only() -> None:
    check_durable("fsync", [1, 0])
    with pytest.raises(NotDurableError, match="0 local"):
        check_durable("fsync", [0, 0])


def test_waitaof_error_reply_is_raised_as_is() -> None:
    with pytest.raises(RespError, match="appendonly"):
        check_durable("fsync", RespError("ERR WAITAOF cannot be used when appendonly is disabled"))
