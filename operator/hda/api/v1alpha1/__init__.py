"""HyperDriveAccelerator API, version v1alpha1.

The models live in one module per component (streams, buffer, ingest, workers, pipeline,
output, common parts) and are all re-exported here: import them from `hda.api.v1alpha1`.
"""

from .buffer import (
    SENTINELS,
    Acknowledge,
    BufferAuth,
    BufferPersistence,
    BufferSpec,
    BufferStorage,
    Topology,
)
from .common import (
    PodTemplate,
    PvcRetentionPolicy,
    ResourceRequirements,
    SecretKeyRef,
    Templates,
    Toleration,
)
from .ingest import Backpressure, IngestService, IngestSpec
from .observability import ObservabilitySpec, TracingSpec
from .output import (
    DEFAULT_FC_NODE_SELECTOR,
    FibreChannelSpec,
    FibreChannelVolume,
    OutputSinks,
    OutputSpec,
    SegmentFilesSink,
    SegmentRetention,
    SubscribersSink,
)
from .pipeline import (
    CountByKeyStep,
    DropFieldsStep,
    FilterStep,
    ParseJsonStep,
    PipelineStep,
    RedactStep,
    RenameFieldsStep,
    SampleStep,
    SetFieldsStep,
)
from .resource import HyperDriveAccelerator, ManifestError, load_manifest
from .spec import HyperDriveAcceleratorSpec
from .status import Condition, HyperDriveAcceleratorStatus, StreamStatus
from .streams import Retention, Stream
from .types import parse_duration, parse_quantity
from .workers import Autoscaling, DeadLetterRetention, WorkersSpec

__all__ = [
    "DEFAULT_FC_NODE_SELECTOR",
    "SENTINELS",
    "Acknowledge",
    "Autoscaling",
    "Backpressure",
    "BufferAuth",
    "BufferPersistence",
    "BufferSpec",
    "BufferStorage",
    "Condition",
    "CountByKeyStep",
    "DeadLetterRetention",
    "DropFieldsStep",
    "FibreChannelSpec",
    "FibreChannelVolume",
    "FilterStep",
    "HyperDriveAccelerator",
    "HyperDriveAcceleratorSpec",
    "HyperDriveAcceleratorStatus",
    "IngestService",
    "IngestSpec",
    "ManifestError",
    "ObservabilitySpec",
    "OutputSinks",
    "OutputSpec",
    "ParseJsonStep",
    "PipelineStep",
    "PodTemplate",
    "PvcRetentionPolicy",
    "RedactStep",
    "RenameFieldsStep",
    "ResourceRequirements",
    "Retention",
    "SampleStep",
    "SecretKeyRef",
    "SegmentFilesSink",
    "SegmentRetention",
    "SetFieldsStep",
    "Stream",
    "StreamStatus",
    "SubscribersSink",
    "Templates",
    "Toleration",
    "Topology",
    "TracingSpec",
    "WorkersSpec",
    "load_manifest",
    "parse_duration",
    "parse_quantity",
]
