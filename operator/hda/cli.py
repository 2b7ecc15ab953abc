"""The `hda` command: one entry point for the operator, the runtime and the local tooling.

Each area owns its own click group or command in its package; this module only assembles them,
importing lazily so `hda ingest` does not pay for kopf and `hda operator` does not pay for aiohttp.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# command name -> "module:attribute" of a click.Command
_COMMANDS: dict[str, str] = {
    "crd": "hda.api.cli:crd",
    "cluster": "hda.cluster.cli:cluster",
    "operator": "hda.controller.cli:operator",
    "run": "hda.runtime.cli:run",
    "ingest": "hda.runtime.cli:ingest",
    "worker": "hda.runtime.cli:worker",
    "output": "hda.runtime.cli:output",
    "bench": "hda.runtime.cli:bench",
    "load": "hda.runtime.client_cli:load",
    "tail": "hda.runtime.client_cli:tail",
    "dlq": "hda.runtime.dlq_cli:dlq",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command: Any = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="hyperdrive-accelerator")
def main() -> None:
    """HyperDrive Accelerator: real-time ingest pipelines on Kubernetes."""
