"""The Argo CD health check (deploy/argocd/health.lua) on a real Lua 5.1 interpreter.

Argo CD runs health checks in gopher-lua (Lua 5.1) with the base and table libraries only
(no `string.*` unless `useOpenLibs` is set), so each case runs in a sandbox that offers exactly
that: a Lua 5.1 interpreter, an environment of base functions plus `table`, and no string
methods on string values. The cases are Argo CD's upstream format: deploy/argocd/health_test.yaml
lists an input object and the expected {status, message}.

Needs `lua5.1` (Debian/Ubuntu package `lua5.1`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hda.controller.observe import pod_summary
from hda.controller.reasons import Reason
from hda.controller.status import Claim, Observation, Workload, compute_status

pytestmark = pytest.mark.lua

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "deploy" / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
CHART_HEALTH_LUA = ROOT / "charts" / "hda-operator" / "files" / "argocd" / "health.lua"
HEALTH_KEY = "resource.customizations.health.hda.shitops.dev_HyperDriveAccelerator"
VALID_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
# The cases ecosystem.md §1 requires, at least.
REQUIRED_CASES = {
    "progressing_noStatus",
    "progressing_staleGeneration",
    "healthy_ready",
    "degraded_condition",
    "suspended",
    "terminating",
}

# Runs the check like Argo CD: `obj` is the only global beyond base + table, string values have
# no methods (gopher-lua sets the string metatable only when the string library is opened), and
# the script must return a table. Prints status NUL message.
HARNESS = r"""
local scriptPath, inputPath = arg[1], arg[2]
local obj = assert(loadfile(inputPath))()
local script = assert(loadfile(scriptPath))
local env = {}
for _, name in ipairs({
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring",
  "type", "unpack", "xpcall", "rawequal", "rawget", "rawset", "getmetatable", "setmetatable",
  "_VERSION",
}) do
  env[name] = _G[name]
end
env.table = table
env._G = env
env.obj = obj
setfenv(script, env)
local stringMeta = getmetatable("")
local stringIndex = stringMeta.__index
stringMeta.__index = nil
local ok, result = pcall(script)
stringMeta.__index = stringIndex
if not ok then
  io.stderr:write("error: " .. tostring(result) .. "\n")
  os.exit(2)
end
if type(result) ~= "table" then
  io.stderr:write("incorrect return type: " .. type(result) .. "\n")
  os.exit(3)
end
if type(result.message) ~= "nil" and type(result.message) ~= "string" then
  io.stderr:write("message is a " .. type(result.message) .. "\n")
  os.exit(4)
end
io.write(tostring(result.status), "\0", result.message or "")
"""


class _KubeLoader(yaml.SafeLoader):
    """YAML as the API server's JSON sees it: timestamps stay strings."""


_KubeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _lua_string(value: str) -> str:
    out = ['"']
    for byte in value.encode("utf-8"):
        char = chr(byte)
        if byte < 128 and (char.isalnum() or char in " .,:;/_-+*=()[]{}<>!?@#$%&|~^'`"):
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    out.append('"')
    return "".join(out)


