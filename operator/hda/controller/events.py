"""Kubernetes Events on the HDA: one per condition transition, one per error, one per write."""

from __future__ import annotations

from collections.abc import Iterable

import kopf

from .status import Transition


def _post(body: kopf.Body, type_: str, reason: str, message: str) -> None:
    kopf.event(body, type=type_, reason=reason, message=message[:1024])


def transitions(body: kopf.Body, items: Iterable[Transition]) -> None:
    for item in items:
        _post(
            body,
            "Warning" if item.warning else "Normal",
            item.reason,
            f"{item.type} is {item.new}: {item.message}",
        )


def error(body: kopf.Body, reason: str, message: str) -> None:
    _post(body, "Warning", reason, message)


def applied(body: kopf.Body, what: list[str]) -> None:
    _post(body, "Normal", "Applied", "applied " + ", ".join(what))


def normal(body: kopf.Body, reason: str, message: str) -> None:
    _post(body, "Normal", reason, message)
