"""Poison telemetry: messages built to break a parser, a driver or the database, each on a
subject of its own under telemetry.poison.* — the marker the drill counts quarantine rows
by. Every kind is something a real fleet sends sooner or later (a firmware bug, a flipped
bit, a device whose clock reset or ran ahead)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

SUBJECT_PREFIX = "telemetry.poison."
DEVICE_PREFIX = "poison-"
DEFAULT_COUNT = 200


def _document(device: str, ts: str, metrics: object) -> dict:
    return {"device_id": device, "ts": ts, "metrics": metrics}


def _json(document: object) -> bytes:
    # ensure_ascii: a lone surrogate or a NUL travels as a valid JSON escape ("\ud800",
    # "\u0000"), which parses — the value itself is what the database refuses.
    return json.dumps(document, ensure_ascii=True).encode()


def _raw_value(device: str, ts: str, raw: bytes) -> bytes:
    """A reading whose metric value is `raw`, spliced in as it is (not valid for json.dumps)."""
    return _json(_document(device, ts, {"t": _SLOT})).replace(
        json.dumps(_SLOT).encode(), raw)


_SLOT = "@value@"


def _kinds(now: datetime) -> list[tuple[str, Callable[[str], bytes]]]:
    ts = now.isoformat()
    return [
        ("nul-in-metric-name", lambda d: _json(_document(d, ts, {"t\u0000": 1.0}))),
        ("lone-surrogate-in-metric-name",
         lambda d: _json(_document(d, ts, {"\ud800": 1.0}))),
        ("3000-nested-brackets", lambda _d: b"[" * 3000 + b"]" * 3000),
        ("3000-nested-in-metrics",
         lambda d: _raw_value(d, ts, b"[" * 3000 + b"1" + b"]" * 3000)),
        ("year-1-before-utc", lambda d: _json(_document(d, "0001-01-01T00:00:00+01:00",
                                                        {"t": 1.0}))),
        ("ten-years-ahead", lambda d: _json(_document(
            d, (now + timedelta(days=3653)).isoformat(), {"t": 1.0}))),
        ("number-1e400", lambda d: _raw_value(d, ts, b"1e400")),
        ("number-minus-1e400", lambda d: _raw_value(d, ts, b"-1e400")),
        ("invalid-utf8", lambda d: _json(_document(d, ts, {"t@": 1.0})).replace(
            b"t@", b"t\xff\xfe")),
        ("empty", lambda _d: b""),
    ]


def kind_names() -> list[str]:
    return [name for name, _build in _kinds(datetime.now(UTC))]


def poison_messages(count: int = DEFAULT_COUNT,
                    now: datetime | None = None) -> list[tuple[str, bytes]]:
    """`count` (subject, payload) pairs cycling through every kind; subject
    telemetry.poison.<n>.<kind>, device poison-<n>: one of each per message, so a row
    quarantined twice or a message stored shows by its subject."""
    kinds = _kinds(now or datetime.now(UTC))
    messages = []
    for number in range(count):
        kind, build = kinds[number % len(kinds)]
        messages.append((f"{SUBJECT_PREFIX}{number:04d}.{kind}",
                         build(f"{DEVICE_PREFIX}{number:04d}")))
    return messages
