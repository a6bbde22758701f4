"""Telemetry message validation: pure functions, no I/O.

A message is JSON `{"device_id": str, "ts": RFC 3339 timestamp, "metrics": {name: number}}`.
Anything else is rejected with a short machine-readable reason and quarantined.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime

# device_id becomes part of a NATS subject (routes.<device_id>): no dots, spaces or wildcards.
DEVICE_ID = re.compile(r"[A-Za-z0-9_\-:]{1,128}")
METRIC_NAME_MAX = 128
METRICS_MAX = 256


@dataclass(frozen=True, slots=True)
class Reading:
    device_id: str
    ts: datetime
    metrics_json: str  # canonical JSON of the metrics object, stored as jsonb


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str


def parse_reading(payload: bytes, max_payload_bytes: int) -> Reading | Rejection:
    if len(payload) > max_payload_bytes:
        return Rejection("payload_too_large")
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return Rejection("invalid_json")
    if not isinstance(document, dict):
        return Rejection("not_an_object")

    device_id = document.get("device_id")
    if device_id is None:
        return Rejection("missing_device_id")
    if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
        return Rejection("invalid_device_id")

    raw_ts = document.get("ts")
    if raw_ts is None:
        return Rejection("missing_ts")
    ts = _parse_rfc3339(raw_ts)
    if ts is None:
        return Rejection("invalid_ts")

    metrics = document.get("metrics")
    if metrics is None:
        return Rejection("missing_metrics")
    if not _valid_metrics(metrics):
        return Rejection("invalid_metrics")
    return Reading(device_id, ts, json.dumps(metrics, separators=(",", ":")))


def _parse_rfc3339(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40 or "T" not in value.upper():
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # RFC 3339 requires an offset; a naive time would be stored in the server's zone.
    return parsed if parsed.tzinfo is not None else None


def _valid_metrics(metrics: object) -> bool:
    if not isinstance(metrics, dict) or not 0 < len(metrics) <= METRICS_MAX:
        return False
    for name, value in metrics.items():
        if not name or len(name) > METRIC_NAME_MAX:
            return False
        # bool is an int subclass, NaN/Infinity parse from JSON but are not numbers, and
        # a huge integer would break every float8 comparison the evaluator makes.
        if type(value) not in (int, float):
            return False
        try:
            if not math.isfinite(float(value)):
                return False
        except OverflowError:
            return False
    return True
