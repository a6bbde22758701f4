"""ingest_iot's message validation, without the network."""

import json
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest_iot import telemetry
from services.ingest_iot.telemetry import (
    Reading,
    ReadingLimits,
    Rejection,
    _canonical,
    parse_reading,
)

LIMIT = 65_536
LIMITS = ReadingLimits(LIMIT, max_age=timedelta(days=30), max_future=timedelta(minutes=5))
# Validation runs against a clock; these tests pin it just after the readings they send.
NOW = datetime(2026, 3, 1, 12, 1, tzinfo=UTC)
WINDOW = LIMITS.window(NOW)


def parse(document) -> Reading | Rejection:
    payload = document if isinstance(document, bytes) else json.dumps(document).encode()
    return parse_reading(payload, LIMITS, WINDOW)


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
        (valid(metrics={"": 1}), "invalid_metric_name"),
        (valid(metrics={"t\u0000": 1}), "invalid_metric_name"),  # jsonb refuses NUL
        (b'{"device_id":"d","ts":"2026-03-01T12:00:00Z","metrics":{"t\\ud800":1}}',
         "invalid_metric_name"),  # a lone surrogate cannot be UTF-8
        (valid(metrics={"x" * 129: 1}), "invalid_metric_name"),
        (b"[" * 3000 + b"]" * 3000, "too_deep"),
        (b'{"a":' * 3000 + b"1" + b"}" * 3000, "too_deep"),
        (valid(ts="0001-01-01T00:00:00+01:00"), "invalid_ts"),  # before year 1 in UTC
        (valid(ts="9999-12-31T23:59:59-01:00"), "invalid_ts"),  # after year 9999 in UTC
        (valid(ts="2026-03-01T12:00:00+00:00" + "0" * 40), "invalid_ts"),
        (valid(ts="2026-03-01T12:07:00Z"), "ts_out_of_range"),  # a clock 6 min fast
        (valid(ts="2026-01-01T00:00:00Z"), "ts_out_of_range"),  # older than 30 days
        (valid(ts="2126-03-01T12:00:00Z"), "ts_out_of_range"),
        (b"", "invalid_json"),
        (b"1e400", "not_an_object"),
        (valid(metrics={"t": 1e308 * 10}), "invalid_metrics"),
    ],
)
def test_invalid_message_is_rejected_with_its_reason(payload, reason):
    assert parse(payload) == Rejection(reason)


def test_payload_over_the_limit_is_rejected_before_parsing():
    oversized = json.dumps(valid(padding="x" * LIMIT)).encode()
    assert parse_reading(oversized, LIMITS, WINDOW) == Rejection("payload_too_large")


# The fast paths (orjson first, json for what it refuses or may read differently) must change
# nothing: every payload gets the outcome it gets with json.loads, and the values written are
# those json.dumps writes.

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be",
                             "utf-32", "utf-32-le", "utf-32-be"])


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.binary(max_size=64),
    st.builds(lambda value, encoding: json.dumps(value).encode(encoding, "surrogatepass"),
              JSON_VALUES, ENCODINGS),
    st.builds(lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8",
                                                                         "surrogatepass"),
              JSON_VALUES),
    # Reading-shaped, with integers of any size among the metrics (orjson reads those
    # beyond 64 bits as floats).
    st.builds(lambda metrics: json.dumps({"device_id": "d", "ts": "2026-03-01T12:00:00Z",
                                          "metrics": metrics}).encode(),
              st.dictionaries(st.text(max_size=4), st.integers() | st.floats()
                              | st.integers(min_value=2**62, max_value=2**70), max_size=4)),
))
def test_fast_parse_decides_every_payload_as_json_loads_does(payload):
    with mock.patch.object(telemetry, "_loads", json.loads):
        expected = parse(payload)
    assert parse(payload) == expected


def test_deep_nesting_is_still_too_deep_past_orjson():
    assert parse(b'{"metrics":' + b"[" * 20_000 + b"]" * 20_000 + b"}") == Rejection(
        "too_deep")


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(
    st.text(min_size=1, max_size=16),
    st.integers() | st.floats(allow_nan=False, allow_infinity=False),
    min_size=1, max_size=8))
def test_canonical_metrics_hold_the_values_json_dumps_writes(metrics):
    written = _canonical(metrics)
    assert json.loads(written) == json.loads(json.dumps(metrics, separators=(",", ":")))


def test_an_integer_beyond_64_bits_is_written_digit_for_digit():
    reading = parse(valid(metrics={"huge": 10**30}))
    assert isinstance(reading, Reading)
    assert reading.metrics_json == '{"huge":1000000000000000000000000000000}'
