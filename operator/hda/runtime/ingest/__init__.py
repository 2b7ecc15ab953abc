"""`hda ingest`: REST and WebSocket ingest into partitioned Valkey streams.

Requests are validated whole before anything is written, then handed to `EntryWriter`, which
coalesces the events of every request that arrives in the same event-loop turn into one XADD per
partition (many events per entry) and pipelines them on one connection. A request is answered
only after Valkey accepted its entries.

One module per concern: `writer` (entries and XADDs), `backlog` (the watermark), `admission`
(token, stream, error replies), `rest` and `websocket` (the handlers), `app` (the wiring).
"""
