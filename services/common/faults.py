"""The failure taxonomy: every loop in every service decides what an error means here, and
only here.

- dependency unavailable: connection refused or lost; SQLSTATE classes 08, 53, 57P, 58, XX
  and codes 57014, 25006, 28*, 3D000, 40001, 40P01, 55P03; timeouts; NATS disconnected,
  closed, no responders, JetStream API errors. The service backs off with jitter and
  retries; readiness is 503 naming the dependency; liveness is untouched.
- bad message: SQLSTATE classes 22 (data), 23 (integrity), 54 (program limit), where one
  message can be blamed. The message is quarantined with a reason and acked; work goes on.
- bug: everything else. The task crashes, and liveness fails.

Apart from these, a remote HTTP peer that fails (a webhook, the identity provider's JWKS
URL) is neither a dependency of the pod nor a bug: it is an outcome for the caller, which
records a failed attempt or keeps what it had (REMOTE_PEER_FAILURES), never readiness,
liveness or a crash.

Classifying by SQLSTATE class rather than by exception type keeps the table short and
complete: PostgreSQL adds codes inside a class, not new meanings for a class.
"""

from __future__ import annotations

import asyncio
import enum

import aiohttp
import asyncpg
import nats.errors


class Fault(enum.Enum):
    DEPENDENCY = "dependency unavailable"
    BAD_MESSAGE = "bad message"
    BUG = "bug"


# SQLSTATE prefixes (a class, or a class and subclass) meaning "the database cannot do this
# now; it may later": connection trouble, insufficient resources (too many connections, disk
# full, out of memory), operator intervention (admin shutdown, crash recovery, cannot
# connect now, query cancelled by statement_timeout), a read-only server (a failover to a
# standby), authentication failure (rotated credentials), a missing database, serialization
# failures and deadlocks, lock timeouts, system I/O errors and internal errors.
DEPENDENCY_SQLSTATES = (
    "08", "53", "57P", "57014", "25006", "28", "3D000", "40001", "40P01", "55P03", "58", "XX",
)
# Errors in the data itself: a value PostgreSQL refuses (22: bad encoding, out of range,
# invalid text for a type), a constraint (23), a value too large to process (54).
BAD_MESSAGE_SQLSTATES = ("22", "23", "54")


def sqlstate(error: BaseException) -> str | None:
    code = getattr(error, "sqlstate", None)
    return code if isinstance(code, str) else None


def classify(error: BaseException) -> Fault:
    """What `error` means for the loop that caught it."""
    if isinstance(error, asyncpg.PostgresError):
        code = sqlstate(error) or ""
        if code.startswith(DEPENDENCY_SQLSTATES):
            return Fault.DEPENDENCY
        if code.startswith(BAD_MESSAGE_SQLSTATES):
            return Fault.BAD_MESSAGE
        return Fault.BUG
    if isinstance(error, asyncpg.InterfaceError):
        # asyncpg refusing to encode a query argument ("invalid input for query argument")
        # is an InterfaceError that is also a ValueError: the data, before it left us.
        if isinstance(error, ValueError):
            return Fault.BAD_MESSAGE
        # "connection is closed" is the database going away under us; anything else
        # (another operation in progress, a closed pool used) is a bug in our code.
        return Fault.DEPENDENCY if "closed" in str(error) else Fault.BUG
    # asyncpg's protocol state machine raises InternalClientError ("cannot switch to state
    # 12; another operation (2) is in progress") when the server ends the session in the
    # middle of an operation, e.g. a PostgreSQL shutdown during a commit (seen by the drill;
    # MagicStack/asyncpg#1069, sqlalchemy#13241). Our connections serve one worker, one
    # operation at a time, so it is the database going away: the worker discards the
    # connection and retries on a new one. Misuse of a connection shows as the InterfaceError
    # above, which stays a bug.
    if isinstance(error, asyncpg.InternalClientError):
        return Fault.DEPENDENCY
    # nats.errors.Error covers connection closed, no servers, no responders, stale
    # connection, slow consumer, and (through nats.js.errors) JetStream API errors such as
    # "consumer not found": all the NATS side, none of them our bug.
    if isinstance(error, nats.errors.Error | OSError | asyncio.TimeoutError):
        return Fault.DEPENDENCY
    return Fault.BUG


def is_dependency_error(error: BaseException) -> bool:
    return classify(error) is Fault.DEPENDENCY


def is_bad_message_error(error: BaseException) -> bool:
    return classify(error) is Fault.BAD_MESSAGE


# A remote HTTP peer failed: refused, reset, TLS, a bad answer, a timeout, or a URL aiohttp
# cannot use (ValueError: the peer's address is data, not our code). Callers catch exactly
# this tuple around the one call to the peer.
REMOTE_PEER_FAILURES: tuple[type[BaseException], ...] = (
    aiohttp.ClientError, TimeoutError, ValueError)
