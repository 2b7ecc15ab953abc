"""The image each component of an HDA runs: the spec's pins, else the operator's defaults.

Builders never read the operator's configuration: they get an `Images` value. While the workers
roll to a new runtime image, the controller holds ingest and output on the image they run
(`Images.hold`), so nothing downstream of the workers runs a newer runtime than they do.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from hda.api.images import DefaultImages
from hda.api.v1alpha1 import HyperDriveAcceleratorSpec

from .labels import Component


@dataclasses.dataclass(frozen=True)
class Images:
    """The images one HDA's pods run."""

    runtime: str  # ingest, workers and output, unless held
    valkey: str
    held: MappingProxyType[Component, str] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )

    def of(self, component: Component) -> str:
        """The image of `component`'s pods."""
        if component in (Component.VALKEY, Component.SENTINEL):
            return self.valkey
        return self.held.get(component, self.runtime)

    def hold(self, component: Component, image: str) -> Images:
        """These images, with `component` kept on `image` instead of the runtime image."""
        if image == self.runtime:
            return self
        return dataclasses.replace(self, held=MappingProxyType({**self.held, component: image}))


def resolve_images(spec: HyperDriveAcceleratorSpec, defaults: DefaultImages) -> Images:
    """The spec's pinned images, with the operator's defaults for what it leaves unset."""
    return Images(
        runtime=spec.image or defaults.runtime,
        valkey=spec.redis.image or defaults.valkey,
    )
