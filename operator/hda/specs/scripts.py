"""Shell entrypoints of the Valkey and Sentinel containers (`sh -c`, POSIX sh, official image).

Each writes what only the pod knows at start (the password from the environment, its own DNS
name, whom it replicates) into a memory-backed emptyDir, then execs the server: the password is
never in a ConfigMap or in any process's argv.
"""

from __future__ import annotations

from typing import Final

from hda.api.consts import REDIS_PORT, SENTINEL_PORT
from hda.api.v1alpha1 import HyperDriveAccelerator

from .configmaps import (
    FAILOVER_AFTER_MILLISECONDS,
    SENTINEL_CONF_KEY,
    SENTINEL_FAILOVER_TIMEOUT_MILLISECONDS,
    SENTINEL_QUORUM,
    VALKEY_AUTH_CONF,
    VALKEY_AUTH_DIR,
    VALKEY_CONF_KEY,
    VALKEY_TOPOLOGY_CONF,
)
from .names import VALKEY_MASTER_NAME, child_names
from .pods import pod_address, sentinel_hosts

VALKEY_CONF_DIR: Final = "/etc/valkey"
VALKEY_PASSWORD_ENV: Final = "VALKEY_PASSWORD"  # noqa: S105 - a variable name
# valkey-cli reads its password from this variable, keeping it out of the probe's argv.
VALKEY_CLI_AUTH_ENV: Final = "REDISCLI_AUTH"
SENTINEL_CONF_COPY: Final = f"{VALKEY_AUTH_DIR}/{SENTINEL_CONF_KEY}"
# Seconds one sentinel gets to answer at start; a dead one must not stall the pod.
SENTINEL_ASK_TIMEOUT: Final = 3

# Escapes `\` and `"` so any password survives valkey.conf's quoted-string parsing.
_ESCAPE_PASSWORD: Final = f"""set -eu
umask 077
escaped=$(printf '%s' "${VALKEY_PASSWORD_ENV}" | sed 's/[\\\\"]/\\\\&/g')
"""
_EXEC_VALKEY: Final = f"exec valkey-server {VALKEY_CONF_DIR}/{VALKEY_CONF_KEY}\n"

VALKEY_START_SCRIPT: Final = (
    _ESCAPE_PASSWORD
    + f"""printf 'requirepass "%s"\\n' "$escaped" > {VALKEY_AUTH_CONF}
unset {VALKEY_PASSWORD_ENV}
"""
    + _EXEC_VALKEY
)
# Replicas authenticate to their primary with the same password.
_REPLICA_AUTH: Final = (
    _ESCAPE_PASSWORD
    + f"""printf 'requirepass "%s"\\nmasterauth "%s"\\n' "$escaped" "$escaped" > {VALKEY_AUTH_CONF}
unset {VALKEY_PASSWORD_ENV}
"""
)


def ask_sentinels_script(hda: HyperDriveAccelerator) -> str:
    """Shell that sets `$primary` to the primary's DNS name as the sentinels know it, or to ""
    when no sentinel answers (a fresh start)."""
    hosts = " ".join(sentinel_hosts(hda))
    return f"""primary=""
for sentinel in {hosts}; do
  answer=$(timeout {SENTINEL_ASK_TIMEOUT} valkey-cli -h "$sentinel" -p {SENTINEL_PORT} --raw \\
    SENTINEL get-master-addr-by-name {VALKEY_MASTER_NAME} 2>/dev/null | head -n 1) || answer=""
  case "$answer" in ""|*" "*|ERR*|NOAUTH*) ;; *) primary=$answer; break ;; esac
done
"""


def _own_address(hda: HyperDriveAccelerator, headless_service: str) -> str:
    return pod_address(hda, "$(hostname)", headless_service)


def _first_valkey_pod(hda: HyperDriveAccelerator) -> str:
    names = child_names(hda)
    return pod_address(hda, f"{names.valkey_statefulset}-0", names.valkey_headless_service)


def valkey_start_script(hda: HyperDriveAccelerator) -> str:
    """The Valkey container's entrypoint for `hda`'s topology.

    replicated: the sentinels are asked for the current primary first, so a restarted old
    primary comes back as a replica of whoever took over; only when no sentinel answers (a
    fresh start) is pod 0 the primary. cluster: each pod announces its DNS name; slots and
    replicas are assigned by the bootstrap.
    """
    topology = hda.spec.redis.topology
    if topology == "standalone":
        return VALKEY_START_SCRIPT
    me = _own_address(hda, child_names(hda).valkey_headless_service)
    if topology == "cluster":
        return (
            _REPLICA_AUTH
            + f"""printf 'cluster-announce-hostname %s\\ncluster-announce-human-nodename %s\\n' \\
  "{me}" "$(hostname)" > {VALKEY_TOPOLOGY_CONF}
"""
            + _EXEC_VALKEY
        )
    return (
        _REPLICA_AUTH
        + ask_sentinels_script(hda)
        + f"""me="{me}"
[ -n "$primary" ] || primary="{_first_valkey_pod(hda)}"
{{
  printf 'replica-announce-ip %s\\n' "$me"
  if [ "$primary" != "$me" ]; then printf 'replicaof %s {REDIS_PORT}\\n' "$primary"; fi
}} > {VALKEY_TOPOLOGY_CONF}
"""
        + _EXEC_VALKEY
    )


def sentinel_start_script(hda: HyperDriveAccelerator) -> str:
    """A writable copy of sentinel.conf (Sentinel rewrites it as it learns) that monitors the
    primary the other sentinels know, else the Valkey StatefulSet's pod 0."""
    master = VALKEY_MASTER_NAME
    me = _own_address(hda, child_names(hda).sentinel_headless_service)
    return (
        _ESCAPE_PASSWORD
        + f"unset {VALKEY_PASSWORD_ENV}\n"
        + ask_sentinels_script(hda)
        + f"""[ -n "$primary" ] || primary="{_first_valkey_pod(hda)}"
cp {VALKEY_CONF_DIR}/{SENTINEL_CONF_KEY} {SENTINEL_CONF_COPY}
cat >> {SENTINEL_CONF_COPY} <<EOF
sentinel announce-ip {me}
sentinel monitor {master} $primary {REDIS_PORT} {SENTINEL_QUORUM}
sentinel down-after-milliseconds {master} {FAILOVER_AFTER_MILLISECONDS}
sentinel failover-timeout {master} {SENTINEL_FAILOVER_TIMEOUT_MILLISECONDS}
sentinel parallel-syncs {master} 1
sentinel auth-pass {master} "$escaped"
requirepass "$escaped"
EOF
exec valkey-server {SENTINEL_CONF_COPY} --sentinel
"""
    )
