"""Every reason the operator can put on an HDA condition, in one place.

Argo CD's health check (deploy/argocd/health.lua) and its test data may name only these:
tests/unit/test_argocd_health.py checks both against this enum.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Reason(StrEnum):
    """A condition's `reason` (CamelCase, as Kubernetes conventions ask)."""

    # Ready
    ALL_COMPONENTS_READY = "AllComponentsReady"
    # Progressing
    CREATING_CHILDREN = "CreatingChildren"
    ROLLING_OUT_WORKERS_FIRST = "RollingOutWorkersFirst"
    ROLLING_OUT = "RollingOut"
    RECONCILED = "Reconciled"
    # Degraded
    AS_EXPECTED = "AsExpected"
    INVALID_SPEC = "InvalidSpec"
    APPLY_FAILED = "ApplyFailed"
    CHILD_NAME_CONFLICT = "ChildNameConflict"
    SECRET_INVALID = "SecretInvalid"  # noqa: S105 - a reason, not a secret
    # Pods and rollouts that cannot make progress
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    IMAGE_PULL_FAILED = "ImagePullFailed"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    CONTAINER_CONFIG_INVALID = "ContainerConfigInvalid"
    UNSCHEDULABLE = "Unschedulable"
    # Per component
    VALKEY_MISSING = "ValkeyMissing"
    VALKEY_READY = "ValkeyReady"
    VALKEY_NOT_READY = "ValkeyNotReady"
    INGEST_MISSING = "IngestMissing"
    INGEST_READY = "IngestReady"
    INGEST_NOT_READY = "IngestNotReady"
    WORKERS_MISSING = "WorkersMissing"
    WORKERS_READY = "WorkersReady"
    WORKERS_NOT_READY = "WorkersNotReady"
    OUTPUT_MISSING = "OutputMissing"
    OUTPUT_READY = "OutputReady"
    OUTPUT_NOT_READY = "OutputNotReady"
    SCALED_TO_ZERO = "ScaledToZero"
    # Storage
    NO_CLAIMS = "NoClaims"
    CLAIMS_BOUND = "ClaimsBound"
    CLAIMS_PENDING = "ClaimsPending"
    NO_FIBRE_CHANNEL_NODES = "NoFibreChannelNodes"
    FIBRE_CHANNEL_VOLUME_UNAVAILABLE = "FibreChannelVolumeUnavailable"
    STORAGE_CLASS_MISSING = "StorageClassMissing"
    # WorkersKeepingUp
    LAG_UNKNOWN = "LagUnknown"
    LAG_WITHIN_TARGET = "LagWithinTarget"
    LAG_ABOVE_TARGET = "LagAboveTarget"


# Reasons of something that needs a person: their transitions are Warning Events.
PROBLEM_REASONS: Final = frozenset(
    {
        Reason.NO_FIBRE_CHANNEL_NODES,
        Reason.FIBRE_CHANNEL_VOLUME_UNAVAILABLE,
        Reason.STORAGE_CLASS_MISSING,
        Reason.INVALID_SPEC,
        Reason.APPLY_FAILED,
        Reason.CHILD_NAME_CONFLICT,
        Reason.SECRET_INVALID,
        Reason.PROGRESS_DEADLINE_EXCEEDED,
        Reason.IMAGE_PULL_FAILED,
        Reason.CRASH_LOOP_BACK_OFF,
        Reason.CONTAINER_CONFIG_INVALID,
        Reason.UNSCHEDULABLE,
    }
)

# Per component: (missing, ready, not ready).
COMPONENT_REASONS: Final = {
    "Valkey": (Reason.VALKEY_MISSING, Reason.VALKEY_READY, Reason.VALKEY_NOT_READY),
    "Ingest": (Reason.INGEST_MISSING, Reason.INGEST_READY, Reason.INGEST_NOT_READY),
    "Workers": (Reason.WORKERS_MISSING, Reason.WORKERS_READY, Reason.WORKERS_NOT_READY),
    "Output": (Reason.OUTPUT_MISSING, Reason.OUTPUT_READY, Reason.OUTPUT_NOT_READY),
}
