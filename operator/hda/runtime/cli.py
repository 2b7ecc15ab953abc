"""Click commands of the runtime: `hda ingest|worker|output|run|bench`.

Pods run `hda ingest`, `hda worker` and `hda output` with the spec mounted at /etc/hda/hda.yaml;
secrets and identity come from the environment (see `config.py` for the variable names).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import click

from hda.api.consts import (
    ENV_OUTPUT_DIR,
    ENV_OUTPUT_PEER_URL,
    ENV_OUTPUT_PEERS,
    ENV_REDIS_PASSWORD,
    ENV_REDIS_URL,
)

from .auth import tokens_from_environment
from .bench import BenchOptions, run_bench
from .config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_INGEST_PORT,
    DEFAULT_OUTPUT_DIR,
    DEFAULT_OUTPUT_PORT,
    DEFAULT_REDIS_URL,
    DEFAULT_WORKER_PORT,
    ENV_CONFIG,
    ENV_REDIS_TIMEOUT,
    RuntimeConfig,
    consumer_name,
    load_config,
)
from .ingest.app import serve_ingest
from .local import LocalPipeline
from .logs import setup_logging
from .output import serve_output
from .resp import DEFAULT_COMMAND_TIMEOUT, RedisAddress
from .subscribe import parse_peer_map
from .supervise import stop_on_signals
from .topology.local import DEFAULT_DOWN_AFTER_MS, FailoverSettings
from .worker import serve_worker

config_option = click.option(
    "--config",
    "config_path",
    envvar=ENV_CONFIG,
    default=DEFAULT_CONFIG_PATH,
    show_default=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"HDA manifest or rendered spec (env {ENV_CONFIG}).",
)
redis_option = click.option(
    "--redis-url",
    envvar=ENV_REDIS_URL,
    default=DEFAULT_REDIS_URL,
    show_default=True,
    help=f"Valkey URL (env {ENV_REDIS_URL}); the password comes from {ENV_REDIS_PASSWORD}.",
)
redis_timeout_option = click.option(
    "--redis-timeout",
    envvar=ENV_REDIS_TIMEOUT,
    type=click.FloatRange(min=0.1),
    default=DEFAULT_COMMAND_TIMEOUT,
    show_default=True,
    help=f"Seconds a Valkey command may take (plus BLOCK for blocking reads) before the "
    f"connection counts as stalled (env {ENV_REDIS_TIMEOUT}).",
)
log_option = click.option("--log-level", default="INFO", show_default=True)


def redis_address(redis_url: str, redis_timeout: float) -> RedisAddress:
    return RedisAddress.from_url(
        redis_url,
        password=os.environ.get(ENV_REDIS_PASSWORD) or None,
        command_timeout=redis_timeout,
    )


def _with_overrides(
    config: RuntimeConfig,
    *,
    claim_idle: float | None = None,
    max_events_per_entry: int | None = None,
    trim_interval: float | None = None,
) -> RuntimeConfig:

    if claim_idle is not None:
        config = replace(config, claim_idle_seconds=claim_idle)
    if max_events_per_entry is not None:
        config = replace(config, max_events_per_entry=max_events_per_entry)
    if trim_interval is not None:
        config = replace(config, trim_interval_seconds=trim_interval)
    return config


@click.command()
@config_option
@redis_option
@redis_timeout_option
@click.option("--host", default="0.0.0.0", show_default=True)  # noqa: S104 (a server binds all)
@click.option("--port", envvar="HDA_INGEST_PORT", default=DEFAULT_INGEST_PORT, show_default=True)
@click.option("--reuse-port", is_flag=True, help="Share the port with sibling processes.")
@click.option("--max-events-per-entry", type=int, default=None)
@log_option
def ingest(
    *,
    config_path: Path,
    redis_url: str,
    redis_timeout: float,
    host: str,
    port: int,
    reuse_port: bool,
    max_events_per_entry: int | None,
    log_level: str,
) -> None:
    """REST and WebSocket ingest (token from HDA_INGEST_TOKEN, comma-separated for several)."""

    setup_logging("ingest", log_level)
    config = _with_overrides(load_config(config_path), max_events_per_entry=max_events_per_entry)
    tokens = tokens_from_environment()
    address = redis_address(redis_url, redis_timeout)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve_ingest(
            config, address, host=host, port=port, tokens=tokens, stop=stop,
            reuse_port=reuse_port,
        )  # fmt: skip

    asyncio.run(main())


@click.command()
@config_option
@redis_option
@redis_timeout_option
@click.option(
    "--consumer", default=None, help="Consumer name (default: HDA_POD_NAME, then HOSTNAME)."
)
@click.option(
    "--claim-idle", type=float, default=None, help="Seconds before idle entries are reclaimed."
)
@click.option("--trim-interval", type=float, default=None)
@click.option("--host", default="0.0.0.0", show_default=True)  # noqa: S104
@click.option("--port", envvar="HDA_WORKER_PORT", default=DEFAULT_WORKER_PORT, show_default=True,
              help="Probes and metrics; 0 disables.")  # fmt: skip
@log_option
def worker(
    *,
    config_path: Path,
    redis_url: str,
    redis_timeout: float,
    consumer: str | None,
    claim_idle: float | None,
    trim_interval: float | None,
    host: str,
    port: int,
    log_level: str,
) -> None:
    """Consume input partitions, run the pipeline, commit results and acks atomically."""

    setup_logging("worker", log_level)
    config = _with_overrides(
        load_config(config_path), claim_idle=claim_idle, trim_interval=trim_interval
    )
    asyncio.run(
        serve_worker(
            config,
            redis_address(redis_url, redis_timeout),
            consumer=consumer_name(consumer),
            host=host,
            port=port,
        )
    )


@click.command()
@config_option
@redis_option
@redis_timeout_option
@click.option(
    "--consumer", default=None, help="Consumer name (default: HDA_POD_NAME, then HOSTNAME)."
)
@click.option("--data-dir", envvar=ENV_OUTPUT_DIR, default=DEFAULT_OUTPUT_DIR, show_default=True,
              type=click.Path(file_okay=False, path_type=Path))  # fmt: skip
@click.option("--host", default="0.0.0.0", show_default=True)  # noqa: S104
@click.option("--port", envvar="HDA_OUTPUT_PORT", default=DEFAULT_OUTPUT_PORT, show_default=True)
@click.option("--retention-interval", type=click.FloatRange(min=0.05), default=10.0,
              show_default=True, help="Seconds between segment retention passes.")  # fmt: skip
@click.option("--peers", envvar=ENV_OUTPUT_PEERS, default="",
              help=f"Every output replica, this one included, as CONSUMER=URL,... (env "
              f"{ENV_OUTPUT_PEERS}); subscribe merges them.")  # fmt: skip
@click.option("--peer-url", envvar=ENV_OUTPUT_PEER_URL, default=None,
              help=f"Or: the URL of a peer pod, with {{pod}} for its name (env "
              f"{ENV_OUTPUT_PEER_URL}); the peers are this StatefulSet's ordinals up to "
              "spec.output.replicas. Neither: only this process.")  # fmt: skip
@log_option
def output(
    *,
    config_path: Path,
    redis_url: str,
    redis_timeout: float,
    consumer: str | None,
    data_dir: Path,
    host: str,
    port: int,
    retention_interval: float,
    peers: str,
    peer_url: str | None,
    log_level: str,
) -> None:
    """Write output streams to fsync'd segment files and serve subscribers (token from
    HDA_INGEST_TOKEN, like ingest)."""

    setup_logging("output", log_level)
    config = load_config(config_path)
    address = redis_address(redis_url, redis_timeout)
    try:
        peer_map = parse_peer_map(peers)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--peers") from error

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve_output(
            config, address, consumer=consumer_name(consumer), data_dir=data_dir,
            host=host, port=port, stop=stop, retention_interval=retention_interval,
            peers=peer_map, peer_url=peer_url, config_path=config_path,
            tokens=tokens_from_environment(),
        )  # fmt: skip

    asyncio.run(main())


@click.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--redis-url", default=None, help="Use this Valkey instead of the embedded one.")
@click.option("--data-dir", default=Path("hda-data"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Output segments and the embedded Valkey's files go here.")  # fmt: skip
@click.option(
    "--workers", type=int, default=None, help="Worker processes (default: spec.workers.replicas)."
)
@click.option("--ingest-port", default=DEFAULT_INGEST_PORT, show_default=True)
@click.option("--output-port", default=DEFAULT_OUTPUT_PORT, show_default=True,
              help="Output replica i listens on this port + i.")  # fmt: skip
@click.option("--worker-port", default=0, show_default=True,
              help="Worker i serves /healthz, /readyz and /metrics on PORT+i (0: none).")  # fmt: skip
@click.option("--outputs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Output processes; each serves the whole stream to subscribers.")  # fmt: skip
@click.option("--appendfsync", type=click.Choice(["always", "everysec"]), default=None,
              help="Embedded Valkey AOF fsync (default: spec.redis.persistence.appendFsync).")  # fmt: skip
@click.option("--down-after-ms", type=click.IntRange(min=100), default=DEFAULT_DOWN_AFTER_MS,
              show_default=True,
              help="replicated/cluster topologies: a primary silent this long is failed over "
              "(Sentinel down-after-milliseconds, cluster-node-timeout).")  # fmt: skip
@log_option
def run(
    *,
    manifest: Path,
    redis_url: str | None,
    data_dir: Path,
    workers: int | None,
    ingest_port: int,
    output_port: int,
    worker_port: int,
    outputs: int,
    appendfsync: str | None,
    down_after_ms: int,
    log_level: str,
) -> None:
    """Run the pipeline MANIFEST describes as local processes on an embedded Valkey (one
    server, or the replicated or cluster topology spec.redis.topology asks for)."""

    setup_logging("run", log_level)
    pipeline = LocalPipeline(
        manifest,
        data_dir=data_dir,
        redis_url=redis_url,
        workers=workers,
        ingest_port=ingest_port,
        output_port=output_port,
        worker_port=worker_port,
        outputs=outputs,
        appendfsync=appendfsync,
        log_level=log_level,
        failover=FailoverSettings(down_after_ms=down_after_ms),
    )
    pipeline.run_until_interrupted(
        announce=lambda text: click.echo(text, err=True),
    )


@click.command()
@click.option("--seconds", default=10.0, show_default=True, help="Duration of each measurement.")
@click.option("--event-bytes", default=200, show_default=True)
@click.option("--events-per-request", default=200, show_default=True)
@click.option("--partitions", default=4, show_default=True)
@click.option("--workers", default=1, show_default=True)
@click.option("--ingest-processes", default=1, show_default=True)
@click.option("--connections", default=16, show_default=True, help="Concurrent HTTP producers.")
@click.option("--appendfsync", type=click.Choice(["always", "everysec"]), default="everysec",
              show_default=True)  # fmt: skip
@click.option("--pipeline-steps/--no-pipeline-steps", default=False, show_default=True,
              help="Run a filter + setFields + dropFields pipeline instead of pass-through.")  # fmt: skip
@click.option("--otlp", is_flag=True,
              help="Post OTLP/HTTP protobuf log records to /v1/logs instead of NDJSON events.")  # fmt: skip
@click.option("--trace-ratio", type=click.FloatRange(0.0, 1.0), default=None,
              help="Trace the pipeline at this sampleRatio into a loopback OTLP sink "
              "(default: tracing off).")  # fmt: skip
@click.option("--idempotency-keys", is_flag=True,
              help="Send every request with its own Idempotency-Key (measures what it costs).")  # fmt: skip
@click.option("--partition-key", is_flag=True,
              help="Route events by their `host` field (partitionKey: host, 64 hosts per request) "
              "instead of round-robin batches. NDJSON only.")  # fmt: skip
@click.option("--topology", type=click.Choice(["standalone", "replicated", "cluster"]),
              default="standalone", show_default=True,
              help="Also measure the pipeline on this Valkey topology, next to standalone.")  # fmt: skip
@click.option("--shards", type=click.IntRange(min=3), default=3, show_default=True,
              help="Primaries of --topology cluster.")  # fmt: skip
@click.option("--replicas", type=click.IntRange(min=0), default=None,
              help="Replicas per primary (default: the topology's, as spec.redis.replicas).")  # fmt: skip
@log_option
def bench(
    *,
    seconds: float,
    event_bytes: int,
    events_per_request: int,
    partitions: int,
    workers: int,
    ingest_processes: int,
    connections: int,
    appendfsync: str,
    pipeline_steps: bool,
    otlp: bool,
    trace_ratio: float | None,
    idempotency_keys: bool,
    partition_key: bool,
    topology: str,
    shards: int,
    replicas: int | None,
    log_level: str,
) -> None:
    """Raw Valkey XADD ceiling, then the whole pipeline: throughput and ack->durable latency
    (and with --topology, the same on that topology with the CPU per event of each)."""

    if partition_key and otlp:
        # every record of a bench OTLP request shares one resource: nothing to route by
        raise click.UsageError("--partition-key measures NDJSON requests; drop --otlp")
    setup_logging("bench", "WARNING" if log_level == "INFO" else log_level)
    options = BenchOptions(
        seconds=seconds,
        event_bytes=event_bytes,
        events_per_request=events_per_request,
        partitions=partitions,
        workers=workers,
        ingest_processes=ingest_processes,
        connections=connections,
        appendfsync=appendfsync,
        pipeline_steps=pipeline_steps,
        otlp=otlp,
        trace_ratio=trace_ratio,
        idempotency_keys=idempotency_keys,
        partition_key=partition_key,
        topology=topology,
        shards=shards,
        replicas=replicas,
    )
    for line in run_bench(options):
        click.echo(line)
