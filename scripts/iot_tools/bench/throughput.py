"""Ingest throughput, JetStream → committed rows with ack after commit: the real ingest_iot
and the two reference consumers, every run from the same pre-published readings and the same
database state (telemetry truncated, checkpoint taken, so no run pays for another's WAL).
Two component runs take ingest_iot's own code apart: validation alone (parse_reading over the
same payloads) and the commit alone (commit_batch of the same rows, batch by batch).

The rate of a run is read from the rows themselves (iot_tools.bench.windows): from the first
transaction's start to the last one's, free of start-up and of any polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from iot_tools.bench import cpu, jetstream
from iot_tools.bench.labels import COMMIT_ONLY, VALIDATION_ONLY
from iot_tools.bench.stack import Stack
from iot_tools.bench.windows import Split, Transaction, Window, split, steady_rate, transactions
from services.ingest_iot.config import IngestConfig
from services.ingest_iot.pipeline import COMMIT_TIMEOUT_SECONDS
from services.ingest_iot.store import BatchRows, commit_batch
from services.ingest_iot.telemetry import Reading, ReadingLimits, parse_reading

POLL_SECONDS = 0.05

RUN_TIMEOUT_SECONDS = 300


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class RunResult:
    variant: str
    messages: int
    rate: float  # messages/s, steady state
    wall_seconds: float  # replay (or process start) to the last ack
    # Cores used from the first delivery to the last ack (ingest runs): per process tree
    # and for the whole machine.
    cores: dict[str, float] = field(default_factory=dict)
    # Probe traffic switched on and off within the run: rows and seconds of each state.
    split: Split | None = None


def fresh_table(stack: Stack) -> None:
    stack.psql("TRUNCATE telemetry")
    stack.psql("CHECKPOINT")


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {RUN_TIMEOUT_SECONDS} s")
        time.sleep(POLL_SECONDS)


def _committed(stack: Stack, variant: str, messages: int) -> list[Transaction]:
    """The run's transactions, after checking that every message became exactly one row."""
    run = transactions(stack.psql)
    rows = sum(transaction.rows for transaction in run)
    if rows != messages:
        raise BenchError(f"{variant}: {rows} rows committed for {messages} messages")
    return run


SplitBy = Callable[[list[Transaction]], list[Window]]


def ingest_run(
    stack: Stack,
    consumer: jetstream.ConsumerSettings,
    variant: str,
    messages: int,
    during: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    *,
    split_by: SplitBy | None = None,
) -> RunResult:
    """Replay the stream through ingest_iot's durable consumer; `during` (probe traffic, a
    latency sampler) runs from the first delivery to the last ack. `split_by` gives the
    windows (from the run's transactions) whose rows are split into "on" and "off"."""
    assert stack.nats is not None
    port = stack.nats.monitor_port
    fresh_table(stack)
    started = time.monotonic()
    jetstream.replay(stack.nats.url, consumer)

    def delivering() -> bool:
        state = jetstream.progress(port, consumer.durable)
        return state is not None and (state.ack_pending > 0 or state.acked_through > 0)

    _wait(delivering, "the first delivery to ingest_iot")
    roots = stack.process_roots()
    with during():
        before = cpu.snapshot(roots)
        _wait(lambda: (state := jetstream.progress(port, consumer.durable)) is not None
              and state.done, "ingest_iot draining the stream")
        after = cpu.snapshot(roots)
    wall = time.monotonic() - started
    run = _committed(stack, variant, messages)
    return RunResult(variant, messages, steady_rate(run), wall, cpu.cores_used(before, after),
                     split(run, split_by(run)) if split_by else None)


def reference_run(stack: Stack, kind: str, messages: int) -> RunResult:
    """One of iot_tools.bench.consumers in a process of its own."""
    fresh_table(stack)
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "iot_tools.bench.consumers", kind,
         "--durable", f"bench-{kind}", "--messages", str(messages)],
        env={**os.environ, **stack.env}, capture_output=True, text=True,
        timeout=RUN_TIMEOUT_SECONDS, check=False)
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise BenchError(f"{kind} consumer failed:\n{process.stderr[-3000:]}")
    reported = json.loads(process.stdout)
    if kind in ("ceiling", "fetch-ceiling"):
        return RunResult(kind, int(reported["messages"]), float(reported["rate"]), wall)
    # Measured like ingest_iot's: from the rows.
    return RunResult(kind, messages, steady_rate(_committed(stack, kind, messages)), wall)


def validation_run(payloads: jetstream.Payloads, limits: ReadingLimits) -> RunResult:
    """ingest_iot's validation (JSON, device id, timestamp, metrics) alone, in this process."""
    started = time.perf_counter()
    window = limits.window(datetime.now(UTC))
    for _subject, payload in payloads:
        parse_reading(payload, limits, window)
    seconds = time.perf_counter() - started
    return RunResult(VALIDATION_ONLY, len(payloads), len(payloads) / seconds, seconds)


async def _commit_all(url: str, batches: list[BatchRows]) -> float:
    connection = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        for rows in batches:
            await commit_batch(connection, rows, COMMIT_TIMEOUT_SECONDS)
        return time.perf_counter() - started
    finally:
        await connection.close()


def commit_run(stack: Stack, payloads: jetstream.Payloads, config: IngestConfig) -> RunResult:
    """ingest_iot's commit statement alone: the same rows in the same batches, one after the
    other on one connection, as its writer commits them (validation done beforehand)."""
    assert stack.postgres is not None
    window = config.reading_limits.window(datetime.now(UTC))
    parsed = [parse_reading(payload, config.reading_limits, window)
              for _subject, payload in payloads]
    batches = []
    for start in range(0, len(parsed), config.batch_size):
        rows = BatchRows()
        for reading in parsed[start:start + config.batch_size]:
            assert isinstance(reading, Reading)
            rows.add_reading(reading)
        batches.append(rows)
    fresh_table(stack)
    seconds = asyncio.run(_commit_all(stack.postgres.url_with_password, batches))
    return RunResult(COMMIT_ONLY, len(parsed), len(parsed) / seconds, seconds)
