"""The image registry on loopback that every container runtime and BuildKit of the plane use.

`cluster up` starts one per cluster (distribution's `registry`, filesystem storage). containerd
and BuildKit send every registry host to it, so an image reference such as
`docker.io/valkey/valkey:9.1` is served from here, and a missing image fails at once instead of
being fetched from outside. Pure builders plus the environment for the process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

REGISTRY: Final = "registry"
_LOOPBACK: Final = "127.0.0.1"


def registry_url(port: int) -> str:
    """Base URL of the registry's HTTP API (`/v2/...`)."""
    return f"http://{_LOOPBACK}:{port}"


def registry_host(port: int) -> str:
    """`127.0.0.1:PORT`: how image references and registry configs name it."""
    return f"{_LOOPBACK}:{port}"


def registry_config(storage_dir: Path, port: int) -> dict[str, Any]:
    """distribution's config.yml: filesystem storage, loopback only, deletes allowed (GC)."""
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_dir)},
            "delete": {"enabled": True},
            # Not a pull-through cache of anything: no `proxy` section on purpose.
        },
        "http": {"addr": registry_host(port)},
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }


def registry_args(bin_dir: Path, config_path: Path) -> list[str]:
    return [str(bin_dir / REGISTRY), "serve", str(config_path)]


def registry_env() -> dict[str, str]:
    """No span exporter: the registry's OpenTelemetry default would try an OTLP endpoint."""
    return {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}


def registry_health_url(port: int) -> str:
    return f"{registry_url(port)}/v2/"
