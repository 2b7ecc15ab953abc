"""Thin kopf handlers: settings, watch-fed indexes, wake-ups, the per-HDA daemon, the finalizer.

kopf waits until every index below has listed its objects before it starts any daemon, so the
first reconcile after a restart already sees every child and writes nothing if all is right.
Only `@kopf.index`, `@kopf.on.event`, one daemon and one deletion handler are registered: no
create/update handlers, so kopf keeps no progress on the HDA and writes to it only its
finalizer and (once per spec change) the diff-base annotation, both under `hda.shitops.dev`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import kopf
from aiohttp import web

from hda.api.consts import GROUP, LABEL_ACCELERATOR, LABEL_NAME, PLURAL, VERSION
from hda.specs.labels import APP_NAME

from .buffer_watch import BufferWatch
from .kube import KINDS, Kind, Kube
from .metrics import serve_metrics
from .observe import (
    LagProbe,
    NodeSummary,
    PodSummary,
    VolumeSummary,
    node_summary,
    pod_summary,
    volume_summary,
)
from .reconcile import Controller
from .state import Key, child_key, key_of

log = logging.getLogger("hda.controller")

HDA: Final = (f"{GROUP}/{VERSION}", PLURAL)
_ALL: Final = "all"
# The API server filters the watches: only objects an HDA made reach the operator's Python code.
CHILD_SELECTOR: Final = LABEL_ACCELERATOR
POD_SELECTOR: Final = f"{LABEL_NAME}={APP_NAME},{LABEL_ACCELERATOR}"
DEFAULT_CLASS_ANNOTATION: Final = "storageclass.kubernetes.io/is-default-class"


# Secrets are read by name only (secret_inputs.py): the operator never lists or watches them.
WATCHED_KINDS: Final = tuple(kind for kind in KINDS if kind.kind != "Secret")


def _index_id(kind: Kind) -> str:
    return f"hda_children_{kind.plural}"


class KopfCache:
    """The `Cache` the reconciler reads, backed by kopf's indexes."""

    def __init__(self, indexes: Mapping[str, Any]) -> None:
        self._indexes = indexes

    def children(self, kind: Kind, namespace: str, accelerator: str) -> list[dict[str, Any]]:
        index = self._indexes[_index_id(kind)]
        store = index.get((namespace, accelerator))
        return list(store) if store is not None else []

    def nodes(self) -> list[NodeSummary]:
        store = self._indexes["hda_nodes"].get(_ALL)
        return list(store) if store is not None else []

    def volumes(self, storage_class: str) -> list[VolumeSummary]:
        store = self._indexes["hda_volumes"].get(storage_class)
        return list(store) if store is not None else []

    def storage_class_exists(self, name: str) -> bool:
        return name in self._indexes["hda_storage_classes"]

    def default_storage_class_exists(self) -> bool:
        index = self._indexes["hda_storage_classes"]
        return any(any(store) for store in index.values())

    def namespace_terminating(self, namespace: str) -> bool:
        return namespace in self._indexes["hda_terminating_namespaces"]

    def pods(self, namespace: str, accelerator: str) -> list[PodSummary]:
        store = self._indexes["hda_pods"].get((namespace, accelerator))
        return list(store) if store is not None else []


def _controller(memo: Any) -> Controller:
    controller: Controller = memo["controller"]
    return controller


# --- settings and lifecycle -----------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.peering.standalone = True
    settings.posting.level = logging.INFO
    settings.posting.loggers = False  # only explicit events, never log lines
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = [1, 2, 5, 10]
    settings.queueing.worker_limit = 1000
    for kind in WATCHED_KINDS:
        # PersistentVolumes stay unfiltered: the FC availability check must see the volumes an
        # administrator made (no labels of ours), not only those from a LUN inventory.
        if kind.plural != "persistentvolumes":
            settings.watching.label_selectors[kind.api_version, kind.plural] = CHILD_SELECTOR
    settings.watching.label_selectors["v1", "pods"] = POD_SELECTOR
    if "controller" not in memo:
        resync = float(memo.get("resync_seconds", 15.0))
        memo["controller"] = Controller(
            Kube.from_environment(),
            resync_seconds=resync,
            default_images=memo.get("default_images"),
            lag_probe=LagProbe(interval=resync, address=memo.get("lag_probe_address")),
            buffer_watch=BufferWatch(interval=resync, enabled=memo.get("buffer_probe", True)),
        )
    metrics_port = memo.get("metrics_port")
    if metrics_port is not None and "metrics_runner" not in memo:
        memo["metrics_runner"] = await serve_metrics(
            memo["controller"].render_metrics, memo["metrics_host"], metrics_port
        )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller = memo.get("controller")
    if isinstance(controller, Controller):
        stats = controller.stats
        log.info(
            "operator stopping",
            extra={
                "reconciles": stats.reconciles,
                "reconcile_seconds": round(stats.reconcile_seconds, 3),
                "lag_probe_seconds": round(controller.lag_probe.busy_seconds, 3),
                "applies": stats.applies,
                "status_writes": stats.status_writes,
            },
        )
        controller.kube.close()
    runner = memo.get("metrics_runner")
    if isinstance(runner, web.AppRunner):
        await runner.cleanup()


# --- indexes and wake-ups of owned children --------------------------------------------------


def _snapshot(body: kopf.Body) -> dict[str, Any]:
    raw = copy.deepcopy(dict(body))
    raw.get("metadata", {}).pop("managedFields", None)
    return raw


