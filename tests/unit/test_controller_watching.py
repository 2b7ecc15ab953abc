"""What the operator asks the apiserver to send it: child watches filtered server-side, except
PersistentVolumes, whose availability for FC claims includes volumes an administrator made."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from hda.controller.handlers import configure


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
