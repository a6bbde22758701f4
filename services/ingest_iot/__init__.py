"""ingest_iot: telemetry from JetStream (stream TELEMETRY) into PostgreSQL, ack after commit."""
