"""Worker decisions that need no network: notification ranges, retry delays, route
messages, backoff."""

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.retry import Backoff
from services.evaluator_iot.rules import TimeRange, parse_notification
from services.route_delivery.delivery import parse_route_message, retry_delay


def test_notification_payload_from_postgres_json_is_parsed():
    span = parse_notification(
        '{"from" : "2026-01-01T00:00:00.5+00:00", "to" : "2026-01-01T00:01:00+00:00", '
        '"rows" : 3}')
    assert span == TimeRange(datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC),
                             datetime(2026, 1, 1, 0, 1, tzinfo=UTC))


@pytest.mark.parametrize("payload", ["", "{}", '{"from": 1, "to": 2}', "[]",
                                     '{"from": "2026-01-02T00:00:00+00:00", '
                                     '"to": "2026-01-01T00:00:00+00:00"}'])
def test_malformed_notification_is_ignored(payload):
    assert parse_notification(payload) is None


def test_ranges_union_to_the_covering_range():
    a = TimeRange(datetime(2026, 1, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 2, tzinfo=UTC))
    b = TimeRange(datetime(2026, 1, 1, 0, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC))
    assert a.union(b) == TimeRange(b.first, a.last)
    assert a.union(None) == a


def test_retry_delay_doubles_up_to_the_maximum():
    assert [retry_delay(n, 1.0, 5.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_route_message_needs_an_integer_route_and_a_device():
    assert parse_route_message(b'{"route_id": 3, "device_id": "d"}').route_id == 3
    assert parse_route_message(b'{"route_id": "3", "device_id": "d"}') is None
    assert parse_route_message(b'{"device_id": "d"}') is None
    assert parse_route_message(b"junk") is None


def test_backoff_grows_with_jitter_and_resets():
    backoff = Backoff(initial=1.0, maximum=8.0)
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(ceiling / 2 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings,
                                                                          strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 1.0


_MESSAGE_BYTES = st.one_of(
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.builds(lambda route, device: json.dumps({"route_id": route, "device_id": device}).encode(),
              st.one_of(st.integers(), st.floats(), st.text(), st.none()),
              st.one_of(st.text(), st.integers(), st.none())),
)


@settings(max_examples=300, deadline=None)
@given(data=_MESSAGE_BYTES)
def test_a_route_message_of_any_bytes_is_parsed_or_refused_never_raises(data):
    parsed = parse_route_message(data)
    assert parsed is None or (type(parsed.route_id) is int and 0 < parsed.route_id < 2**63)


@settings(max_examples=300, deadline=None)
@given(data=_MESSAGE_BYTES)
def test_a_notification_of_any_text_is_parsed_or_refused_never_raises(data):
    span = parse_notification(data.decode("utf-8", errors="replace"))
    assert span is None or span.first <= span.last
