"""Webhook signatures: HMAC-SHA256 over `<timestamp>.<body>` with the route's secret.

Headers (see README: Security model, Webhooks, for the receiver's side):
    X-IoT-Timestamp: <unix seconds>
    X-IoT-Signature: v1=<lowercase hex HMAC-SHA256>
The key is the route's `webhook_secret` as stored (ASCII hex), encoded as UTF-8. The
timestamp is inside the signed text, so a receiver that refuses old timestamps also
refuses replays of captured requests. "v1=" names the scheme, so a later scheme can be sent
beside it during a migration.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-IoT-Timestamp"
SIGNATURE_HEADER = "X-IoT-Signature"
SCHEME = "v1"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The two signature headers for one request (signed again on every attempt, so a
    retry carries a fresh timestamp)."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: f"{SCHEME}={signature(secret, timestamp, body)}"}
