"""Property-based tests (Hypothesis) of ingest's promise: whatever bytes arrive, every
message is stored or quarantined exactly once and the writer never dies.

Three levels, each against the real thing: validation alone (never raises); validation
against real PostgreSQL (whatever it accepts, the database stores); and the running
service against real NATS and PostgreSQL (arbitrary payloads in, every stream sequence
accounted for).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iot_tools.feed import ensure_telemetry_stream
from iot_tools.services import wait_until

from services.ingest_iot.store import BatchRows, Entry, commit_batch, commit_isolating
from services.ingest_iot.telemetry import (
    DEVICE_ID,
    Reading,
    ReadingLimits,
    Rejection,
    parse_reading,
)

from .conftest import service_env

# Every code point, surrogates and NUL included: what a device's firmware may send.
ANY_CHARACTER = st.characters(codec=None, exclude_categories=())
ANY_TEXT = st.text(ANY_CHARACTER, max_size=20)
# The widest window configuration allows, so that the database, not the window, is tested.
WIDE = ReadingLimits(65_536, max_age=timedelta(days=100 * 365), max_future=timedelta(days=365))
NOW = datetime.now(UTC)

timestamps = st.one_of(
    # Inside the service's window, so that the rest of the document is what gets tested.
    st.datetimes(min_value=(NOW - timedelta(days=1)).replace(tzinfo=None),
                 max_value=NOW.replace(tzinfo=None), timezones=st.timezones())
    .map(datetime.isoformat),
    st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 2),
                 timezones=st.just(UTC)).map(lambda ts: ts.replace(tzinfo=None).isoformat()
                                             + "+01:00"),
    st.datetimes(min_value=datetime(9999, 12, 31), timezones=st.just(UTC)).map(
        lambda ts: ts.replace(tzinfo=None).isoformat() + "-01:00"),
    ANY_TEXT,
)
numbers = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=10**300, max_value=10**400), st.booleans(),
                    st.none(), ANY_TEXT)
device_ids = st.one_of(st.from_regex(r"[A-Za-z0-9_\-:]{1,128}", fullmatch=True), ANY_TEXT)
metrics = st.one_of(st.dictionaries(ANY_TEXT, numbers, max_size=6), numbers,
                    st.lists(numbers, max_size=3))
documents = st.fixed_dictionaries(
    {}, optional={"device_id": device_ids, "ts": timestamps, "metrics": metrics,
                  "extra": st.recursive(numbers, lambda inner: st.lists(inner, max_size=3)
                                        | st.dictionaries(ANY_TEXT, inner, max_size=3))})


def encode(document: object, ascii_only: bool) -> bytes:
    # ensure_ascii=False with a lone surrogate cannot be UTF-8: send the escaped form then.
    text = json.dumps(document, ensure_ascii=ascii_only)
    return text.encode("utf-8", errors="surrogatepass") if not ascii_only else text.encode()


payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(encode, documents, st.booleans()),
    st.integers(min_value=1, max_value=5000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@settings(max_examples=500, deadline=None)
@given(payload=payloads)
def test_validation_never_raises_whatever_the_bytes(payload):
    outcome = parse_reading(payload, WIDE, WIDE.window(NOW))
    assert isinstance(outcome, Reading | Rejection)


@dataclass(frozen=True)
class FakeSequence:
    stream: int


@dataclass(frozen=True)
class FakeMetadata:
    sequence: FakeSequence
    timestamp: datetime = NOW


@dataclass(frozen=True)
class StoredMessage:
    """The three fields the store reads of a JetStream message."""

    subject: str
    data: bytes
    metadata: FakeMetadata


@pytest.fixture(scope="module")
def loop():
    runner = asyncio.Runner()
    yield runner
    runner.close()


@pytest.fixture
def connection(loop, database):
    connection = loop.run(asyncpg.connect(database.url, password=database.server.password))
    yield connection
    loop.run(connection.close())


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents, ascii_only=st.booleans())
def test_whatever_validation_accepts_postgresql_stores(loop, connection, document, ascii_only):
    outcome = parse_reading(encode(document, ascii_only), WIDE, WIDE.window(NOW))
    if isinstance(outcome, Rejection):
        return
    rows = BatchRows()
    rows.add_reading(outcome)
    # Raises if PostgreSQL refuses the row: validation let through something it should not.
    loop.run(commit_batch(connection, rows, 10))


def test_a_batch_with_a_reading_postgresql_refuses_is_split_and_only_that_one_quarantined(
        loop, connection, database):
    """The second line of defence: a reading validation missed (here built by hand with a
    NUL, which jsonb refuses) costs only itself."""
    now = datetime.now(UTC)
    entries = [
        Entry(StoredMessage("telemetry.t", b"{}", FakeMetadata(FakeSequence(seq))),
              Reading(f"dev-{seq}", now + timedelta(milliseconds=seq),
                      '{"t\\u0000":1}' if seq == 7 else '{"t":1}'))
        for seq in range(1, 21)
    ]
    commits = []

    async def commit(part: list[Entry]):
        commits.append(len(part))
        return await commit_batch(connection, BatchRows.of(part, 1024), 10)

    result = loop.run(commit_isolating(entries, commit))
    assert (result.stored, result.quarantined, result.refused) == (19, 1, 1)
    assert database.count("telemetry") == 19
    assert database.sql("SELECT stream_seq, reason FROM quarantine") == \
        "7|rejected_by_database_22P05"
    assert len(commits) <= 2 * 5 + 2  # a bisection, not one commit per message


@pytest.fixture
def ingest(launch, database, nats_server):
    service = launch("ingest_iot", service_env(database, nats_server, FLUSH_INTERVAL_MS="20",
                                               MAX_PAYLOAD_BYTES="4096"))
    service.wait_ready()
    return service


_valid_numbers = itertools.count()


def valid_reading(_: object) -> bytes:
    """A reading that must be stored (unique device and ts), to interleave with the rest."""
    n = next(_valid_numbers)
    ts = (NOW - timedelta(hours=1) + timedelta(milliseconds=n)).isoformat()
    return json.dumps({"device_id": f"prop-{n % 5}", "ts": ts, "metrics": {"t": n}}).encode()


message_lists = st.lists(st.one_of(payloads, st.builds(valid_reading, st.none())),
                         min_size=1, max_size=40)


async def publish(url: str, messages: list[bytes]) -> list[int]:
    connection = await nats.connect(url)
    try:
        js = connection.jetstream()
        await ensure_telemetry_stream(js)
        acks = await asyncio.gather(*(js.publish(subject_of(payload), payload)
                                      for payload in messages))
        return [ack.seq for ack in acks]
    finally:
        await connection.close()


def subject_of(payload: bytes) -> str:
    """The subject the bridge would carry it on: its device's, as EMQX's ACL allows (a
    payload without a usable device_id goes on telemetry.prop, and is quarantined anyway)."""
    try:
        device = json.loads(payload)["device_id"]
    except Exception:  # not a reading: its subject does not matter
        return "telemetry.prop"
    if isinstance(device, str) and DEVICE_ID.fullmatch(device):
        return f"telemetry.{device}"
    return "telemetry.prop"


def reading_key(payload: bytes) -> str | None:
    """device_id|UTC ts of a payload that could be a reading; None if it cannot be one."""
    try:
        document = json.loads(payload)
        ts = datetime.fromisoformat(document["ts"]).astimezone(UTC)
        return f"{document['device_id']}|{ts.strftime('%Y-%m-%dT%H:%M:%S.%f')}"
    except Exception:  # anything else is not a reading: it can only be quarantined
        return None


def accounting(database) -> tuple[set[int], set[str]]:
    """(stream sequences quarantined, device_id|ts keys stored)."""
    quarantined = {int(seq) for seq in database.sql("SELECT stream_seq FROM quarantine").split()}
    keys = set(database.sql(
        "SELECT device_id || '|' || to_char(ts AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM telemetry").splitlines())
    return quarantined, keys


@pytest.mark.slow
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(messages=message_lists)
def test_every_published_message_is_stored_or_quarantined_exactly_once(ingest, database,
                                                                       nats_server, messages):
    pid = ingest.pid
    sequences = asyncio.run(publish(nats_server.url, messages))

    def unaccounted() -> list[int]:
        quarantined, keys = accounting(database)
        return [seq for seq, payload in zip(sequences, messages, strict=True)
                if seq not in quarantined and reading_key(payload) not in keys]

    assert wait_until(lambda: not unaccounted(), timeout=30, interval=0.1) is not None, \
        f"neither stored nor quarantined: {unaccounted()}"
    counts = database.sql(
        "SELECT count(*), count(DISTINCT stream_seq) FROM quarantine "
        f"WHERE stream_seq BETWEEN {min(sequences)} AND {max(sequences)}")
    total, distinct = counts.split("|")
    assert total == distinct  # nothing quarantined twice
    assert ingest.status("/health") == 200 and ingest.pid == pid
    assert ingest.status("/ready") == 200


def test_a_reading_that_cannot_be_encoded_is_isolated_and_quarantined_too(loop, connection,
                                                                           database):
    """Refused before it leaves the process (a lone surrogate cannot be UTF-8: the batch's
    document is refused as asyncpg refuses an argument, SQLSTATE 22000): the same
    bad-message path as a refusal by the server."""
    now = datetime.now(UTC)
    entries = [
        Entry(StoredMessage("telemetry.t", b"{}", FakeMetadata(FakeSequence(seq))),
              Reading("dev-\ud800" if seq == 3 else f"dev-{seq}",
                      now + timedelta(milliseconds=seq), '{"t":1}'))
        for seq in range(1, 9)
    ]

    async def commit(part: list[Entry]):
        return await commit_batch(connection, BatchRows.of(part, 1024), 10)

    result = loop.run(commit_isolating(entries, commit))
    assert (result.stored, result.quarantined) == (7, 1)
    assert database.sql("SELECT stream_seq, reason FROM quarantine") == \
        "3|rejected_by_database_22000"
