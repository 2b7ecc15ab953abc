"""The whole HyperDriveAccelerator object, and loading one from a manifest with precise errors."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hda.api.consts import KIND

from .spec import HyperDriveAcceleratorSpec
from .status import HyperDriveAcceleratorStatus


class HyperDriveAccelerator(BaseModel):
    """A HyperDriveAccelerator as stored by Kubernetes or written in a manifest."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: Literal["hda.shitops.dev/v1alpha1"] = Field(
        default="hda.shitops.dev/v1alpha1", alias="apiVersion"
    )
    kind: Literal["HyperDriveAccelerator"] = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: HyperDriveAcceleratorSpec
    status: HyperDriveAcceleratorStatus | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", "default"))


class ManifestError(ValueError):
    """A manifest that is not a valid HyperDriveAccelerator; the message names field and line."""


def field_path(location: tuple[int | str, ...]) -> str:
    """`('spec', 'streams', 0, 'name')` -> `spec.streams[0].name`."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _line_of(node: yaml.Node | None, location: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest YAML node along `location` that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def load_manifest(text: str, *, source: str = "<manifest>") -> HyperDriveAccelerator:
    """Parse one HyperDriveAccelerator from YAML, naming the field and line of every problem."""
    try:
        documents = [doc for doc in yaml.compose_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise ManifestError(f"{source}: not valid YAML: {error}") from None
    candidates = [
        (node, data)
        for node, data in ((node, yaml.safe_load(yaml.serialize(node))) for node in documents)
        if isinstance(data, dict) and data.get("kind") == KIND
    ]
    if len(candidates) != 1:
        raise ManifestError(
            f"{source}: expected exactly one {KIND} document, found {len(candidates)}"
        )
    node, data = candidates[0]
    try:
        return HyperDriveAccelerator.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = tuple(part for part in item["loc"] if not str(part).startswith("function-"))
            line = _line_of(node, location)
            where = f"line {line}: " if line is not None else ""
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{source}: {where}{field_path(location)}: {message}")
        raise ManifestError("\n".join(problems)) from None
