"""Least privilege, proven by the apiserver: after every other test of the tier, the audit log of
the operator's ServiceAccount says which permissions it used; the chart must grant exactly those
(plus the commented allow-list below), and the apiserver must never have refused it.

Runs last (`after_the_tier`, ordered by tests/cluster/conftest.py) so that the whole tier's
traffic is in the log; the operator still runs, so its open watches are in it too.
"""

from __future__ import annotations

import pytest
import yaml

from hda.cluster.audit import (
    AuditEvent,
    Permission,
    events_of,
    granted_permissions,
    read_audit_log,
    refusals,
    used_permissions,
)
from hda.cluster.testing import ClusterHandle, OperatorIdentity
from hda.testing.harness import render_chart_rbac
from hda.testing.pytest_fixtures import CHART, RunningOperator

pytest_plugins = ["hda.testing.pytest_fixtures"]
pytestmark = [pytest.mark.cluster, pytest.mark.after_the_tier]

#: Granted although no test of the tier makes the operator use them. Each needs its reason; a
#: verb that a test could exercise belongs in a test, not here.
NEEDED_BUT_NOT_EXERCISED: dict[Permission, str] = {
    Permission("delete", "", "pods"): (
        "replicated and cluster Valkey StatefulSets roll OnDelete: the operator deletes a replica, "
        "fails the primary over, then deletes the old primary. That needs its Valkey probe, which "
        "kwok pods cannot answer; the rollouts run on the runtime tier "
        "(tests/runtime/test_buffer_topology.py) and the e2e tier"
    ),
}


@pytest.fixture(scope="module")
def operator_events(
    cluster: ClusterHandle,
    running_operator: RunningOperator,
    operator_identity: OperatorIdentity,
) -> list[AuditEvent]:
    if cluster.audit_log is None:
        pytest.skip("the audit log needs the local plane (not HDA_TEST_CLUSTER=existing)")
    running_operator.process.assert_running()
    events = events_of(read_audit_log(cluster.audit_log), operator_identity.user)
    assert events, f"no request of {operator_identity.user} in {cluster.audit_log}"
    return events


@pytest.fixture(scope="module")
def chart_grants(cluster: ClusterHandle, operator_identity: OperatorIdentity) -> set[Permission]:
    rendered = render_chart_rbac(
        helm=cluster.binary("helm"),
        chart=CHART,
        namespace=operator_identity.namespace,
        release=operator_identity.release,
    )
    return granted_permissions(yaml.safe_load_all(rendered))


def _lines(permissions: set[Permission]) -> str:
    return "\n".join(sorted(str(p) for p in permissions))


def test_chart_grants_no_verb_the_operator_never_used(
    operator_events: list[AuditEvent], chart_grants: set[Permission], cluster: ClusterHandle
) -> None:
    used = used_permissions(operator_events)
    unused = chart_grants - used - NEEDED_BUT_NOT_EXERCISED.keys()
    assert not unused, (
        f"the chart grants what the operator never used in this tier (audit log "
        f"{cluster.audit_log}; run the whole tier):\n{_lines(unused)}"
    )


def test_allow_list_names_only_granted_verbs_no_test_exercises(
    operator_events: list[AuditEvent], chart_grants: set[Permission]
) -> None:
    allowed = set(NEEDED_BUT_NOT_EXERCISED)
    assert allowed <= chart_grants, f"not granted:\n{_lines(allowed - chart_grants)}"
    exercised = allowed & used_permissions(operator_events)
    assert not exercised, f"exercised now, drop from the allow-list:\n{_lines(exercised)}"


def test_operator_was_never_refused(operator_events: list[AuditEvent]) -> None:
    # Admission refuses writes into a namespace being deleted (after authorization allowed
    # them); no grant could avoid that. Every other 401/403 is a missing or wrong permission.
    refused = [
        event
        for event in refusals(operator_events)
        if not (
            event.annotations.get("authorization.k8s.io/decision") == "allow"
            and event.response_status is not None
            and "because it is being terminated" in event.response_status.message
        )
    ]
    assert not refused, "\n".join(event.describe() for event in refused[:30])


def test_secrets_are_never_listed_or_watched(operator_events: list[AuditEvent]) -> None:
    secret_reads = {
        event.permission
        for event in operator_events
        if event.permission is not None and event.permission.resource == "secrets"
    }
    assert Permission("get", "", "secrets") in secret_reads, "the check saw no Secret read at all"
    listed = {p for p in secret_reads if p.verb in ("list", "watch")}
    assert not listed, _lines(listed)
