"""ingest_iot's pipelined writer, without the network: the order of commits and acks.

The writer is driven through its own queue with batches of real reading payloads; its commit
(the database statement) and its acks (the NATS publishes) are replaced by recorders that
take a while, so that the overlaps the pipeline allows, and those it must never allow, would
show. A commit may carry several batches (group commit): events name a commit by its first
batch. What the real database and NATS make of it is tested in test_ingest*.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from services.common.config import Env
from services.common.health import HealthState
from services.common.messaging import NatsLink
from services.ingest_iot.config import IngestConfig
from services.ingest_iot.pipeline import END_OF_FETCH, GROUPED_BATCHES, IngestPipeline
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


def offline_pipeline() -> IngestPipeline:
    """An ingest pipeline whose database and NATS are never reached (tests replace them)."""
    env = Env({"DATABASE_URL": "postgresql://ingest@127.0.0.1:1/iot",
               "NATS_URL": "nats://127.0.0.1:1", "BATCH_SIZE": str(BATCH),
               "FLUSH_INTERVAL_MS": "10"})
    config = IngestConfig.from_env(env)
    health = HealthState("ingest-order")
    return IngestPipeline(config, health, NatsLink(config.nats, "order", health))


def run_writer(commit_seconds: float, ack_seconds: float, *, fail_commit: int | None = None,
               events: list[tuple[str, int]] | None = None, feed_pause: float = 0.0,
               groups: dict[int, list[int]] | None = None) -> list[tuple[str, int]]:
    """Every event in order: (what, number of the commit's first batch), also into `events`
    as they happen; `groups` gets each commit's batch numbers, by its first. `feed_pause`:
    seconds between two fetched batches (0: all at hand at once)."""
    events = [] if events is None else events
    groups = {} if groups is None else groups

    async def scenario() -> None:
        pipeline = offline_pipeline()

        async def store(entries: list[Entry]) -> CommitResult:
            numbers = sorted({entry.message.sequence // BATCH for entry in entries})
            number = numbers[0]
            groups[number] = numbers
            events.append(("commit started", number))
            await asyncio.sleep(commit_seconds)
            if fail_commit in numbers:
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
                await asyncio.sleep(feed_pause)
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


def commits(events: list[tuple[str, int]]) -> list[int]:
    """The commits in the order they started, each by its first batch's number."""
    return [number for what, number in events if what == "commit started"]


def test_commits_run_one_at_a_time_in_batch_order_each_batch_once():
    groups: dict[int, list[int]] = {}
    events = run_writer(commit_seconds=0.02, ack_seconds=0.02, groups=groups)
    started = commits(events)
    assert [number for first in started for number in groups[first]] == list(range(BATCHES))
    for first, following in itertools.pairwise(started):
        assert at(events, "commit finished", first) < at(events, "commit started", following)


def test_a_batch_is_acked_only_after_its_commit_and_batches_are_acked_in_order():
    # Acks slower than commits: the next batch commits before this one's acks are done.
    events = run_writer(commit_seconds=0.01, ack_seconds=0.04)
    started = commits(events)
    assert [number for what, number in events if what == "acks started"] == started
    for first in started:
        assert at(events, "commit finished", first) < at(events, "acks started", first)
    for first, following in itertools.pairwise(started):
        assert at(events, "acks finished", first) < at(events, "acks started", following)


def test_the_next_commit_runs_while_a_committed_batch_is_acked():
    # Batches arrive about as fast as they commit: no groups, every batch its own commit.
    events = run_writer(commit_seconds=0.02, ack_seconds=0.03, feed_pause=0.02)
    started = commits(events)
    overlapped = [first for first, following in itertools.pairwise(started)
                  if at(events, "commit started", following) < at(events, "acks finished", first)]
    assert len(overlapped) >= len(started) // 2


def test_at_most_one_batch_is_acked_while_the_next_commits():
    events = run_writer(commit_seconds=0.01, ack_seconds=0.05)
    started = commits(events)
    for before, first in zip(started, started[2:], strict=False):
        # Commit N starts only once commit N-2 has settled.
        assert at(events, "acks finished", before) < at(events, "commit started", first)


def test_batches_at_hand_join_a_commit_while_the_one_before_runs_up_to_the_group_limit():
    groups: dict[int, list[int]] = {}
    run_writer(commit_seconds=0.05, ack_seconds=0.0, groups=groups)
    sizes = [len(numbers) for numbers in groups.values()]
    assert max(sizes) == GROUPED_BATCHES  # all at hand: the slow commit gathers a full group
    assert all(size <= GROUPED_BATCHES for size in sizes)


def test_a_writer_that_keeps_up_commits_every_batch_on_its_own():
    groups: dict[int, list[int]] = {}
    run_writer(commit_seconds=0.005, ack_seconds=0.0, feed_pause=0.05, groups=groups)
    assert list(groups.values()) == [[number] for number in range(BATCHES)]


def test_a_commit_that_fails_with_a_bug_acks_nothing_of_its_batch_and_ends_the_writer():
    events: list[tuple[str, int]] = []
    groups: dict[int, list[int]] = {}
    with pytest.raises(KeyError):
        run_writer(commit_seconds=0.01, ack_seconds=0.01, fail_commit=3, events=events,
                   groups=groups)
    failed = next(first for first, numbers in groups.items() if 3 in numbers)
    assert ("acks started", failed) not in events
    assert not any(what == "commit started" and number > failed for what, number in events)


def test_a_writer_cancelled_while_it_gathers_a_group_leaves_later_batches_in_the_queue():
    """Cancelled (shutdown) while it waits for either its commit or more messages: no get of
    the queue outlives it to take a batch that nobody would then commit or ack."""

    async def scenario() -> int:
        pipeline = offline_pipeline()

        async def store(entries: list[Entry]) -> CommitResult:
            await asyncio.sleep(30)  # a commit that outlasts the test
            return CommitResult(stored=len(entries), quarantined=0)

        pipeline._store = store  # type: ignore[method-assign]
        for number in range(2):
            await pipeline._fetched.put(batch_of(number))  # type: ignore[arg-type]
        writer = asyncio.create_task(pipeline.run_writer())
        await asyncio.sleep(0.2)  # batch 0 commits; batch 1 waits to be joined by more
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await pipeline._fetched.put(batch_of(2))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        return pipeline._fetched.qsize()

    assert asyncio.run(scenario()) == 1
