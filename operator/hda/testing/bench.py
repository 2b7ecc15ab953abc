"""Operator benchmark: `python -m hda.testing.bench` prints figures (never asserts on time).

On a fresh local control plane (kwok nodes, so pods are simulated), with the operator running as
`hda operator` under exactly the chart's RBAC behind a request-counting proxy:

1. latency: seconds from `kubectl apply` of one HDA until every child exists, and until Ready
   (median of a few runs);
2. scale: N HDAs (default 100) created at once: seconds until all are Ready;
3. steady state: API requests per HDA per minute over a window (writes, reads, watch starts);
4. the operator's resident memory and its own reconcile time (count, total and mean seconds,
   from the stats it logs on shutdown), and writes after a restart with N HDAs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from hda.api.images import DefaultImages
from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.cluster import LocalCluster
from hda.specs import child_names, desired_children, resolve_images

from .harness import (
    CountingProxy,
    OperatorProcess,
    Request,
    admin_access,
    cpu_seconds,
    install_chart_rbac,
    rss_kib,
    token_kubeconfig,
)

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "hda-operator"
CRD = ROOT / "crds" / "hyperdriveaccelerators.hda.shitops.dev.yaml"
HDA_RESOURCE = "hyperdriveaccelerators.hda.shitops.dev"
STORAGE = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: hda-fibre-channel}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: hda-bench-local}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
"""


