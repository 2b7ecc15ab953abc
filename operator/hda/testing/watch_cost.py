"""What unrelated objects cost the operator: `python -m hda.testing.watch_cost` prints figures
(never asserts on time).

On a fresh local control plane, with the operator running under exactly the chart's RBAC and a
few Ready HDAs (the operator benchmark's setup), it creates N objects that have nothing to do
with any HDA, first N ConfigMaps (a kind whose watch has a server-side label selector), then N
PersistentVolumes of another StorageClass (watched unfiltered: the Fibre Channel availability
check counts volumes an administrator made, which carry no label of ours, and PVs have no field
selector on their class, which the run shows by asking for one). For each it prints the
operator's CPU seconds and resident memory before and after, how many reconciles the events
caused, and the same for deleting them again. Results: docs/benchmarks.md, "Unrelated objects".
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hda.cluster import LocalCluster
from hda.testing.bench import Bench, report, wait
from hda.testing.harness import OperatorProcess, cpu_seconds, rss_kib

UNRELATED_LABEL = "hda-bench/unrelated"
UNRELATED_CLASS = "hda-bench-unrelated"
BATCH = 500
_RECONCILES = re.compile(r"^hda_operator_reconciles_total(?:\{\})? ([0-9.e+]+)$", re.MULTILINE)


@dataclass(frozen=True)
class Sample:
    cpu: float
    rss_kib: int
    reconciles: float


def sample(operator: OperatorProcess) -> Sample:
    match = _RECONCILES.search(operator.metrics())
    return Sample(
        cpu=cpu_seconds(operator.pid),
        rss_kib=rss_kib(operator.pid),
        reconciles=float(match.group(1)) if match else float("nan"),
    )


def wait_idle(
    operator: OperatorProcess, *, quiet_cpu: float, window: float, timeout: float
) -> float:
    """Wait until the operator spent less than `quiet_cpu` CPU seconds in each of 3 consecutive
    `window`s (it has worked through the events); return the seconds that took."""
    started = time.monotonic()
    quiet = 0
    last = cpu_seconds(operator.pid)
    while quiet < 3:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the operator was still busy after {timeout:.0f} s")
        time.sleep(window)
        now = cpu_seconds(operator.pid)
        quiet = quiet + 1 if now - last < quiet_cpu else 0
        last = now
    return time.monotonic() - started - 3 * window


def configmap(index: int, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"unrelated-{index:05d}",
            "namespace": namespace,
            "labels": {UNRELATED_LABEL: "true"},
        },
        "data": {"key": "x" * 64},
    }


def volume(index: int, namespace: str) -> dict[str, Any]:
    del namespace  # cluster-scoped
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"unrelated-{index:05d}", "labels": {UNRELATED_LABEL: "true"}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": UNRELATED_CLASS,
            "hostPath": {"path": f"/var/lib/hda-bench/unrelated-{index:05d}"},
        },
    }


def measure(
    bench: Bench,
    operator: OperatorProcess,
    *,
    kind: str,
    make: Callable[[int, str], dict[str, Any]],
    count: int,
    namespace: str,
    idle: Callable[[], float],
) -> None:
    idle()
    before = sample(operator)
    started = time.monotonic()
    for first in range(0, count, BATCH):
        batch = [make(i, namespace) for i in range(first, min(first + BATCH, count))]
        bench.kubectl("create", "-f", "-", input=yaml.safe_dump_all(batch))
    created = time.monotonic() - started
    settled = idle()
    after = sample(operator)
    report(
        f"{count} unrelated {kind}: created in {created:.1f} s; operator CPU "
        f"{after.cpu - before.cpu:.2f} s (idle again {settled:.1f} s after the last create), "
        f"RSS {before.rss_kib / 1024:.1f} -> {after.rss_kib / 1024:.1f} MiB "
        f"({(after.rss_kib - before.rss_kib) / 1024:+.1f}), reconciles caused "
        f"{after.reconciles - before.reconciles:.0f}"
    )
    selector = ["-l", f"{UNRELATED_LABEL}=true"]
    where = ["-n", namespace] if kind == "ConfigMaps" else []
    started = time.monotonic()
    bench.kubectl("delete", kind.lower(), *where, *selector, "--wait=false")
    deleted = time.monotonic() - started
    settled = idle()
    gone = sample(operator)
    report(
        f"  deleting them: {deleted:.1f} s; operator CPU {gone.cpu - after.cpu:.2f} s, RSS "
        f"{gone.rss_kib / 1024:.1f} MiB, reconciles caused {gone.reconciles - after.reconciles:.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hda.testing.watch_cost", description=__doc__)
    parser.add_argument("--objects", type=int, default=10_000, help="unrelated objects per kind")
    parser.add_argument("--hdas", type=int, default=3, help="Ready HDAs the operator reconciles")
    parser.add_argument("--resync", type=float, default=600.0, help="operator --resync")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args(argv)

    name = f"opwatch-{uuid.uuid4().hex[:4]}"
    plane = LocalCluster(name)
    report(f"# watch cost: local plane {name}, {args.hdas} HDAs, {args.objects} objects per kind")
    plane.up(nodes=3, fc_nodes=2)
    work = Path(tempfile.mkdtemp(prefix="hda-watchcost-"))
    bench = Bench(str(plane.bin_dir() / "kubectl"), plane.kubeconfig, work, args.resync)
    try:
        bench.setup(str(plane.bin_dir() / "helm"))
        operator = bench.operator
        assert operator is not None
        namespace = "bench-watch"
        bench.ensure_namespace(namespace)
        for index in range(args.hdas):
            objects, _ = bench.manifests(namespace, f"hda{index}")
            for obj in objects:
                bench.kubectl("apply", "-f", "-", input=json.dumps(obj))
        wait(lambda: bench.all_ready([namespace], args.hdas), 600, "HDAs Ready", interval=1)
        refused = bench.kubectl(
            "get", "pv", f"--field-selector=spec.storageClassName={UNRELATED_CLASS}", check=False
        )
        report(
            "server-side filter of PVs by StorageClass: "
            + (refused.stderr.strip().splitlines() or ["accepted"])[-1]
        )

        def idle() -> float:
            return wait_idle(operator, quiet_cpu=0.05, window=2.0, timeout=900)

        report(f"operator at rest with {args.hdas} Ready HDAs: {sample(operator)}")
        measure(
            bench, operator, kind="ConfigMaps", make=configmap, count=args.objects,
            namespace=namespace, idle=idle,
        )  # fmt: skip
        measure(
            bench, operator, kind="PersistentVolumes", make=volume, count=args.objects,
            namespace=namespace, idle=idle,
        )  # fmt: skip
        stats = bench.stop_operator()
        if stats:
            report(f"operator totals: {stats.get('reconciles')} reconciles")
    finally:
        bench.close()
        if not args.keep:
            plane.down()
        report(f"operator log: {work / 'operator.log'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
