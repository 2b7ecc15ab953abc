"""OTLP/HTTP ingest: `POST /v1/logs`, `/v1/metrics` and `/v1/traces` on the ingest port.

One path for both encodings: `decode` turns a protobuf or OTLP/JSON body into the official
generated request message, `mapping` turns that message into HDA events (one per log record,
metric data point or span), and `handler` answers as the OTLP specification says and hands
the events to the same entry writer, admission and backlog gate as the JSON ingest.
"""