def report(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Bench:
    def __init__(self, kubectl: str, kubeconfig: Path, work: Path, resync: float) -> None:
        self.kubectl_bin = kubectl
        self.kubeconfig = kubeconfig
        self.work = work
        self.resync = resync
        self.proxy: CountingProxy | None = None
        self.operator: OperatorProcess | None = None

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
        return result

    def get(self, *args: str) -> dict[str, Any]:
        result = self.kubectl("get", *args, "-o", "json", check=False)
        data: dict[str, Any] = json.loads(result.stdout) if result.returncode == 0 else {}
        return data

    # --- setup ---------------------------------------------------------------------------

    def setup(self, helm: str) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        wait(lambda: _established(self.get("crd", HDA_RESOURCE)), 60, "CRD established")
        self.kubectl("apply", "-f", "-", input=STORAGE)
        system = "hda-bench-system"
        self.kubectl("create", "namespace", system, check=False)
        account = install_chart_rbac(
            helm=helm, kubectl=self.kubectl, chart=CHART, namespace=system, release="bench"
        )
        token = self.kubectl(
            "create", "token", account, "-n", system, "--duration=6h"
        ).stdout.strip()
        access = admin_access(self.kubeconfig)
        self.proxy = CountingProxy(access.server, access.ca_data).start()
        self.operator_kubeconfig = token_kubeconfig(
            self.proxy.url, token, self.work / "operator.kubeconfig"
        )
        self.start_operator()

    def start_operator(self) -> None:
        self.operator = OperatorProcess(
            self.operator_kubeconfig,
            self.work / "operator.log",
            extra_args=["--resync", str(self.resync)],
        ).start()
        wait(self.operator.healthy, 60, "operator healthy")

    def stop_operator(self) -> dict[str, Any]:
        """Stop the operator; return the stats it logged on the way out."""
        assert self.operator is not None
        self.operator.stop()
        stats: dict[str, Any] = {}
        for line in self.operator.output().splitlines():
            if '"operator stopping"' in line:
                stats = json.loads(line)
        return stats

    def close(self) -> None:
        """Stop whatever still runs: the operator and the counting proxy."""
        if self.operator is not None:
            self.operator.stop()
        if self.proxy is not None:
            self.proxy.stop()

    # --- HDAs ------------------------------------------------------------------------------

    def manifests(
        self, namespace: str, name: str
    ) -> tuple[list[dict[str, Any]], HyperDriveAccelerator]:
        spec = {
            "streams": [{"name": "events", "partitions": 4}],
            "redis": {"storage": {"size": "1Gi", "storageClassName": "hda-bench-local"}},
            "ingest": {"replicas": 1},
            "workers": {"replicas": 2},
            "output": {
                "replicas": 2,
                "fibreChannel": {
                    "size": "10Gi",
                    "volumes": [{"wwids": [f"3600a0b8{uuid.uuid4().hex[:24]}"]} for _ in range(2)],
                },
                "pvcRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
            },
        }
        hda = {
            "apiVersion": "hda.shitops.dev/v1alpha1",
            "kind": "HyperDriveAccelerator",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        model = HyperDriveAccelerator.model_validate(hda)
        claim = f"data-{child_names(model).valkey_statefulset}-0"
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"bench-{namespace}-{name}", "labels": {"hda-bench": "true"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "hda-bench-local",
                "hostPath": {"path": f"/var/lib/hda-bench/{namespace}-{name}"},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }
        return [pv, hda], model

    def ensure_namespace(self, namespace: str) -> None:
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": namespace,
                        "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                    },
                }
            ),
        )
        wait(
            lambda: (
                self.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode == 0
            ),
            60,
            f"namespace {namespace} ready",
        )

    def children_exist(self, model: HyperDriveAccelerator) -> bool:
        expected = {
            (c["kind"], c["metadata"]["name"])
            for c in desired_children(
                model,
                resolve_images(model.spec, DefaultImages()),
                worker_replicas=model.spec.workers.replicas,
            )
        }
        namespaced = self.get(
            "sts,deploy,svc,cm,sa,pdb,netpol", "-n", model.namespace, "-l",
            f"hda.shitops.dev/accelerator={model.name}",
        ).get("items", [])  # fmt: skip
        volumes = self.get("pv", "-l", f"hda.shitops.dev/namespace={model.namespace}").get(
            "items", []
        )
        present = {(o["kind"], o["metadata"]["name"]) for o in [*namespaced, *volumes]}
        return expected <= present

    def ready(self, namespace: str, name: str) -> bool:
        obj = self.get(HDA_RESOURCE, name, "-n", namespace)
        return _condition(obj, "Ready") == "True"

    def all_ready(self, namespaces: Iterable[str], expected: int) -> bool:
        items = self.get(HDA_RESOURCE, "-A").get("items", [])
        wanted = set(namespaces)
        ready = [
            o
            for o in items
            if o["metadata"]["namespace"] in wanted and _condition(o, "Ready") == "True"
        ]
        return len(ready) >= expected

    # --- phases ------------------------------------------------------------------------------

    def latency(self, runs: int) -> tuple[list[float], list[float]]:
        to_children: list[float] = []
        to_ready: list[float] = []
        for run in range(runs):
            namespace = f"bench-latency-{run}"
            self.ensure_namespace(namespace)
            objects, model = self.manifests(namespace, "lat")
            self.kubectl("apply", "-f", "-", input=json.dumps(objects[0]))
            start = time.monotonic()
            self.kubectl("apply", "-f", "-", input=json.dumps(objects[1]))
            wait(partial(self.children_exist, model), 120, "children exist", interval=0.05)
            to_children.append(time.monotonic() - start)
            try:
                wait(partial(self.ready, namespace, "lat"), 300, "Ready", interval=0.05)
            except TimeoutError:
                status = self.get(HDA_RESOURCE, "lat", "-n", namespace).get("status")
                report(yaml.safe_dump(status))
                raise
            to_ready.append(time.monotonic() - start)
        return to_children, to_ready

    def scale(self, count: int, per_namespace: int) -> tuple[float, list[str]]:
        namespaces = sorted({f"bench-scale-{i // per_namespace}" for i in range(count)})
        for namespace in namespaces:
            self.ensure_namespace(namespace)
        documents: list[dict[str, Any]] = []
        for i in range(count):
            objects, _ = self.manifests(f"bench-scale-{i // per_namespace}", f"hda{i:03d}")
            documents.extend(objects)
        volumes = [d for d in documents if d["kind"] == "PersistentVolume"]
        hdas = [d for d in documents if d["kind"] != "PersistentVolume"]
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(volumes))
        start = time.monotonic()
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(hdas))
        wait(lambda: self.all_ready(namespaces, count), 1800, f"{count} HDAs Ready", interval=1)
        return time.monotonic() - start, namespaces

    def requests_in(self, seconds: float) -> list[Request]:
        assert self.proxy is not None
        start = time.time()
        time.sleep(seconds)
        return [r for r in self.proxy.since(start) if r.at <= start + seconds]

    def quiet(self, window: float, timeout: float) -> None:
        """Wait until no write went through the proxy for `window` seconds."""
        assert self.proxy is not None
        proxy = self.proxy

        def calm() -> bool:
            recent = [r for r in proxy.since(time.time() - window) if r.write]
            return not recent

        wait(calm, timeout, "quiet", interval=1)


def _condition(obj: dict[str, Any], kind: str) -> str | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return str(item.get("status"))
    return None


def _established(crd: dict[str, Any]) -> bool:
    return _condition(crd, "Established") == "True"


