"""Simulated device telemetry published to JetStream, in bursts or as a steady stream
that rides out NATS outages (every reading is retried until JetStream acknowledges it)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import nats
import nats.errors

from services.common.messaging import TELEMETRY, ensure_stream

# Reading n carries the timestamp EPOCH + n ms. Ingest quarantines readings outside a window
# around now (ts_out_of_range: older than TS_MAX_AGE_SECONDS, 30 days by default), so the
# epoch is recent: the start of the current hour a day ago, fixed once per process.
EPOCH = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)


def reading(
    index: int, devices: int = 20, metric_value: float | None = None, epoch: datetime = EPOCH
) -> dict:
    """Reading number `index`: unique (device_id, ts) for every index. The default epoch is
    recent, inside ingest's timestamp window and ops_worker's retention."""
    return {
        "device_id": f"dev-{index % devices:04d}",
        "ts": (epoch + timedelta(milliseconds=index)).isoformat().replace("+00:00", "Z"),
        "metrics": {"temperature": metric_value if metric_value is not None
                    else 20 + (index % 100) / 10, "humidity": 40 + index % 30},
    }


def encode(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


async def ensure_telemetry_stream(js) -> None:
    """The stream ingest_iot creates (same definition), so a feeder may start first."""
    await ensure_stream(js, TELEMETRY)


async def publish_batch(nats_url: str, payloads: list[tuple[str, bytes]]) -> None:
    """Publish (subject, payload) pairs and wait for every JetStream ack."""
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        await ensure_telemetry_stream(js)
        for start in range(0, len(payloads), 1000):
            await asyncio.gather(*(js.publish(subject, payload)
                                   for subject, payload in payloads[start:start + 1000]))
    finally:
        await connection.close()


def publish_readings(nats_url: str, indices: range, devices: int = 20) -> int:
    payloads = [(f"telemetry.{doc['device_id']}", encode(doc))
                for doc in (reading(i, devices) for i in indices)]
    asyncio.run(publish_batch(nats_url, payloads))
    return len(payloads)


class SteadyFeed:
    """Publishes readings at `rate` per second from a thread until stopped.

    A reading counts as published once JetStream acks it; on failure the same reading is
    retried with the same Nats-Msg-Id (JetStream de-duplicates it within its window), so
    `published` is exactly the set a lossless pipeline must end up storing.
    """

    def __init__(self, nats_url: str, rate: float, devices: int = 20, start_index: int = 0):
        self._url = nats_url
        self._rate = rate
        self._devices = devices
        self.next_index = start_index
        self.published = 0
        self.retries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-feed", daemon=True)

    def __enter__(self) -> SteadyFeed:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        asyncio.run(self._feed())

    async def _feed(self) -> None:
        connection = await nats.connect(self._url, max_reconnect_attempts=-1,
                                        reconnect_time_wait=0.2, error_cb=_quiet,
                                        ping_interval=1, max_outstanding_pings=2)
        js = connection.jetstream(timeout=2)
        await self._retry(lambda: ensure_telemetry_stream(js))
        interval = 1.0 / self._rate
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                document = reading(self.next_index, self._devices)
                await self._retry(lambda document=document: js.publish(
                    f"telemetry.{document['device_id']}", encode(document),
                    headers={"Nats-Msg-Id": f"feed-{self.next_index}"}))
                self.next_index += 1
                self.published += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            await connection.close()

    async def _retry(self, action) -> None:
        while True:
            try:
                await action()
                return
            except (nats.errors.Error, TimeoutError, OSError):
                self.retries += 1
                await asyncio.sleep(0.1)


async def _quiet(_error: Exception) -> None:
    pass
