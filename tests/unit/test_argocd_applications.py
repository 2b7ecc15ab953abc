"""The example Argo CD Applications in deploy/argocd/applications/ and the argocd-cm patch.

They are documentation users copy, so they must say what docs/gitops.md says: the operator
chart syncs first (wave -1) with ServerSideApply; the HDA manifests skip the dry-run while the
CRD is missing and ignore what the operator's field manager owns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hda.api.consts import FIELD_MANAGER

ROOT = Path(__file__).resolve().parents[2]
APPLICATIONS = ROOT / "deploy" / "argocd" / "applications"


def application(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((APPLICATIONS / f"{name}.yaml").read_text())
    assert doc["apiVersion"] == "argoproj.io/v1alpha1"
    assert doc["kind"] == "Application"
    return doc


def wave(app: dict[str, Any]) -> int:
    return int(app["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def sync_options(app: dict[str, Any]) -> set[str]:
    return set(app["spec"].get("syncPolicy", {}).get("syncOptions", []))


def test_operator_application_syncs_the_chart_first() -> None:
    operator = application("hda-operator")
    source = operator["spec"]["source"]
    assert (ROOT / source["path"] / "Chart.yaml").is_file()
    assert source["helm"]["valuesObject"]["crds"] == {"install": True, "keep": True}
    assert wave(operator) < wave(application("hda-accelerators"))
    assert wave(operator) == -1
    assert {"ServerSideApply=true", "CreateNamespace=true"} <= sync_options(operator)


def test_accelerators_application_tolerates_a_missing_crd_and_the_operator() -> None:
    accelerators = application("hda-accelerators")
    assert wave(accelerators) >= 0
    assert {
        "SkipDryRunOnMissingResource=true",
        "ServerSideApply=true",
        "RespectIgnoreDifferences=true",
    } <= sync_options(accelerators)
    ignored = accelerators["spec"]["ignoreDifferences"]
    assert {
        "group": "hda.shitops.dev",
        "kind": "HyperDriveAccelerator",
        "managedFieldsManagers": [FIELD_MANAGER],
    } in ignored
    source = accelerators["spec"]["source"]
    included = source["directory"]["include"]
    assert (ROOT / source["path"] / included).is_file()


def test_app_of_apps_points_at_the_applications() -> None:
    root = application("root")
    source = root["spec"]["source"]
    assert (ROOT / source["path"]).resolve() == APPLICATIONS.resolve()
    assert source["directory"]["exclude"] == "root.yaml"
    # Without waves of its own, the parent syncs the children in their wave order.
    assert wave(root) == 0


def test_applications_use_one_repository_and_revision() -> None:
    sources = {
        (app["spec"]["source"]["repoURL"], app["spec"]["source"]["targetRevision"])
        for app in map(application, ("hda-operator", "hda-accelerators", "root"))
    }
    assert len(sources) == 1


def test_every_manifest_in_deploy_argocd_parses() -> None:
    for path in sorted((ROOT / "deploy" / "argocd").rglob("*.yaml")):
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs, path
