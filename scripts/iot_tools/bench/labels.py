"""The names that figures are filed under, shared by the phases, the targets and the report."""

from __future__ import annotations

# Probe-latency conditions.
IDLE, LOAD = "idle", "under load"
BARE_LABEL = "bare aiohttp /"

# Throughput variants.
INGEST = "ingest_iot"
INGEST_PROBED = "ingest_iot, probes on/off"
INGEST_SAMPLED = "ingest_iot + latency sampling"
ONE_INSERT = "one-INSERT writer"
CEILING = "lean pull ceiling (ack only)"
FETCH_CEILING = "nats-py fetch-and-ack ceiling"
INGEST_FETCH = "ingest_iot on nats-py fetch"
VALIDATION_ONLY = "validation only"
COMMIT_ONLY = "commit only"

# Faults.
NATS_KILLED, NATS_FROZEN, POSTGRES_KILLED = "NATS killed", "NATS frozen", "PostgreSQL killed"
