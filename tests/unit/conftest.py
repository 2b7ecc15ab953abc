"""Unit tier settings: Hypothesis without its per-example deadline. The tier shares two cores
with whatever else runs (CI runs every tier in one job), and a slow example is not a failure:
speed is measured by benchmarks, not by tests."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("hda", deadline=None)
settings.load_profile("hda")
