"""What the operator asks the apiserver to send it: child watches filtered server-side, except
PersistentVolumes, whose availability for FC claims includes volumes an administrator made."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf
import kubernetes

from hda.controller.handlers import configure, wake_on_volumes
from hda.controller.kube import Kube
from hda.controller.reconcile import Controller


def configured_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    memo = kopf.Memo()
    memo["controller"] = object()  # configure() keeps an existing controller
    startup: Any = configure  # kopf types the decorated handler as its own callback protocol
    asyncio.run(startup(settings=settings, memo=memo))
    return settings


def test_namespaced_children_are_watched_by_label() -> None:
    selectors = configured_settings().watching.label_selectors
    assert ("apps/v1", "deployments") in selectors
    assert ("v1", "persistentvolumeclaims") in selectors


def test_persistent_volumes_are_watched_unfiltered() -> None:
    selectors = configured_settings().watching.label_selectors
    assert ("v1", "persistentvolumes") not in selectors


def _volume(name: str, storage_class: str, phase: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"storageClassName": storage_class, "capacity": {"storage": "10Gi"}},
        "status": {"phase": phase},
    }


def _woken_by_volume_events(events: list[tuple[str, dict[str, Any]]]) -> set[str]:
    """Which of two HDAs (FC class `fc` and `other`) the volume events wake."""
    controller = Controller(Kube(kubernetes.client.ApiClient()))
    states = {cls: controller._state(("ns", cls)) for cls in ("fc", "other")}
    for cls, state in states.items():
        state.fc_storage_class = cls
    memo = kopf.Memo()
    memo["controller"] = controller
    handler: Any = wake_on_volumes
    for type_, body in events:
        for state in states.values():
            state.wake.clear()
        handler(body=kopf.Body(cast("kopf.RawBody", body)), type=type_, memo=memo)
    return {cls for cls, state in states.items() if state.wake.is_set()}


def test_a_volume_of_another_class_wakes_no_hda() -> None:
    assert _woken_by_volume_events([("ADDED", _volume("v", "unrelated", "Available"))]) == set()


def test_a_volume_of_an_hdas_class_wakes_that_hda_only() -> None:
    added = _volume("v", "fc", "Pending")
    available = _volume("v", "fc", "Available")
    assert _woken_by_volume_events([("ADDED", added), ("MODIFIED", available)]) == {"fc"}


def test_an_unchanged_volume_wakes_no_hda() -> None:
    volume = _volume("v", "fc", "Available")
    assert _woken_by_volume_events([("ADDED", volume), ("MODIFIED", volume)]) == set()


def test_a_deleted_volume_wakes_the_hda_of_its_class() -> None:
    volume = _volume("v", "other", "Available")
    assert _woken_by_volume_events([("ADDED", volume), ("DELETED", volume)]) == {"other"}
