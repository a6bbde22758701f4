"""The one statement that commits a batch: readings, device presence, quarantined
messages and the change notification, atomically, in a single round trip."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import asyncpg
import orjson

from services.common.faults import Fault, classify, sqlstate
from services.common.logs import describe_error
from services.ingest_iot.telemetry import Reading, Rejection

log = logging.getLogger("store")

STREAM_NAME = "TELEMETRY"

# The batch's readings arrive as one JSON document that json_to_recordset() turns into rows:
# a multi-row insert of the whole batch in one statement. (One text parameter: asyncpg's
# encoding of three arrays, element by element, cost the writer's event loop 3-4 µs a reading,
# about a seventh of its time; the document costs it 1.5 µs and the database no more.)
# Quarantined messages, rare, come as arrays that unnest() zips. ON CONFLICT makes
# redelivery idempotent. Device rows are touched in device_id order so that concurrent
# ingest pods cannot deadlock, and only when the stored last_seen is stale: a plain read (the
# LEFT JOIN) leaves out the devices seen in the last 5 s, because ON CONFLICT … DO UPDATE
# locks the conflicting row, with a WAL record, even when its WHERE then updates nothing
# (those locks were ~30 % of the statement's database CPU, 17 → 12 µs a row); the same WHERE
# still guards the rows that race in. NOTIFY inside the statement is delivered at commit, so
# the evaluator never hears of rows it cannot see yet.
COMMIT_BATCH = """
WITH batch AS (
    SELECT * FROM json_to_recordset($1::json) AS b(device_id text, ts timestamptz, metrics jsonb)
), stored AS (
    INSERT INTO telemetry (device_id, ts, metrics)
    SELECT device_id, ts, metrics FROM batch
    ON CONFLICT (device_id, ts) DO NOTHING
    RETURNING ts
), seen AS (
    INSERT INTO devices AS d (device_id, last_seen, status)
    SELECT b.device_id, now(), 'online' FROM (SELECT DISTINCT device_id FROM batch) b
    LEFT JOIN devices known ON known.device_id = b.device_id
    WHERE known.device_id IS NULL OR known.status <> 'online'
       OR known.last_seen < now() - interval '5 seconds'
    ORDER BY b.device_id
    ON CONFLICT (device_id) DO UPDATE SET last_seen = excluded.last_seen, status = 'online'
    WHERE d.status <> 'online' OR d.last_seen < excluded.last_seen - interval '5 seconds'
), quarantined AS (
    INSERT INTO quarantine (stream, stream_seq, stored_at, subject, reason, payload,
                            payload_size)
    SELECT $2, * FROM unnest($3::bigint[], $8::timestamptz[], $4::text[], $5::text[],
                             $6::bytea[], $7::int[])
    ON CONFLICT (stream, stream_seq, stored_at) DO NOTHING
    RETURNING 1
), notified AS (
    SELECT pg_notify('telemetry_inserted',
                     json_build_object('from', min(ts), 'to', max(ts), 'rows', count(*))::text)
    FROM stored HAVING count(*) > 0
)
SELECT (SELECT count(*) FROM stored) AS stored,
       (SELECT count(*) FROM quarantined) AS quarantined,
       (SELECT count(*) FROM notified) AS notified