def to_lua(value: Any) -> str:
    """A Lua 5.1 literal for a JSON value; JSON null becomes an absent field, as in Argo CD."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(item) for item in value) + "}"
    if isinstance(value, dict):
        fields = (
            f"[{_lua_string(str(key))}] = {to_lua(item)}"
            for key, item in value.items()
            if item is not None
        )
        return "{" + ", ".join(fields) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def lua_interpreter() -> str:
    for name in ("lua5.1", "lua"):
        path = shutil.which(name)
        if path is None:
            continue
        version = subprocess.run(
            [path, "-v"], capture_output=True, text=True, check=False, timeout=10
        )
        if "Lua 5.1" in version.stdout + version.stderr:
            return path
    pytest.fail(
        "no Lua 5.1 interpreter on PATH: install it (Debian/Ubuntu: `apt-get install -y lua5.1`)"
    )


def run_health(obj: dict[str, Any], tmp_path: Path, script: Path = HEALTH_LUA) -> tuple[str, str]:
    harness = tmp_path / "harness.lua"
    harness.write_text(HARNESS)
    source = tmp_path / "input.lua"
    source.write_text("return " + to_lua(obj) + "\n")
    result = subprocess.run(
        [lua_interpreter(), str(harness), str(script), str(source)],
        capture_output=True,
        check=False,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr.decode()
    status, _, message = result.stdout.decode().partition("\0")
    return status, message


def load_cases() -> list[tuple[str, dict[str, str]]]:
    tests = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
    return [(case["inputPath"], case["healthStatus"]) for case in tests]


CASES = load_cases()


@pytest.mark.parametrize(
    ("input_path", "expected"), CASES, ids=[Path(path).stem for path, _ in CASES]
)
def test_health_case(input_path: str, expected: dict[str, str], tmp_path: Path) -> None:
    obj = yaml.load((ARGOCD / input_path).read_text(), Loader=_KubeLoader)  # noqa: S506
    status, message = run_health(obj, tmp_path)
    assert status in VALID_STATUSES
    assert {"status": status, "message": message} == {
        "status": expected["status"],
        "message": expected.get("message", ""),
    }


def test_required_cases_and_no_orphan_testdata() -> None:
    referenced = {Path(path).stem for path, _ in CASES}
    assert referenced >= REQUIRED_CASES
    on_disk = {path.stem for path in (ARGOCD / "testdata").glob("*.yaml")}
    assert on_disk == referenced, "every testdata file needs a case in health_test.yaml"
    assert len(referenced) == len(CASES), "duplicate inputPath in health_test.yaml"


def test_every_input_is_a_hyperdriveaccelerator() -> None:
    for input_path, _ in CASES:
        obj = yaml.load((ARGOCD / input_path).read_text(), Loader=_KubeLoader)  # noqa: S506
        assert obj["apiVersion"] == "hda.shitops.dev/v1alpha1", input_path
        assert obj["kind"] == "HyperDriveAccelerator", input_path


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"metadata": None, "spec": None, "status": None},
        {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": None}},
        {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [{}]}},
        {"metadata": {}, "status": {"conditions": [{"type": "Ready"}]}},
        {"metadata": {"generation": 2}, "status": {"observedGeneration": "2"}},
        {"spec": {"paused": "yes"}, "status": {"conditions": "not a list"}},
    ],
    ids=[
        "empty",
        "nulls",
        "null-conditions",
        "empty-condition",
        "ready-no-status",
        "odd-types",
        "wrong-shapes",
    ],
)
def test_partial_objects_never_error(obj: dict[str, Any], tmp_path: Path) -> None:
    status, message = run_health(obj, tmp_path)
    assert status in VALID_STATUSES
    assert message


def test_the_sandbox_rejects_string_library_use(tmp_path: Path) -> None:
    """The harness really is as strict as Argo CD: a script using string methods fails."""
    script = tmp_path / "uses_string.lua"
    script.write_text('return {status = ("Healthy"):sub(1), message = string.upper("x")}\n')
    harness = tmp_path / "harness.lua"
    harness.write_text(HARNESS)
    source = tmp_path / "input.lua"
    source.write_text("return {}\n")
    result = subprocess.run(
        [lua_interpreter(), str(harness), str(script), str(source)],
        capture_output=True,
        check=False,
        timeout=10,
    )
    assert result.returncode == 2, result


def test_chart_and_argocd_cm_copies_match_the_script() -> None:
    script = HEALTH_LUA.read_text()
    assert CHART_HEALTH_LUA.read_text() == script, (
        "charts/hda-operator/files/argocd/health.lua differs: "
        "cp deploy/argocd/health.lua charts/hda-operator/files/argocd/health.lua"
    )
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert patch["metadata"] == {"name": "argocd-cm", "namespace": "argocd"}
    assert patch["data"] == {HEALTH_KEY: script}


def test_lua_literal_round_trip(tmp_path: Path) -> None:
    """The YAML-to-Lua conversion keeps strings byte for byte (quotes, newlines, UTF-8)."""
    value = 'a "quoted"\nline\\with\tescapes, ünïcode and ]]'
    script = tmp_path / "echo.lua"
    script.write_text('return {status = "Healthy", message = obj.text}\n')
    status, message = run_health({"text": value}, tmp_path, script)
    assert (status, message) == ("Healthy", value)


def _named_reasons() -> dict[str, set[str]]:
    """Every condition reason health.lua compares against, and every reason in its test data."""
    script = HEALTH_LUA.read_text()
    found = {"health.lua": set(re.findall(r"reason\s*[~=]=\s*\"([^\"]*)\"", script))}
    for path in sorted((ARGOCD / "testdata").glob("*.yaml")):
        obj = yaml.load(path.read_text(), Loader=_KubeLoader)  # noqa: S506
        conditions = ((obj or {}).get("status") or {}).get("conditions") or []
        found[path.name] = {str(c["reason"]) for c in conditions if "reason" in c}
    return found


def test_health_check_and_test_data_name_only_reasons_the_operator_emits() -> None:
    emitted = {reason.value for reason in Reason}
    unknown = {where: names - emitted for where, names in _named_reasons().items()}
    assert {where: names for where, names in unknown.items() if names} == {}


def test_the_reason_check_sees_reasons_in_lua_and_test_data() -> None:
    # The collector itself must find reasons, or the test above could never fail.
    assert re.findall(r"reason\s*[~=]=\s*\"([^\"]*)\"", 'if c.reason == "Failed" then') == [
        "Failed"
    ]
    assert "NoFibreChannelNodes" in _named_reasons()["degraded_condition.yaml"]


def test_image_pull_problem_computed_by_the_operator_is_degraded_in_argo_cd(
    tmp_path: Path,
) -> None:
    """From a recorded pod in ImagePullBackOff, through compute_status, to Argo CD's verdict."""
    pod = {
        "metadata": {
            "name": "hda-pipelines-events-workers-7d9f-x2x4k",
            "labels": {"app.kubernetes.io/component": "workers"},
        },
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "workers",
                    "image": "registry.invalid/hda:missing",
                    "ready": False,
                    "state": {"waiting": {"reason": "ImagePullBackOff"}},
                }
            ],
        },
    }
    ready = Workload("w", True, 2, 2, 1, 3, True)
    obs = Observation(
        generation=2,
        buffer=ready,
        ingest=ready,
        workers=ready,
        output=ready,
        fc_nodes=1,
        claims=(Claim("c-0", "Bound"), Claim("c-1", "Bound")),
        problems=pod_summary(pod).problems,
    )
    status, _ = compute_status(obs, None, "2026-11-30T06:00:00Z")
    obj = {
        "apiVersion": "hda.shitops.dev/v1alpha1",
        "kind": "HyperDriveAccelerator",
        "metadata": {"generation": 2},
        "status": status,
    }
    health, message = run_health(obj, tmp_path)
    assert health == "Degraded"
    assert "registry.invalid/hda:missing" in message
