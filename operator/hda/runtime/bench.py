"""`hda bench`: the raw Valkey XADD ceiling and the whole pipeline, measured in one run.

(a) pipelined XADD of 200-byte entries against the same embedded Valkey settings;
(b) HTTP ingest -> workers -> fsync'd output with ~200-byte JSON events (or, with `--otlp`, OTLP
    protobuf log records posted to /v1/logs, one event each): the sustained rate
    (events made durable per second while producers push as fast as ingest accepts), then
    latency from the ingest acknowledgement to the record arriving at a live subscriber
    (which output publishes only after the fsync) at half that rate.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

from .codec import parse_ndjson
from .embedded import EmbeddedValkey, free_port
from .local import LocalPipeline
from .otlp.decode import PROTOBUF_TYPE, Encoding, decode_request
from .otlp.mapping import map_logs, map_request
from .resp import RedisAddress, RespConnection, pack
from .topology.local import LocalBuffer, ReplicatedValkey


@dataclass(frozen=True)
class BenchOptions:
    seconds: float = 10.0
    event_bytes: int = 200
    events_per_request: int = 200
    partitions: int = 4
    workers: int = 1
    ingest_processes: int = 1
    connections: int = 16
    appendfsync: str = "everysec"
    pipeline_steps: bool = False
    otlp: bool = False
    # replicated or cluster: the pipeline is measured on it too, next to standalone
    topology: str = "standalone"
    shards: int = 3
    replicas: int | None = None  # unset: the topology's default (spec.redis.replicas)
    trace_ratio: float | None = None  # None: tracing off
    idempotency_keys: bool = False  # every request with its own Idempotency-Key
    partition_key: bool = False  # the stream routes events by their `host` (NDJSON only)


@dataclass(frozen=True)
class PipelineFigures:
    sustained_events_per_second: float
    accepted_events_per_second: float
    latency_rate: float
    p50_ms: float
    p99_ms: float
    samples: int


# Distinct `host` values in a request's events: what `--partition-key` routes by.
HOSTS = 64


def sample_event(sequence: int, size: int) -> bytes:
    """A log-like JSON event of about `size` bytes; `host` is one of HOSTS values."""
    event = {
        "ts": 1_700_000_000.123,
        "host": f"web-{sequence % HOSTS:03d}",
        "service": "checkout",
        "level": "info",
        "msg": "GET /api/v1/items/123456 200",
        "seq": sequence,
        "pad": "",
    }
    base = len(orjson.dumps(event))
    event["pad"] = "x" * max(0, size - base)
    return orjson.dumps(event)


def otlp_logs_request(first: int, count: int, size: int) -> bytes:
    """An OTLP protobuf ExportLogsServiceRequest of `count` log-like records (attribute `seq`
    from `first` on), each padded so that its HDA event (resource and scope included) is about
    `size` bytes."""
    return _otlp_logs(first, count, _otlp_padding(size)).SerializeToString()


def _event_bytes(options: BenchOptions) -> int:
    """Size of one stored event (an OTLP record's event carries its resource and scope)."""
    if not options.otlp:
        return options.event_bytes
    padding = _otlp_padding(options.event_bytes)
    return len(orjson.dumps(map_logs(_otlp_logs(0, 1, padding)).events[0]))


@functools.cache
def _otlp_padding(size: int) -> str:
    base = len(orjson.dumps(map_logs(_otlp_logs(0, 1, "")).events[0]))
    return "x" * max(0, size - base)


def _otlp_logs(first: int, count: int, pad: str) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    for key, value in (("service.name", "checkout"), ("host.name", "web-017")):
        attribute = resource_logs.resource.attributes.add()
        attribute.key, attribute.value.string_value = key, value
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "bench"
    for sequence in range(first, first + count):
        record = scope_logs.log_records.add()
        record.time_unix_nano = 1_700_000_000_123_456_789
        record.severity_number = SeverityNumber.SEVERITY_NUMBER_INFO
        record.severity_text = "INFO"
        record.body.string_value = "GET /api/v1/items/123456 200"
        seq, padding = record.attributes.add(), record.attributes.add()
        seq.key, seq.value.int_value = "seq", sequence
        padding.key, padding.value.string_value = "pad", pad
    return request


def _request(
    options: BenchOptions, ingest_port: int, probe: int | None
) -> tuple[str, bytes, dict[str, str]]:
    """URL, body and headers of one producer request; `probe` marks its first event."""
    if options.otlp:
        first = probe if probe is not None else 10**9
        body = otlp_logs_request(first, options.events_per_request, options.event_bytes)
        return f"http://127.0.0.1:{ingest_port}/v1/logs", body, {"Content-Type": PROTOBUF_TYPE}
    lines = [sample_event(i, options.event_bytes) for i in range(1, options.events_per_request)]
    if probe is not None:
        lines.insert(0, orjson.dumps({"probe": probe, "pad": "x" * (options.event_bytes - 30)}))
    else:
        lines.insert(0, sample_event(0, options.event_bytes))
    url = f"http://127.0.0.1:{ingest_port}/v1/streams/bench/events"
    return url, b"\n".join(lines) + b"\n", {"Content-Type": "application/x-ndjson"}


# --- (a) the raw ceiling ---


async def _xadd_ceiling(address: RedisAddress, seconds: float, entry_bytes: int) -> float:
    value = b"v" * entry_bytes
    depth = 64
    payload = pack(("XADD", "bench:ceiling", "*", "d", value)) * depth
    connections = [await RespConnection.connect(address) for _ in range(2)]
    done = 0
    deadline = time.perf_counter() + seconds

    async def pump(connection: RespConnection) -> None:
        nonlocal done
        in_flight: list[asyncio.Future[object]] = []
        while time.perf_counter() < deadline:
            while len(in_flight) < 4 * depth:
                in_flight.extend(connection.send_raw(payload, depth))
            batch, in_flight = in_flight[:depth], in_flight[depth:]
            await asyncio.gather(*batch)
            done += depth
        await asyncio.gather(*in_flight)

    started = time.perf_counter()
    await asyncio.gather(*(pump(c) for c in connections))
    elapsed = time.perf_counter() - started
    await connections[0].execute("DEL", "bench:ceiling")
    for connection in connections:
        connection.close()
    return done / elapsed


# --- (b) the pipeline ---


class SpanSink:
    """An OTLP/HTTP trace receiver on loopback (a thread) that counts the spans per service."""

    def __init__(self) -> None:
        self.spans: collections.Counter[str] = collections.Counter()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                    attributes = resource_spans.resource.attributes
                    service = next(
                        (kv.value.string_value for kv in attributes if kv.key == "service.name"),
                        "?",
                    )
                    for scope_spans in resource_spans.scope_spans:
                        sink.spans[service] += len(scope_spans.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a line per export would flood the bench's output

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def bench_manifest(
    options: BenchOptions, topology: str = "standalone", trace_endpoint: str = ""
) -> str:
    redis = ""
    if topology != "standalone":
        shards = f", shards: {options.shards}" if topology == "cluster" else ""
        replicas = f", replicas: {options.replicas}" if options.replicas is not None else ""
        redis = f"\n  redis: {{topology: {topology}{shards}{replicas}}}"
    steps = ""
    if options.pipeline_steps:
        steps = """
    pipeline:
      - filter: {field: level, op: ne, value: debug}
      - setFields: {fields: {env: bench}}
      - dropFields: {fields: [pad]}"""
    otlp = "\n    otlp: {logs: bench}" if options.otlp else ""
    routing = ", partitionKey: host" if options.partition_key else ""
    tracing = ""
    if options.trace_ratio is not None:
        tracing = f"""
  observability:
    tracing: {{enabled: true, endpoint: '{trace_endpoint}', sampleRatio: {options.trace_ratio}}}"""
    return f"""apiVersion: hda.shitops.dev/v1alpha1
kind: HyperDriveAccelerator
metadata: {{name: bench}}
spec:
  streams:
    - {{name: bench, partitions: {options.partitions}{routing}}}
  ingest:
    maxRequestBytes: 67108864{otlp}
    backpressure: {{maxBacklog: 2000000}}
  workers:
    replicas: {options.workers}
    batchSize: 64{steps}
  output:
    sinks:
      subscribers: {{maxBufferedEntries: 100000}}{redis}{tracing}
"""


async def _output_events(port: int) -> float:
    # Its own session: the producers' connection pool is always busy.
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    match = re.search(r'^hda_output_events_total\{stream="bench"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _with_key(options: BenchOptions, headers: dict[str, str], key: str) -> dict[str, str]:
    if not options.idempotency_keys:
        return headers
    return {**headers, "Idempotency-Key": key}


async def _throughput(
    options: BenchOptions, ingest_port: int, output_port: int, cpu: Callable[[], CpuSeconds]
) -> tuple[float, float, CpuSeconds]:
    url, body, headers = _request(options, ingest_port, None)
    accepted_status = 200 if options.otlp else 202
    accepted = 0
    stop_at = time.perf_counter() + options.seconds + 2.0
    connector = aiohttp.TCPConnector(limit=options.connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def producer(number: int) -> None:
            nonlocal accepted
            for sent in itertools.count():
                if time.perf_counter() >= stop_at:
                    break
                keyed = _with_key(options, headers, f"bench-{number}-{sent}")
                async with session.post(url, data=body, headers=keyed) as response:
                    await response.read()
                    if response.status == accepted_status:
                        accepted += options.events_per_request
                    else:
                        await asyncio.sleep(0.05)  # 429: backlog above the watermark

        producers = [asyncio.create_task(producer(n)) for n in range(options.connections)]
        await asyncio.sleep(2.0)  # warm-up
        accepted_start, durable_start = accepted, await _output_events(output_port)
        cpu_start = cpu()
        started = time.perf_counter()
        await asyncio.sleep(options.seconds)
        elapsed = time.perf_counter() - started
        cpu_end = cpu()
        accepted_end, durable_end = accepted, await _output_events(output_port)
        await asyncio.gather(*producers)
        # Let the backlog drain before the latency run.
        previous = -1.0
        while (current := await _output_events(output_port)) != previous:
            previous = current
            await asyncio.sleep(1.0)
    durable = durable_end - durable_start
    spent = {role: (cpu_end[role] - cpu_start[role]) / max(durable, 1) for role in cpu_end}
    return durable / elapsed, (accepted_end - accepted_start) / elapsed, spent


# The first event of each latency request: `"probe":N` (NDJSON); with OTLP every record has
# attribute `"seq":N` and the first of request p has N = p * events per request.
_PROBE = re.compile(rb'"probe":(\d+)')
_OTLP_SEQ = re.compile(rb'"seq":(\d+)')


async def _latency(
    options: BenchOptions, ingest_port: int, output_port: int, rate: float
) -> tuple[float, float, int]:
    accepted_status = 200 if options.otlp else 202
    marker = _OTLP_SEQ if options.otlp else _PROBE
    interval = options.events_per_request / rate
    acked: dict[int, float] = {}
    durable: dict[int, float] = {}
    connector = aiohttp.TCPConnector(limit=options.connections * 4)
    async with aiohttp.ClientSession(connector=connector) as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{output_port}/v1/streams/bench/subscribe")

        async def subscriber() -> None:
            async for message in ws:
                now = time.perf_counter()
                for probe in marker.findall(message.data.encode()):
                    durable[int(probe)] = now

        listening = asyncio.create_task(subscriber())

        total = int(options.seconds / interval)
        # Bodies are built before the clock starts: building OTLP requests in the loop would
        # delay reading the replies and bias the latency.
        # OTLP: record i of request p has attribute seq p*n+i, and only its first is timed.
        firsts = [p * options.events_per_request if options.otlp else p for p in range(total)]
        requests = [(first, *_request(options, ingest_port, first)) for first in firsts]
        requests = [
            (first, url, body, _with_key(options, headers, f"probe-{first}"))
            for first, url, body, headers in requests
        ]

        async def send(first: int, url: str, body: bytes, headers: dict[str, str]) -> None:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status == accepted_status:
                    acked[first] = time.perf_counter()

        tasks = []
        started = time.perf_counter()
        for probe, request in enumerate(requests):
            delay = started + probe * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(*request)))
        await asyncio.gather(*tasks)
        deadline = time.perf_counter() + 10
        # bounded wait for the last records to reach the subscriber
        while (  # noqa: ASYNC110
            any(p not in durable for p in acked) and time.perf_counter() < deadline
        ):
            await asyncio.sleep(0.1)
        await ws.close()
        listening.cancel()
    latencies = sorted(max(0.0, durable[p] - acked[p]) * 1000 for p in acked if p in durable)
    if not latencies:
        return float("nan"), float("nan"), 0
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return statistics.median(latencies), p99, len(latencies)


def _ingest_cpu_per_event(options: BenchOptions, repeats: int = 200) -> tuple[float, float]:
    """Microseconds of this process's CPU per event: what ingest does to one OTLP request's
    records (protobuf decode, mapping, JSON encoding) and to one NDJSON body's lines."""
    count = options.events_per_request
    otlp_body = otlp_logs_request(0, count, options.event_bytes)
    ndjson_body = b"\n".join(sample_event(i, options.event_bytes) for i in range(count))
    started = time.process_time()
    for _ in range(repeats):
        request = decode_request("logs", otlp_body, Encoding.PROTOBUF)
        [orjson.dumps(event) for event in map_request(request).events]
    otlp = time.process_time() - started
    started = time.process_time()
    for _ in range(repeats):
        parse_ndjson(ndjson_body)
    ndjson = time.process_time() - started
    return otlp / repeats / count * 1e6, ndjson / repeats / count * 1e6


# CPU seconds per role: ingest, worker, output, and valkey (every valkey-server and Sentinel).
# Unlike throughput, CPU per event barely moves when other work shares the machine.
CpuSeconds = dict[str, float]
VALKEY_ROLE = "valkey"


def _hda_cpu(cpu: CpuSeconds) -> float:
    return sum(seconds for role, seconds in cpu.items() if role != VALKEY_ROLE)


@dataclass(frozen=True)
class TopologyRun:
    name: str
    servers: int  # valkey-server processes
    figures: PipelineFigures
    cpu_per_event: CpuSeconds


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (/proc/PID/stat fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # exited: its CPU is gone with it
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _servers(buffer: LocalBuffer | None) -> list[EmbeddedValkey]:
    if buffer is None:
        return []
    if isinstance(buffer, EmbeddedValkey):
        return [buffer]
    if isinstance(buffer, ReplicatedValkey):
        return [*buffer.nodes, *buffer.sentinels]
    return buffer.nodes


def _pipeline_run(
    options: BenchOptions, topology: str, root: Path, sink: SpanSink | None = None
) -> TopologyRun:
    """(b) on one topology: sustained rate, latency, and the CPU every process spent per event."""
    manifest = root / f"bench-{topology}.yaml"
    manifest.write_text(bench_manifest(options, topology, sink.endpoint if sink else ""))
    ingest_port, output_port = free_port(), free_port()
    local = LocalPipeline(
        manifest,
        data_dir=root / f"pipeline-{topology}",
        ingest_port=ingest_port,
        output_port=output_port,
        appendfsync=options.appendfsync,
        log_level="WARNING",
        ingest_processes=options.ingest_processes,
    )
    local.start()
    try:
        servers = _servers(local.valkey)

        def cpu() -> CpuSeconds:
            used: CpuSeconds = collections.defaultdict(float)
            for component in local.components:
                if component.process is not None:
                    role = component.name.split("-")[0]  # ingest-0, worker-1, output
                    used[role] += _process_cpu_seconds(component.process.pid)
            for server in servers:
                if server.process is not None:
                    used[VALKEY_ROLE] += _process_cpu_seconds(server.process.pid)
            return dict(used)

        sustained, accepted, spent = asyncio.run(
            _throughput(options, ingest_port, output_port, cpu)
        )
        rate = sustained / 2
        p50, p99, samples = asyncio.run(_latency(options, ingest_port, output_port, rate))
    finally:
        local.stop()  # components flush their queued spans as they exit
    figures = PipelineFigures(sustained, accepted, rate, p50, p99, samples)
    return TopologyRun(topology, len(servers), figures, spent)


def _machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} CPUs"


def run_bench(options: BenchOptions) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="hda-bench-") as temp:
        root = Path(temp)
        yield f"command: hda bench {' '.join(sys.argv[2:])}".rstrip()
        yield f"machine: {_machine()}"
        yield (
            f"settings: valkey appendfsync={options.appendfsync}, {options.partitions} partitions, "
            f"{options.ingest_processes} ingest / {options.workers} worker / 1 output process(es), "
            f"{options.events_per_request} events of {_event_bytes(options)} B per request "
            f"({'OTLP protobuf log records to /v1/logs' if options.otlp else 'NDJSON'}), "
            f"{options.connections} HTTP connections, "
            f"pipeline: {'filter+setFields+dropFields' if options.pipeline_steps else 'pass-through'}, "
            + (
                f"tracing on at sampleRatio {options.trace_ratio} (OTLP/HTTP sink on loopback)"
                if options.trace_ratio is not None
                else "tracing off"
            )
            + (", an Idempotency-Key on every request" if options.idempotency_keys else "")
            + (f", routed by partitionKey host ({HOSTS} hosts)" if options.partition_key else "")
            + (
                f", also on topology {options.topology}"
                + (f" ({options.shards} shards)" if options.topology == "cluster" else "")
                if options.topology != "standalone"
                else ""
            )
        )
        with EmbeddedValkey(root / "ceiling", appendfsync=options.appendfsync) as valkey:
            ceiling = asyncio.run(
                _xadd_ceiling(RedisAddress(port=valkey.port), options.seconds, options.event_bytes)
            )
        sink = SpanSink() if options.trace_ratio is not None else None
        if sink is not None:
            sink.start()
        try:
            standalone = _pipeline_run(options, "standalone", root, sink)
            topology = (
                _pipeline_run(options, options.topology, root, sink)
                if options.topology != "standalone"
                else None
            )
        finally:
            if sink is not None:
                sink.stop()
    yield ""
    yield "| measurement | result |"
    yield "|---|---|"
    yield f"| (a) raw Valkey XADD ceiling, pipelined {options.event_bytes} B entries | {ceiling:,.0f} entries/s |"
    figures = standalone.figures
    sustained, rate = figures.sustained_events_per_second, figures.latency_rate
    yield f"| (b) pipeline sustained (durable in output) | {sustained:,.0f} events/s |"
    yield f"| (b) ingest accepted during the same window | {figures.accepted_events_per_second:,.0f} events/s |"
    yield f"| (b) latency ack -> durable at {rate:,.0f} events/s: p50 | {figures.p50_ms:.1f} ms |"
    yield f"| (b) latency ack -> durable at {rate:,.0f} events/s: p99 | {figures.p99_ms:.1f} ms ({figures.samples} requests) |"
    yield f"| ratio (b)/(a) | {sustained / ceiling:.2f} |"
    for role, seconds in sorted(standalone.cpu_per_event.items()):
        yield f"| (b) CPU of the {role} process(es) per durable event | {seconds * 1e6:.2f} us |"
    if options.otlp:
        otlp_us, ndjson_us = _ingest_cpu_per_event(options)
        yield f"| (c) ingest CPU per event, OTLP decode + map + encode | {otlp_us:.2f} us |"
        yield f"| (c) ingest CPU per event, NDJSON validation (same count) | {ndjson_us:.2f} us |"
    if topology is not None:
        yield ""
        yield "| (d) topology | servers | sustained | p50 / p99 ack -> durable | CPU per durable event: HDA processes + Valkey = total |"
        yield "|---|---|---|---|---|"
        for run in (standalone, topology):
            f, cpu = run.figures, run.cpu_per_event
            yield (
                f"| {run.name} | {run.servers} | {f.sustained_events_per_second:,.0f} events/s "
                f"| {f.p50_ms:.1f} / {f.p99_ms:.1f} ms "
                f"| {_hda_cpu(cpu) * 1e6:.1f} + {cpu.get(VALKEY_ROLE, 0.0) * 1e6:.1f} = "
                f"{sum(cpu.values()) * 1e6:.1f} us |"
            )
    if sink is not None:
        counts = ", ".join(f"{service} {n:,}" for service, n in sorted(sink.spans.items()))
        yield f"| (e) spans received by the OTLP sink | {counts or 'none'} |"
