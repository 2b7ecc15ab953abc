"""Test support for code that needs a Kubernetes cluster (used by `tests/cluster/conftest.py`).

`ClusterHandle` is what the `cluster` pytest fixture yields: the kubeconfig, an admin
`ApiClient`, `kubectl`, and (on the local plane) a way to add simulated nodes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from hda.cluster.audit import service_account_user
from hda.cluster.errors import ClusterError
from hda.cluster.plane import LocalCluster

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

T = TypeVar("T")

#: `HDA_TEST_CLUSTER=existing` runs the cluster tests against the current kubeconfig.
EXISTING_ENV: str = "HDA_TEST_CLUSTER"


class WaitTimeoutError(AssertionError):
    """`wait_for` gave up; an AssertionError so pytest reports it as a test failure."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.25,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Call `probe` until it returns something truthy and return that, or fail after `timeout`.

    `message` (or its result, evaluated at failure time) explains what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise WaitTimeoutError(f"after {timeout:.0f}s: {text}")
        time.sleep(interval)


@dataclass(frozen=True)
class ProbeImage:
    """The e2e probe image (tests/e2e/probe) under a ghcr.io and a docker.io official name."""

    ghcr: str
    docker_hub: str
    tag: str


def find_binary(name: str, bin_dir: Path | None) -> str:
    """Path of a binary (`kubectl`, `helm`, ...): from `bin_dir`, else from PATH."""
    if bin_dir is not None and os.access(bin_dir / name, os.X_OK):
        return str(bin_dir / name)
    found = shutil.which(name)
    if found is None:
        raise ClusterError(f"{name} not found in {bin_dir} nor on PATH")
    return found


@dataclass(frozen=True)
class OperatorIdentity:
    """Who the operator under test is: the chart release, its namespace and ServiceAccount.

    Chosen before the local plane starts, so its apiserver can audit exactly this user.
    """

    namespace: str
    release: str
    account: str

    @property
    def user(self) -> str:
        return service_account_user(self.namespace, self.account)


@dataclass
class ClusterHandle:
    """A cluster under test.

    - `kubeconfig`: path to an admin kubeconfig;
    - `api_client`: a `kubernetes.client.ApiClient` for that kubeconfig;
    - `bin_dir`: directory of the pinned binaries (kubectl, helm, ...), or None when unknown;
    - `local`: the `LocalCluster` when the tests started the plane, None for an existing cluster;
    - `registry_url`: `http://127.0.0.1:PORT` of the plane's loopback registry, when it runs one
      (every image host of the real nodes maps to it).
    """

    kubeconfig: Path
    api_client: ApiClient
    bin_dir: Path | None = None
    local: LocalCluster | None = None
    registry_url: str | None = None
    _kubectl: str = field(default="", repr=False)

    @property
    def is_local(self) -> bool:
        return self.local is not None

    @property
    def audit_log(self) -> Path | None:
        """The apiserver's audit log (local plane started with audit users), else None."""
        if self.local is None:
            return None
        state = self.local.state()
        return self.local.layout.audit_log if state is not None and state.audit_users else None

    def binary(self, name: str) -> str:
        """Path of a binary (`kubectl`, `helm`, ...): from `bin_dir`, else from PATH."""
        return find_binary(name, self.bin_dir)

    def env(self) -> dict[str, str]:
        """The process environment with KUBECONFIG pointing at this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run `kubectl --kubeconfig=<this cluster> *args`; text output captured.

        With `check` (the default) a non-zero exit raises `ClusterError` quoting stderr.
        """
        kubectl = self._kubectl or self.binary("kubectl")
        result = subprocess.run(
            [kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def helm(
        self, home: Path, *args: str, check: bool = True, timeout: float = 600.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned `helm *args` against this cluster with its state under `home` (cache,
        config and data: tests never touch the user's). `check` raises `ClusterError` quoting
        helm's output on a non-zero exit."""
        env = {
            **self.env(),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        result = subprocess.run(
            [self.binary("helm"), *args],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
        return result

    def add_node(self, name: str, *, fc: bool = True) -> None:
        """Register a simulated node (Fibre Channel labelled when `fc`) and wait until Ready.

        Only on the local plane; on an existing cluster this raises `ClusterError` (tests should
        skip when `not cluster.is_local`).
        """
        if self.local is None:
            raise ClusterError("add_node needs the local plane (not HDA_TEST_CLUSTER=existing)")
        self.local.add_node(name, fc=fc)

    def delete_node(self, name: str) -> None:
        """Remove a node added with `add_node` (local plane only)."""
        if self.local is None:
            raise ClusterError("delete_node needs the local plane")
        self.local.delete_node(name)
