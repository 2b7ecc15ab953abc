"""Parsing the apiserver's error Status into ApiError."""

from __future__ import annotations

import json

from hda.controller.kube import _error

# What kube-apiserver's NamespaceLifecycle admission answers for content in a deleted namespace.
TERMINATING = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": 'configmaps "other" is forbidden: unable to create new content in namespace t1 '
    "because it is being terminated",
    "reason": "Forbidden",
    "details": {
        "name": "other",
        "kind": "configmaps",
        "causes": [
            {
                "reason": "NamespaceTerminating",
                "message": "namespace t1 is being terminated",
                "field": "metadata.namespace",
            }
        ],
    },
    "code": 403,
}


def test_namespace_terminating_is_recognised() -> None:
    error = _error(403, json.dumps(TERMINATING).encode())
    assert error.status == 403
    assert error.reason == "Forbidden"
    assert error.causes == ("NamespaceTerminating",)
    assert error.namespace_terminating


def test_rbac_forbidden_is_not_namespace_terminating() -> None:
    denied = {
        "kind": "Status",
        "status": "Failure",
        "message": 'secrets is forbidden: User "system:serviceaccount:x:y" cannot create resource',
        "reason": "Forbidden",
        "details": {"kind": "secrets"},
        "code": 403,
    }
    error = _error(403, json.dumps(denied).encode())
    assert not error.namespace_terminating
    assert "cannot create resource" in error.message


def test_non_json_body_keeps_the_text() -> None:
    error = _error(502, b"upstream connect error")
    assert error.status == 502
    assert error.message == "upstream connect error"
    assert error.causes == ()
