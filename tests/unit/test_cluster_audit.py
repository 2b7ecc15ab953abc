"""The audit policy builder, the audit log reader and the RBAC flattening the least-privilege
check compares with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hda.cluster import flags
from hda.cluster.audit import (
    Permission,
    audit_policy,
    events_of,
    granted_permissions,
    parse_audit_log,
    read_audit_log,
    refusals,
    service_account_user,
    used_permissions,
)
from hda.cluster.errors import ClusterError
from hda.cluster.layout import APISERVER, ClusterLayout, Ports
from hda.cluster.plane import ClusterState, LocalCluster

OPERATOR = service_account_user("hda-system", "hda-operator")
PORTS = Ports.from_list(list(range(20001, 20001 + Ports.count())))


def event(
    verb: str,
    resource: str,
    *,
    group: str = "",
    subresource: str = "",
    code: int = 200,
    user: str = OPERATOR,
    audit_id: str = "",
    stage: str = "ResponseComplete",
    decision: str = "allow",
    message: str = "",
) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "apiGroup": group, "apiVersion": "v1"}
    if subresource:
        ref["subresource"] = subresource
    status: dict[str, Any] = {"metadata": {}, "code": code}
    if message:
        status.update(status="Failure", reason="Forbidden", message=message)
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id or f"{verb}-{resource}-{subresource}-{code}-{stage}",
        "stage": stage,
        "requestURI": f"/api/v1/{resource}",
        "verb": verb,
        "user": {"username": user, "groups": ["system:serviceaccounts"]},
        "objectRef": ref,
        "responseStatus": status,
        "annotations": {"authorization.k8s.io/decision": decision},
    }


def log_text(*events: dict[str, Any]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


# --- policy and flags ------------------------------------------------------------------------


def test_policy_logs_the_given_users_at_metadata_and_nothing_else() -> None:
    policy = audit_policy([OPERATOR])
    assert policy["apiVersion"] == "audit.k8s.io/v1"
    assert policy["kind"] == "Policy"
    assert policy["rules"] == [
        {"level": "Metadata", "users": [OPERATOR]},
        {"level": "None"},
    ]
    assert policy["omitStages"] == ["RequestReceived"]


@pytest.mark.parametrize("users", [[], [""], [" system:serviceaccount:a:b"]])
def test_policy_refuses_no_or_blank_users(users: list[str]) -> None:
    with pytest.raises(ValueError, match="audit"):
        audit_policy(users)


def test_service_account_user_is_the_apiserver_s_name() -> None:
    assert service_account_user("ns", "sa") == "system:serviceaccount:ns:sa"


def test_apiserver_audits_to_the_cluster_logs_only_when_asked(tmp_path: Path) -> None:
    layout = ClusterLayout.for_name("unit", state_root=tmp_path)
    plain = flags.component_args(APISERVER, Path("/bin"), layout, PORTS)
    assert not [arg for arg in plain if arg.startswith("--audit")]
    audited = flags.component_args(APISERVER, Path("/bin"), layout, PORTS, audit=True)
    assert f"--audit-policy-file={layout.audit_policy}" in audited
    assert f"--audit-log-path={layout.audit_log}" in audited
    assert "--audit-log-format=json" in audited
    assert layout.audit_log.parent == layout.logs_dir


def test_state_keeps_the_audited_users() -> None:
    state = ClusterState(name="unit", bin_dir="/bin", ports=PORTS, audit_users=[OPERATOR])
    assert ClusterState.from_json(state.to_json()).audit_users == [OPERATOR]


def test_cluster_refuses_a_bad_audit_user_before_starting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="audit user"):
        LocalCluster("unit", state_root=tmp_path, audit_users=("",))
    assert not (tmp_path / "clusters" / "unit").exists()


# --- reading the log -------------------------------------------------------------------------


def test_permission_carries_group_and_subresource() -> None:
    events = parse_audit_log(
        log_text(
            event("patch", "hyperdriveaccelerators", group="hda.shitops.dev", subresource="status"),
            event("watch", "pods"),
        )
    )
    assert used_permissions(events) == {
        Permission("patch", "hda.shitops.dev", "hyperdriveaccelerators/status"),
        Permission("watch", "", "pods"),
    }


def test_apply_that_created_its_object_needed_create_too() -> None:
    events = parse_audit_log(
        log_text(event("patch", "services", code=201), event("patch", "configmaps", code=200))
    )
    assert used_permissions(events) == {
        Permission("patch", "", "services"),
        Permission("create", "", "services"),
        Permission("patch", "", "configmaps"),
    }


def test_non_resource_requests_need_no_permission() -> None:
    discovery = event("get", "x")
    del discovery["objectRef"]
    assert used_permissions(parse_audit_log(log_text(discovery))) == set()


def test_events_of_keeps_one_user() -> None:
    events = parse_audit_log(
        log_text(event("get", "secrets"), event("list", "secrets", user="system:admin"))
    )
    assert used_permissions(events_of(events, OPERATOR)) == {Permission("get", "", "secrets")}


def test_refusals_count_a_watch_once_and_skip_successes() -> None:
    started = event("watch", "nodes", code=403, audit_id="a", stage="ResponseStarted")
    done = event("watch", "nodes", code=403, audit_id="a")
    events = parse_audit_log(log_text(started, done, event("get", "secrets")))
    refused = refusals(events)
    assert [e.audit_id for e in refused] == ["a"]
    assert "403" in refused[0].describe()


def test_bad_line_is_named_by_number() -> None:
    text = log_text(event("get", "secrets")) + '{"kind": "Event"}\n'
    with pytest.raises(ClusterError, match="line 2 is not an audit event"):
        parse_audit_log(text)


def test_last_line_being_written_is_left_out() -> None:
    text = log_text(event("get", "secrets")) + '{"kind": "Ev'
    assert len(parse_audit_log(text)) == 1


def test_missing_log_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=str(tmp_path / "audit.log")):
        read_audit_log(tmp_path / "audit.log")


# --- what RBAC grants ------------------------------------------------------------------------


def role(*rules: dict[str, Any], kind: str = "ClusterRole") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": "r"}, "rules": list(rules)}


def test_grants_are_every_verb_resource_and_group_combination() -> None:
    documents = [
        role({"apiGroups": ["", "apps"], "resources": ["a", "b/status"], "verbs": ["get"]}),
        {"kind": "ServiceAccount", "metadata": {"name": "x"}},
        None,
    ]
    assert granted_permissions(documents) == {
        Permission("get", "", "a"),
        Permission("get", "", "b/status"),
        Permission("get", "apps", "a"),
        Permission("get", "apps", "b/status"),
    }


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}, "wildcards"),
        ({"apiGroups": [""], "resources": ["a"], "verbs": ["get"], "resourceNames": ["n"]}, "resourceNames"),
        ({"nonResourceURLs": ["/healthz"], "verbs": ["get"]}, "nonResourceURLs"),
    ],
)  # fmt: skip
def test_rules_that_cannot_be_compared_are_refused_naming_the_rule(
    rule: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError, match=f"ClusterRole/r rule 0: {words}"):
        granted_permissions([role(rule)])
