"""Test and benchmark tooling for the operator: the operator process harness, the request-counting
proxy, the cluster-tier pytest fixtures and the operator benchmark. The operator never imports it;
`pytest_fixtures` is the only module that needs pytest."""
