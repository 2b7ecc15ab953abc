"""Services: Valkey (headless for its StatefulSets, and a client Service), Sentinel (the same
pair), output (headless for its StatefulSet, and a client Service for subscribers), ingest."""

from __future__ import annotations

from typing import Any

from hda.api.consts import OUTPUT_PORT, REDIS_PORT, SENTINEL_PORT
from hda.api.v1alpha1 import HyperDriveAccelerator

from .images import Images
from .labels import Component, object_metadata, selector_labels
from .names import child_names


def _service(
    hda: HyperDriveAccelerator,
    images: Images,
    name: str,
    component: Component,
    ports: list[dict[str, Any]],
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(hda, images, name, component),
        "spec": {"selector": selector_labels(hda, component), "ports": ports, **spec},
    }


def _valkey_ports() -> list[dict[str, Any]]:
    return [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}]


def valkey_headless_service(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    """Stable DNS for the Valkey pod (`<pod>.<service>`), named in the StatefulSet."""
    return _service(
        hda,
        images,
        child_names(hda).valkey_headless_service,
        Component.VALKEY,
        _valkey_ports(),
        clusterIP="None",
        publishNotReadyAddresses=True,
    )


def buffer_service(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    """What runtime pods connect to (HDA_REDIS_URL); only a ready Valkey gets traffic."""
    return _service(
        hda,
        images,
        child_names(hda).buffer_service,
        Component.VALKEY,
        _valkey_ports(),
        type="ClusterIP",
    )


def _sentinel_ports() -> list[dict[str, Any]]:
    return [
        {"name": "sentinel", "port": SENTINEL_PORT, "targetPort": "sentinel", "protocol": "TCP"}
    ]


def sentinel_headless_service(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    """Stable DNS for each sentinel (`<pod>.<service>`): what runtime pods and Valkey pods list."""
    return _service(
        hda,
        images,
        child_names(hda).sentinel_headless_service,
        Component.SENTINEL,
        _sentinel_ports(),
        clusterIP="None",
        # A starting sentinel asks the others before they are ready.
        publishNotReadyAddresses=True,
    )


def sentinel_service(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    """Any ready sentinel, for tools (`valkey-cli -p 26379 SENTINEL ...`) and the operator."""
    return _service(
        hda,
        images,
        child_names(hda).sentinel_service,
        Component.SENTINEL,
        _sentinel_ports(),
        type="ClusterIP",
    )


def ingest_service(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    exposure = hda.spec.ingest.service
    ports = [{"name": "http", "port": exposure.port, "targetPort": "http", "protocol": "TCP"}]
    return _service(
        hda, images, child_names(hda).ingest_service, Component.INGEST, ports, type=exposure.type
    )


def _output_ports() -> list[dict[str, Any]]:
    return [{"name": "http", "port": OUTPUT_PORT, "targetPort": "http", "protocol": "TCP"}]


def output_headless_service(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    """Per-pod DNS (`<pod>.<service>`) by which output pods reach each other; not-ready pods
    too, since a subscribe gateway must read every replica's files."""
    return _service(
        hda,
        images,
        child_names(hda).output_headless_service,
        Component.OUTPUT,
        _output_ports(),
        clusterIP="None",
        publishNotReadyAddresses=True,
    )


def output_service(hda: HyperDriveAccelerator, images: Images) -> dict[str, Any]:
    """The subscribe URL (status.endpoints.subscribe): any ready output pod serves the whole
    stream, merging what every replica wrote."""
    return _service(
        hda,
        images,
        child_names(hda).output_service,
        Component.OUTPUT,
        _output_ports(),
        type="ClusterIP",
    )
