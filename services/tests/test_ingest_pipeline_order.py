"""ingest_iot's pipelined writer, without the network: the order of commits and acks.

The writer is driven through its own queue with batches of real reading payloads; its commit
(the database statement) and its acks (the NATS publishes) are replaced by recorders that
take a while, so that the overlaps the pipeline allows, and those it must never allow, would
show. What the real database and NATS make of it is tested in test_ingest*.py."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from services.common.config import Env
from services.common.health import HealthState
from services.common.messaging import NatsLink
from services.ingest_iot.config import IngestConfig
from services.ingest_iot.pipeline import END_OF_FETCH, IngestPipeline
from services.ingest_iot.store import CommitResult, Entry

BATCH = 50
BATCHES = 8


@dataclass
class Message:
    subject: str
    data: bytes
    sequence: int


def batch_of(number: int) -> list[Message]:
    now = datetime.now(UTC).isoformat()
    return [Message("telemetry.dev-1",
                    json.dumps({"device_id": "dev-1", "ts": now,
                                "metrics": {"n": number * BATCH + index}}).encode(),
                    number * BATCH + index)
            for index in range(BATCH)]


def run_writer(commit_seconds: float, ack_seconds: float, fail_commit: int | None = None,
               events: list[tuple[str, int]] | None = None) -> list[tuple[str, int]]:
    """Every event in order: (what, batch number), also into `events` as they happen."""
    events = [] if events is None else events

    async def scenario() -> None:
        env = Env({"DATABASE_URL": "postgresql://ingest@127.0.0.1:1/iot",
                   "NATS_URL": "nats://127.0.0.1:1", "BATCH_SIZE": str(BATCH),
                   "FLUSH_INTERVAL_MS": "10"})
        config = IngestConfig.from_env(env)
        health = HealthState("ingest-order")
        pipeline = IngestPipeline(config, health, NatsLink(config.nats, "order", health))

        async def store(entries: list[Entry]) -> CommitResult:
            number = entries[0].message.sequence // BATCH
            events.append(("commit started", number))
            await asyncio.sleep(commit_seconds)
            if number == fail_commit:
                raise KeyError("a bug in the commit")
            events.append(("commit finished", number))
            return CommitResult(stored=len(entries), quarantined=0)

        async def acknowledge(batch: list[Message]) -> None:
            number = batch[0].sequence // BATCH
            events.append(("acks started", number))
            await asyncio.sleep(ack_seconds)
            events.append(("acks finished", number))

        pipeline._store = store  # type: ignore[method-assign]
        pipeline._consumer.acknowledge = acknowledge  # type: ignore[method-assign]

        async def feed() -> None:
            for number in range(BATCHES):
                batch = batch_of(number)
                pipeline._budget.take(sum(len(message.data) for message in batch))
                await pipeline._fetched.put(batch)  # type: ignore[arg-type]
            await pipeline._fetched.put(END_OF_FETCH)

        feeding = asyncio.create_task(feed())
        try:
            await asyncio.wait_for(pipeline.run_writer(), 30)
        finally:
            feeding.cancel()
            assert pipeline._budget.used == 0 or fail_commit is not None

    asyncio.run(scenario())
    return events


def at(events: list[tuple[str, int]], what: str, number: int) -> int:
    return events.index((what, number))


def test_commits_run_one_at_a_time_in_batch_order():
    events = run_writer(commit_seconds=0.02, ack_seconds=0.02)
    starts = [number for what, number in events if what == "commit started"]
    assert starts == list(range(BATCHES))
    for number in range(BATCHES - 1):
        assert at(events, "commit finished", number) < at(events, "commit started", number + 1)


def test_a_batch_is_acked_only_after_its_commit_and_batches_are_acked_in_order():
    # Acks slower than commits: the next batch commits before this one's acks are done.
    events = run_writer(commit_seconds=0.01, ack_seconds=0.04)
    acks = [number for what, number in events if what == "acks started"]
    assert acks == list(range(BATCHES))
    for number in range(BATCHES):
        assert at(events, "commit finished", number) < at(events, "acks started", number)
    for number in range(BATCHES - 1):
        assert at(events, "acks finished", number) < at(events, "acks started", number + 1)


def test_the_next_commit_runs_while_a_committed_batch_is_acked():
    events = run_writer(commit_seconds=0.02, ack_seconds=0.03)
    overlapped = [number for number in range(BATCHES - 1)
                  if at(events, "commit started", number + 1) < at(events, "acks finished", number)]
    assert len(overlapped) >= BATCHES // 2


def test_at_most_one_batch_is_acked_while_the_next_commits():
    events = run_writer(commit_seconds=0.01, ack_seconds=0.05)
    for number in range(2, BATCHES):
        # Commit N starts only once batch N-2 has settled.
        assert at(events, "acks finished", number - 2) < at(events, "commit started", number)


def test_a_commit_that_fails_with_a_bug_acks_nothing_of_its_batch_and_ends_the_writer():
    events: list[tuple[str, int]] = []
    with pytest.raises(KeyError):
        run_writer(commit_seconds=0.01, ack_seconds=0.01, fail_commit=3, events=events)
    assert ("acks started", 3) not in events
    assert not any(what == "commit started" and number > 3 for what, number in events)