"""

ROUTED_DEVICES = "SELECT id, device_id FROM message_routes WHERE enabled ORDER BY id"


class Sequence(Protocol):
    stream: int


class Metadata(Protocol):
    sequence: Sequence
    timestamp: datetime  # when JetStream stored the message: kept across redeliveries


class Message(Protocol):
    """What the store needs of a JetStream message."""

    subject: str
    data: bytes
    metadata: Metadata


@dataclass(slots=True)  # not frozen: made once per message (see telemetry.Reading)
class Entry:
    """One message of a batch and what validation made of it."""

    message: Message
    outcome: Reading | Rejection


@dataclass
class BatchRows:
    """A batch in the shape COMMIT_BATCH takes: its readings (one JSON document when
    committed), its quarantined messages as column arrays."""

    readings: list[Reading] = field(default_factory=list)
    quarantine_seqs: list[int] = field(default_factory=list)
    quarantine_stored_at: list[datetime] = field(default_factory=list)
    quarantine_subjects: list[str] = field(default_factory=list)
    quarantine_reasons: list[str] = field(default_factory=list)
    quarantine_payloads: list[bytes] = field(default_factory=list)
    quarantine_sizes: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, entries: list[Entry], kept_bytes: int) -> BatchRows:
        rows = cls()
        for entry in entries:
            if isinstance(entry.outcome, Reading):
                rows.add_reading(entry.outcome)
            else:
                rows.add_rejection(entry.message, entry.outcome.reason, kept_bytes)
        return rows

    def add_reading(self, reading: Reading) -> None:
        self.readings.append(reading)

    def readings_document(self) -> str:
        """`[{"device_id", "ts", "metrics"}, …]`: metrics as validation wrote them, the
        timestamp in RFC 3339 with its offset (PostgreSQL reads it to the microsecond). Text
        that cannot be UTF-8 (validation lets none through) is refused as asyncpg refuses an
        argument it cannot encode: DataError, a bad message, which the batch split isolates."""
        try:
            return orjson.dumps([
                {"device_id": reading.device_id, "ts": reading.ts,
                 "metrics": orjson.Fragment(reading.metrics_json)}
                for reading in self.readings]).decode()
        except orjson.JSONEncodeError as error:
            raise asyncpg.DataError(f"invalid input for query argument $1: {error}") from error

    def add_rejection(self, message: Message, reason: str, kept_bytes: int) -> None:
        payload = message.data
        self.quarantine_seqs.append(message.metadata.sequence.stream)
        self.quarantine_stored_at.append(message.metadata.timestamp)
        self.quarantine_subjects.append(message.subject)
        self.quarantine_reasons.append(reason)
        self.quarantine_payloads.append(payload[:kept_bytes])
        self.quarantine_sizes.append(len(payload))


@dataclass(frozen=True)
class CommitResult:
    stored: int
    quarantined: int
    # Readings that passed validation but that the database refused (then quarantined).
    refused: int = 0


Commit = Callable[[list[Entry]], Awaitable[CommitResult]]


async def commit_isolating(entries: list[Entry], commit: Commit) -> CommitResult:
    """Commit the entries; a part the database refuses as bad data (the failure taxonomy's
    "bad message") is split in halves until the one reading to blame is found, which is
    quarantined as rejected_by_database_<SQLSTATE>. Validation should leave nothing for
    this to find: it is the second line of defence, so that one message can never stop
    ingest. Dependency errors are `commit`'s to retry; bugs propagate."""
    try:
        return await commit(entries)
    except Exception as error:
        if classify(error) is not Fault.BAD_MESSAGE:
            raise
        if len(entries) == 1:
            return await _quarantine_refused(entries[0], error, commit)
        log.warning("database refused a batch of %d (%s); splitting it to find the message "
                    "to blame", len(entries), describe_error(error))
    middle = len(entries) // 2
    first = await commit_isolating(entries[:middle], commit)
    second = await commit_isolating(entries[middle:], commit)
    return CommitResult(first.stored + second.stored, first.quarantined + second.quarantined,
                        first.refused + second.refused)


async def _quarantine_refused(entry: Entry, error: Exception, commit: Commit) -> CommitResult:
    if not isinstance(entry.outcome, Reading):
        raise error  # a quarantine row refused: our bug, not the message's
    reason = f"rejected_by_database_{sqlstate(error) or 'unknown'}"
    log.warning("quarantining stream message %s: %s", entry.message.metadata.sequence.stream,
                reason)
    result = await commit([Entry(entry.message, Rejection(reason))])
    return CommitResult(result.stored, result.quarantined, refused=1)


async def commit_batch(
    connection: asyncpg.Connection, rows: BatchRows, statement_timeout: float
) -> CommitResult:
    record = await connection.fetchrow(
        COMMIT_BATCH,
        rows.readings_document(),
        STREAM_NAME, rows.quarantine_seqs, rows.quarantine_subjects, rows.quarantine_reasons,
        rows.quarantine_payloads, rows.quarantine_sizes, rows.quarantine_stored_at,
        timeout=statement_timeout,
    )
    assert record is not None
    return CommitResult(stored=record["stored"], quarantined=record["quarantined"])


async def routed_devices(connection: asyncpg.Connection) -> dict[str, tuple[int, ...]]:
    """device_id -> ids of its enabled routes."""
    routes: dict[str, list[int]] = {}
    for row in await connection.fetch(ROUTED_DEVICES, timeout=10):
        routes.setdefault(row["device_id"], []).append(row["id"])
    return {device: tuple(ids) for device, ids in routes.items()}
