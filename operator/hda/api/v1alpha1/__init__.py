"""HyperDriveAccelerator API, version v1alpha1."""

from .resource import HyperDriveAccelerator, ManifestError, load_manifest
from .spec import (
    Autoscaling,
    FibreChannelSpec,
    FibreChannelVolume,
    HyperDriveAcceleratorSpec,
    IngestSpec,
    OutputSpec,
    PipelineStep,
    PodTemplate,
    RedisSpec,
    Stream,
    WorkersSpec,
)
from .status import Condition, HyperDriveAcceleratorStatus, StreamStatus
from .types import parse_duration, parse_quantity

__all__ = [
    "Autoscaling",
    "Condition",
    "FibreChannelSpec",
    "FibreChannelVolume",
    "HyperDriveAccelerator",
    "HyperDriveAcceleratorSpec",
    "HyperDriveAcceleratorStatus",
    "IngestSpec",
    "ManifestError",
    "OutputSpec",
    "PipelineStep",
    "PodTemplate",
    "RedisSpec",
    "Stream",
    "StreamStatus",
    "WorkersSpec",
    "load_manifest",
    "parse_duration",
    "parse_quantity",
]