def _register_child(kind: Kind) -> None:
    def index(body: kopf.Body, **_: Any) -> dict[Key, dict[str, Any]] | None:
        key = child_key(body)
        return {key: _snapshot(body)} if key is not None else None

    def wake(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        _controller(memo).wake(child_key(body))

    labels = {LABEL_ACCELERATOR: kopf.PRESENT}
    kopf.index(kind.api_version, kind.plural, id=_index_id(kind), labels=labels)(index)
    kopf.on.event(kind.api_version, kind.plural, id=f"hda_wake_{kind.plural}", labels=labels)(wake)


for _kind in WATCHED_KINDS:
    _register_child(_kind)


@kopf.index("v1", "namespaces", id="hda_terminating_namespaces")
def index_terminating_namespaces(name: str, meta: kopf.Meta, **_: Any) -> dict[str, bool] | None:
    # An HDA in a namespace being deleted is neither restored nor reported on: everything in it
    # goes, and the API refuses new objects (Events too) there.
    return {name: True} if meta.get("deletionTimestamp") else None


@kopf.index("v1", "pods", id="hda_pods", labels={LABEL_ACCELERATOR: kopf.PRESENT})
def index_pods(body: kopf.Body, **_: Any) -> dict[Key, PodSummary] | None:
    key = child_key(body)
    return {key: pod_summary(body)} if key is not None else None


@kopf.on.event("v1", "pods", id="hda_wake_pods", labels={LABEL_ACCELERATOR: kopf.PRESENT})
def wake_on_pods(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    # Readiness reaches status through the workloads; pods wake an HDA only for their problems.
    summaries: dict[tuple[str, str], object] = memo.setdefault("pod_problems", {})
    meta = body["metadata"]
    name = (str(meta.get("namespace")), str(meta["name"]))
    if type == "DELETED":
        changed = bool(summaries.pop(name, ()))
    else:
        problems = pod_summary(body).problems
        changed = summaries.get(name, ()) != problems
        summaries[name] = problems
    if changed and type is not None:
        _controller(memo).wake(child_key(body))


def _wake_all_if_changed(
    memo: kopf.Memo,
    memo_key: str,
    body: kopf.Body,
    event_type: str | None,
    summarize: Callable[[kopf.Body], object],
) -> None:
    """Wake every HDA when the summary of a cluster-scoped object changed (or it went away)."""
    summaries: dict[str, object] = memo.setdefault(memo_key, {})
    name = str(body["metadata"]["name"])
    if event_type == "DELETED":
        changed = summaries.pop(name, None) is not None
    else:
        summary = summarize(body)
        changed = summaries.get(name) != summary
        summaries[name] = summary
    if changed and event_type is not None:
        _controller(memo).wake_all()


@kopf.index("v1", "nodes", id="hda_nodes")
def index_nodes(body: kopf.Body, **_: Any) -> dict[str, NodeSummary]:
    return {_ALL: node_summary(body)}


@kopf.on.event("v1", "nodes", id="hda_wake_nodes")
def wake_on_nodes(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    # Heartbeats change a node every few seconds; only what placement depends on wakes HDAs.
    _wake_all_if_changed(memo, "node_summaries", body, type, node_summary)


@kopf.index("v1", "persistentvolumes", id="hda_volumes")
def index_volumes(body: kopf.Body, **_: Any) -> dict[str, VolumeSummary] | None:
    summary = volume_summary(body)
    return {summary.storage_class: summary} if summary.storage_class else None


@kopf.on.event("v1", "persistentvolumes", id="hda_wake_volumes")
def wake_on_volumes(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    # Every PV reaches this handler (no server-side filter can select a StorageClass), so a
    # change wakes only the HDAs whose Fibre Channel volumes are of the volume's class.
    summaries: dict[str, VolumeSummary] = memo.setdefault("volume_summaries", {})
    name = str(body["metadata"]["name"])
    before = summaries.pop(name, None)
    after = None if type == "DELETED" else volume_summary(body)
    if after is not None:
        summaries[name] = after
    if before != after and type is not None:
        classes = {s.storage_class for s in (before, after) if s is not None}
        _controller(memo).wake_storage_classes(classes)


@kopf.index("storage.k8s.io/v1", "storageclasses", id="hda_storage_classes")
def index_storage_classes(name: str, annotations: kopf.Annotations, **_: Any) -> dict[str, bool]:
    """StorageClass name -> whether it is the cluster's default."""
    return {name: annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"}


@kopf.on.event("storage.k8s.io/v1", "storageclasses", id="hda_wake_storage_classes")
def wake_on_storage_classes(type: str | None, memo: kopf.Memo, **_: Any) -> None:
    if type is not None:
        _controller(memo).wake_all()


# --- the HDA itself --------------------------------------------------------------------------


@kopf.on.event(*HDA, id="hda_wake_self")
def wake_on_change(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    if type is not None:
        meta = body["metadata"]
        _controller(memo).wake(key_of(meta["namespace"], meta["name"]))


@kopf.daemon(*HDA, id="reconcile", cancellation_timeout=10.0, backoff=5.0)
async def reconcile_daemon(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **kwargs: Any
) -> None:
    controller = _controller(memo)
    if controller.cache is None:
        controller.cache = KopfCache(kwargs)
    await controller.run(body, stopped)


@kopf.on.delete(*HDA, id="release")
async def release(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    controller = _controller(memo)
    if controller.cache is None:
        controller.cache = KopfCache(kwargs)
    await controller.release(body)
