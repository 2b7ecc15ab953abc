"""The Valkey and Sentinel entrypoints the builders write, run by a real `sh`: whom a Valkey pod
replicates and which primary a sentinel monitors, given what the other sentinels answer.

`valkey-cli` (the sentinels' answer), `hostname` and the final `valkey-server` are stand-ins on
PATH: the script's own decisions are what is tested. Container paths are moved into tmp_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from tests.unit.test_specs_support import edited, example

from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.runtime.embedded import free_port, valkey_binary
from hda.specs import valkey_conf
from hda.specs.configmaps import sentinel_conf
from hda.specs.scripts import sentinel_start_script, valkey_start_script

pytestmark = pytest.mark.runtime

PASSWORD = 'se"cr\\et'  # a quote and a backslash: the config's quoting is tested too
PRIMARY_0 = "logs-valkey-0.logs-valkey-headless.pipelines.svc"
PRIMARY_2 = "logs-valkey-2.logs-valkey-headless.pipelines.svc"


def replicated() -> HyperDriveAccelerator:
    def edit(wire: dict[str, Any]) -> None:
        wire["spec"]["redis"]["topology"] = "replicated"

    return edited(example(), edit)


def prepare(
    script: str, tmp_path: Path, *, pod: str, sentinel_answer: str | None, real_server: bool
) -> tuple[str, dict[str, str]]:
    """Stand-ins on PATH and container paths moved into tmp_path: the script text and its
    environment, as pod `pod` whose sentinels answer `sentinel_answer` (None: unreachable)."""
    bin_dir = tmp_path / "bin"
    run_dir = tmp_path / "run"
    conf_dir = tmp_path / "etc"
    for directory in (bin_dir, run_dir, conf_dir):
        directory.mkdir()
    (conf_dir / "sentinel.conf").write_text("port 26379\n")
    cli = "exit 1" if sentinel_answer is None else f"printf '%s\\n%s\\n' '{sentinel_answer}' 6379"
    stubs = {
        "valkey-cli": f"#!/bin/sh\n{cli}\n",
        "hostname": f"#!/bin/sh\necho {pod}\n",
    }
    if real_server:
        (bin_dir / "valkey-server").symlink_to(valkey_binary())
    else:
        stubs["valkey-server"] = f'#!/bin/sh\necho "$@" > {run_dir}/exec-args\n'
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    text = script.replace("/run/valkey", str(run_dir)).replace("/etc/valkey", str(conf_dir))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "VALKEY_PASSWORD": PASSWORD}
    return text, env


def run(script: str, tmp_path: Path, *, pod: str, sentinel_answer: str | None) -> Path:
    """Run `script` to its exec; returns the directory that stands in for /run/valkey."""
    text, env = prepare(
        script, tmp_path, pod=pod, sentinel_answer=sentinel_answer, real_server=False
    )
    subprocess.run(["sh", "-c", text], env=env, check=True, timeout=30)
    return tmp_path / "run"


@contextlib.contextmanager
def serving(
    script: str, tmp_path: Path, config: tuple[str, str], *, pod: str, answer: str | None
) -> Iterator[int]:
    """Run `script` into a real valkey-server whose config file `config` (name, text) is the
    ConfigMap's, on a free port; yields the port, SIGKILLs the server at the end."""
    port = free_port()
    name, conf = config
    text, env = prepare(script, tmp_path, pod=pod, sentinel_answer=answer, real_server=True)
    conf = conf.replace("port 26379", f"port {port}").replace("port 6379", f"port {port}")
    conf = conf.replace("dir /data", f"dir {tmp_path}").replace(
        "/run/valkey", str(tmp_path / "run")
    )
    (tmp_path / "etc" / name).write_text(conf.replace("bind * -::*", "bind 127.0.0.1"))
    process = subprocess.Popen(["sh", "-c", text], env=env, cwd=tmp_path, start_new_session=True)
    try:
        yield port
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def answers_with_the_password(port: int) -> bool:
    """INFO answers even on a replica whose primary is away (PING says MASTERDOWN there)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        client = aioredis.Redis(port=port, password=PASSWORD)
        try:
            return bool(await client.info("server"))
        except (OSError, RedisError):
            await asyncio.sleep(0.1)
        finally:
            await client.aclose()
    return False


def test_a_fresh_pod_0_starts_as_primary(tmp_path: Path) -> None:
    run_dir = run(
        valkey_start_script(replicated()), tmp_path, pod="logs-valkey-0", sentinel_answer=None
    )

    topology = (run_dir / "topology.conf").read_text()
    assert topology == f"replica-announce-ip {PRIMARY_0}\n"
    assert (run_dir / "exec-args").read_text().strip() == "/etc/valkey/valkey.conf".replace(
        "/etc/valkey", str(tmp_path / "etc")
    )


def test_a_fresh_replica_follows_pod_0(tmp_path: Path) -> None:
    run_dir = run(
        valkey_start_script(replicated()), tmp_path, pod="logs-valkey-1", sentinel_answer=None
    )

    assert f"replicaof {PRIMARY_0} 6379\n" in (run_dir / "topology.conf").read_text()


def test_a_restarted_old_primary_follows_whom_the_sentinels_name(tmp_path: Path) -> None:
    run_dir = run(
        valkey_start_script(replicated()), tmp_path, pod="logs-valkey-0", sentinel_answer=PRIMARY_2
    )

    assert f"replicaof {PRIMARY_2} 6379\n" in (run_dir / "topology.conf").read_text()


def test_the_pod_the_sentinels_name_stays_primary(tmp_path: Path) -> None:
    run_dir = run(
        valkey_start_script(replicated()), tmp_path, pod="logs-valkey-2", sentinel_answer=PRIMARY_2
    )

    assert "replicaof" not in (run_dir / "topology.conf").read_text()


def test_an_error_answer_is_not_taken_for_a_primary(tmp_path: Path) -> None:
    run_dir = run(
        valkey_start_script(replicated()),
        tmp_path,
        pod="logs-valkey-1",
        sentinel_answer="NOAUTH Authentication required.",
    )

    assert f"replicaof {PRIMARY_0} 6379\n" in (run_dir / "topology.conf").read_text()


def test_replicas_authenticate_to_their_primary_with_the_quoted_password(tmp_path: Path) -> None:
    run_dir = run(
        valkey_start_script(replicated()), tmp_path, pod="logs-valkey-1", sentinel_answer=None
    )

    auth = (run_dir / "auth.conf").read_text().splitlines()
    assert auth == ['requirepass "se\\"cr\\\\et"', 'masterauth "se\\"cr\\\\et"']


def test_a_sentinel_monitors_the_primary_the_others_name(tmp_path: Path) -> None:
    run_dir = run(
        sentinel_start_script(replicated()),
        tmp_path,
        pod="logs-sentinel-1",
        sentinel_answer=PRIMARY_2,
    )

    conf = (run_dir / "sentinel.conf").read_text().splitlines()
    assert conf[0] == "port 26379"  # the ConfigMap's part, copied
    assert f"sentinel monitor buffer {PRIMARY_2} 6379 2" in conf
    assert "sentinel announce-ip logs-sentinel-1.logs-sentinel-headless.pipelines.svc" in conf
    assert 'sentinel auth-pass buffer "se\\"cr\\\\et"' in conf
    assert (run_dir / "exec-args").read_text().split() == [
        str(run_dir / "sentinel.conf"),
        "--sentinel",
    ]


def test_a_sentinel_with_no_one_to_ask_monitors_pod_0(tmp_path: Path) -> None:
    run_dir = run(
        sentinel_start_script(replicated()), tmp_path, pod="logs-sentinel-0", sentinel_answer=None
    )

    assert f"sentinel monitor buffer {PRIMARY_0} 6379 2" in (run_dir / "sentinel.conf").read_text()


async def test_a_replica_pod_starts_a_real_valkey_with_its_generated_config(
    tmp_path: Path,
) -> None:
    hda = replicated()
    config = ("valkey.conf", valkey_conf(hda))

    with serving(
        valkey_start_script(hda), tmp_path, config, pod="logs-valkey-1", answer=None
    ) as port:
        assert await answers_with_the_password(port)
        client = aioredis.Redis(port=port, password=PASSWORD, decode_responses=True)
        try:
            info = await client.info("replication")
        finally:
            await client.aclose()

    assert (info["role"], info["master_host"]) == ("slave", PRIMARY_0)


async def test_a_sentinel_pod_starts_a_real_sentinel_with_its_generated_config(
    tmp_path: Path,
) -> None:
    hda = replicated()
    config = ("sentinel.conf", sentinel_conf(hda))

    # 127.0.0.1 resolves here, where the pods' DNS names do not.
    with serving(
        sentinel_start_script(hda), tmp_path, config, pod="logs-sentinel-0", answer="127.0.0.1"
    ) as port:
        assert await answers_with_the_password(port)
        client = aioredis.Redis(port=port, password=PASSWORD, decode_responses=True)
        try:
            primary = await client.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "buffer"
            )
        finally:
            await client.aclose()

    assert primary == ["127.0.0.1", "6379"]