def wait(probe: Callable[[], Any], timeout: float, what: str, *, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for: {what}")
        time.sleep(interval)


def summarize(requests: list[Request], hdas: int, seconds: float) -> dict[str, float]:
    minutes = seconds / 60
    writes = [r for r in requests if r.write]
    watches = [r for r in requests if r.watch]
    reads = [r for r in requests if not r.write and not r.watch]
    return {
        "requests": len(requests),
        "writes": len(writes),
        "reads": len(reads),
        "watch_starts": len(watches),
        "per_hda_per_minute": len(requests) / hdas / minutes,
        "writes_per_hda_per_minute": len(writes) / hdas / minutes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hda.testing.bench", description=__doc__)
    parser.add_argument("--hdas", type=int, default=100, help="HDAs in the scale phase")
    parser.add_argument("--per-namespace", type=int, default=10)
    parser.add_argument("--latency-runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=60.0, help="steady-state window, seconds")
    parser.add_argument("--resync", type=float, default=15.0, help="operator --resync")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args(argv)

    # 7 pods per HDA and 110 pods per kwok node: FC nodes alone could hold every pod, since the
    # scheduler also puts Valkey, ingest and workers there; two plain nodes besides.
    fc_nodes = max(2, -(-(args.hdas + args.latency_runs) * 7 // 100) + 1)
    nodes = fc_nodes + 2
    name = f"opbench-{uuid.uuid4().hex[:4]}"
    plane = LocalCluster(name)
    report(f"# operator benchmark: local plane {name}, {nodes} kwok nodes ({fc_nodes} FC)")
    plane.up(nodes=nodes, fc_nodes=fc_nodes)
    work = Path(tempfile.mkdtemp(prefix="hda-opbench-"))
    bench = Bench(str(plane.bin_dir() / "kubectl"), plane.kubeconfig, work, args.resync)
    try:
        bench.setup(str(plane.bin_dir() / "helm"))
        assert bench.operator is not None
        assert bench.proxy is not None

        children, ready = bench.latency(args.latency_runs)
        report(
            f"apply -> all children exist: median {statistics.median(children):.2f} s "
            f"(runs: {', '.join(f'{v:.2f}' for v in children)})"
        )
        report(
            f"apply -> Ready:              median {statistics.median(ready):.2f} s "
            f"(runs: {', '.join(f'{v:.2f}' for v in ready)})"
        )

        seconds, _ = bench.scale(args.hdas, args.per_namespace)
        total = args.hdas + args.latency_runs
        report(f"{args.hdas} HDAs applied at once -> all Ready: {seconds:.1f} s")

        report(
            f"operator CPU while creating them: {cpu_seconds(bench.operator.pid):.1f} s "
            "(user+system, since its start)"
        )
        bench.quiet(window=2 * args.resync + 5, timeout=600)
        cpu_before = cpu_seconds(bench.operator.pid)
        requests = bench.requests_in(args.window)
        cpu_steady = cpu_seconds(bench.operator.pid) - cpu_before
        figures = summarize(requests, total, args.window)
        report(
            f"steady state, {total} HDAs, {args.window:.0f} s window: "
            f"{figures['requests']} requests = {figures['per_hda_per_minute']:.3f} per HDA per "
            f"minute; writes {figures['writes']} ({figures['writes_per_hda_per_minute']:.3f} "
            f"per HDA per minute), reads {figures['reads']}, watch (re)starts "
            f"{figures['watch_starts']}"
        )
        report(
            f"operator CPU at steady state: {cpu_steady:.2f} s in {args.window:.0f} s "
            f"({100 * cpu_steady / args.window:.1f} % of one core; a full resync of every HDA "
            f"every {args.resync:.0f} s)"
        )
        rss = rss_kib(bench.operator.pid)
        report(f"operator RSS with {total} HDAs: {rss / 1024:.1f} MiB")

        stats = bench.stop_operator()
        if stats:
            mean = stats["reconcile_seconds"] / max(stats["reconciles"], 1)
            report(
                f"operator reconcile time (whole run): {stats['reconciles']} reconciles, "
                f"{stats['reconcile_seconds']:.2f} s in total, mean {mean * 1000:.1f} ms per "
                f"reconcile, one pass over {total} HDAs ~ {mean * total:.2f} s; applies "
                f"{stats['applies']}, status writes {stats['status_writes']}; background Valkey "
                f"lag probes {stats.get('lag_probe_seconds', 0.0):.1f} s (unreachable: kwok pods)"
            )
        restarted = time.time()
        bench.start_operator()
        start_healthy = time.time() - restarted
        time.sleep(2 * args.resync + 5)
        after = [r for r in bench.proxy.since(restarted) if r.write]
        report(
            f"restart with {total} HDAs: healthy after {start_healthy:.1f} s; writes in the "
            f"next {2 * args.resync + 5:.0f} s: {len(after)}"
        )
        for request in after[:10]:
            report(f"  write: {request.method} {request.path}")
        rss = rss_kib(bench.operator.pid)
        report(f"operator RSS after restart: {rss / 1024:.1f} MiB")
        stats = bench.stop_operator()
        if stats:
            report(
                f"restart: {stats['reconciles']} reconciles in "
                f"{stats['reconcile_seconds']:.2f} s of reconcile time, applies "
                f"{stats['applies']}, status writes {stats['status_writes']}"
            )
    finally:
        bench.close()
        if not args.keep:
            plane.down()
        report(f"operator log: {work / 'operator.log'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
