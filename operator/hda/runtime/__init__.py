"""The HDA runtime (data plane): ingest, workers and output on Valkey Streams."""
