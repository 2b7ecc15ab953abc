"""Liveness and readiness bookkeeping shared by every runtime component (pure)."""

from __future__ import annotations

import time

from hda.runtime.metrics import Metrics
from hda.runtime.probes import Liveness, Readiness, liveness_window


def test_liveness_fails_only_after_the_loop_stopped_beating() -> None:
    liveness = Liveness(max_silence=0.05)
    assert liveness.alive()
    time.sleep(0.08)
    assert not liveness.alive()
    liveness.beat()
    assert liveness.alive()


def test_liveness_window_outlasts_several_valkey_deadlines() -> None:
    # a stalled Valkey costs a loop at most one deadline plus the back-off per turn
    assert liveness_window(5.0, 1.0) > 3 * (5.0 + 1.0 + 5.0)


def test_readiness_names_each_cause_and_exports_it() -> None:
    metrics = Metrics()
    readiness = Readiness(metrics, valkey="connecting to Valkey")
    assert not readiness.ready
    readiness.set("disk", "No space left on device")
    readiness.clear("valkey")
    assert readiness.causes == {"disk": "No space left on device"}
    text = metrics.render().decode()
    assert 'hda_not_ready{cause="disk"} 1.0' in text
    assert 'hda_not_ready{cause="valkey"} 0.0' in text
    readiness.clear("disk")
    assert readiness.ready
