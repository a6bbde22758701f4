"""Worker decisions that need no network: notification ranges, retry delays, route
messages, backoff."""

from datetime import UTC, datetime

import pytest

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
