"""The HyperDriveAccelerator operator: kopf handlers over pure builders, SSA and pure status.

Modules: `handlers` (thin kopf handlers and indexes), `reconcile` (ordered server-side apply with
a live-vs-desired comparison so that nothing is written when all is right), `observe` (children,
nodes, claims and Valkey lag, read from kopf's watch-fed indexes), `status` and `scaling` (pure
functions), `events` (Kubernetes Events), `kube` (the few API calls), `cli` (`hda operator`).
"""
