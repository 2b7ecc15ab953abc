"""Valkey topologies beyond one server: where the primary is (Sentinel), local replicated and
cluster topologies for `hda run` and the tests, and resharding."""
