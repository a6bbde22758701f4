"""ingest_iot's message validation, without the network."""

import json
from datetime import UTC, datetime

import pytest

from services.ingest_iot.telemetry import Reading, Rejection, parse_reading

LIMIT = 65_536


def parse(document) -> Reading | Rejection:
    payload = document if isinstance(document, bytes) else json.dumps(document).encode()
    return parse_reading(payload, LIMIT)


def valid(**changes) -> dict:
    document = {"device_id": "dev-1", "ts": "2026-03-01T12:00:00.250Z",
                "metrics": {"temperature": 21.5, "count": 3}}
    document.update(changes)
    return document


def test_valid_reading_is_parsed_with_utc_timestamp_and_canonical_metrics():
    reading = parse(valid())
    assert reading == Reading(
        "dev-1", datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC),
        '{"temperature":21.5,"count":3}')


def test_timestamp_offset_is_kept_as_an_instant():
    reading = parse(valid(ts="2026-03-01T14:00:00+02:00"))
    assert isinstance(reading, Reading)
    assert reading.ts == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (json.dumps({"ts": "2026-03-01T12:00:00Z", "metrics": {"t": 1}}).encode(),
         "missing_device_id"),
        (valid(device_id=""), "invalid_device_id"),
        (valid(device_id=42), "invalid_device_id"),
        (valid(device_id="a.b"), "invalid_device_id"),  # would break routes.<device_id>
        (valid(device_id="x" * 129), "invalid_device_id"),
        (json.dumps({"device_id": "d", "metrics": {"t": 1}}).encode(), "missing_ts"),
        (valid(ts="2026-03-01 12:00:00"), "invalid_ts"),  # no offset, no T
        (valid(ts="2026-03-01T12:00:00"), "invalid_ts"),  # no offset
        (valid(ts="yesterday"), "invalid_ts"),
        (valid(ts=1700000000), "invalid_ts"),
        (json.dumps({"device_id": "d", "ts": "2026-03-01T12:00:00Z"}).encode(),
         "missing_metrics"),
        (valid(metrics={}), "invalid_metrics"),
        (valid(metrics=[1, 2]), "invalid_metrics"),
        (valid(metrics={"t": "hot"}), "invalid_metrics"),
        (valid(metrics={"t": True}), "invalid_metrics"),
        (valid(metrics={"t": None}), "invalid_metrics"),
        (b'{"device_id":"d","ts":"2026-03-01T12:00:00Z","metrics":{"t":NaN}}',
         "invalid_metrics"),
        (b'{"device_id":"d","ts":"2026-03-01T12:00:00Z","metrics":{"t":Infinity}}',
         "invalid_metrics"),
        (valid(metrics={"t": 10**400}), "invalid_metrics"),
        (valid(metrics={"": 1}), "invalid_metrics"),
    ],
)
def test_invalid_message_is_rejected_with_its_reason(payload, reason):
    assert parse(payload) == Rejection(reason)


def test_payload_over_the_limit_is_rejected_before_parsing():
    oversized = json.dumps(valid(padding="x" * LIMIT)).encode()
    assert parse_reading(oversized, LIMIT) == Rejection("payload_too_large")
