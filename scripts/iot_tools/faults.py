"""Watching a service through a fault: its probes and memory sampled in the background, the
readings it must account for, and a TCP proxy that can make a NATS client's server look as if
it closed the connection with an error.

The four invariants of the fault catalogue (README: Fault catalogue):
  I1 liveness (/health) never fails because of a dependency or a message;
  I2 readiness (/ready) answers 503 within a bound once the service cannot work, 200 within a
     bound once it can again;
  I3 every published reading is stored or quarantined exactly once;
  I4 memory (RSS of the service process) stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats

from iot_tools.services import ServiceProcess, http_get, wait_until


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.monotonic()
    health: int | None  # None: no answer (refused, reset, timed out)
    ready: int | None
    ready_seconds: float  # how long /ready took to answer
    rss_mb: float | None  # None once the process is gone


def rss_mb(pid: int) -> float | None:
    """Resident set size of `pid` in MiB (VmRSS), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Invariants:
    """Samples a service's /health, /ready and RSS every `interval` seconds from a thread.

    Use as a context manager; `mark()` notes the moment of a fault or a recovery, and the
    queries below measure from such a moment. A probe that does not answer within
    `probe_timeout` counts as a failed sample (the kubelet would count it so).
    """

    def __init__(self, service: ServiceProcess, interval: float = 0.15,
                 probe_timeout: float = 3.0) -> None:
        self.service = service
        self.interval = interval
        self.probe_timeout = probe_timeout
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="invariants", daemon=True)
        self.started_at = 0.0

    def __enter__(self) -> Invariants:
        self.started_at = time.monotonic()
        self._thread.start()
        # One sample before the caller goes on, so every query has a baseline.
        wait_until(lambda: bool(self.snapshot()), timeout=10, interval=0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.probe_timeout * 2 + 5)

    def _run(self) -> None:
        port, pid = self.service.port, self.service.pid
        while not self._stop.is_set():
            began = time.monotonic()
            health = http_get(port, "/health", self.probe_timeout)
            ready = http_get(port, "/ready", self.probe_timeout)
            sample = Sample(began, health.status, ready.status, ready.seconds, rss_mb(pid))
            with self._lock:
                self.samples.append(sample)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def snapshot(self, since: float = 0.0, until: float = float("inf")) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if since <= s.at <= until]

    @staticmethod
    def mark() -> float:
        return time.monotonic()

    # -- I1 ----------------------------------------------------------------------------

    def health_failures(self, until: float = float("inf")) -> list[Sample]:
        return [s for s in self.snapshot(until=until) if s.health != 200]

    def assert_live(self, until: float = float("inf")) -> None:
        """I1: /health answered 200 at every sample (up to `until`)."""
        failures = self.health_failures(until)
        assert not failures, (
            f"/health failed at {len(failures)} of {len(self.snapshot(until=until))} samples, "
            f"first {failures[0].at - self.started_at:.2f} s into the watch: {failures[0]}\n"
            f"--- log ---\n{self.service.log_text()[-3000:]}")

    # -- I2 ----------------------------------------------------------------------------

    def wait_for(self, probe: str, status: int, after: float, timeout: float) -> float | None:
        """Seconds from `after` to the first sample at or after it whose `probe` ("health"
        or "ready") answered `status`; waits up to `timeout` seconds for one, else None."""
        def first() -> Sample | None:
            return next((s for s in self.snapshot(since=after)
                         if getattr(s, probe) == status), None)

        wait_until(lambda: first() is not None or time.monotonic() - after > timeout,
                   timeout + 1, interval=0.05)
        found = first()
        return None if found is None else found.at - after

    def wait_stable_ready(self, after: float, timeout: float, hold: float = 1.0) -> float | None:
        """Seconds from `after` to the start of the first run of /ready 200 samples lasting
        `hold` seconds with nothing else in between; None if none began within `timeout`."""
        def run_start() -> float | None:
            start = None
            for sample in self.snapshot(since=after):
                if sample.ready != 200:
                    start = None
                elif start is None:
                    start = sample.at
                elif sample.at - start >= hold:
                    return start
            return None

        wait_until(lambda: run_start() is not None or time.monotonic() - after > timeout + hold,
                   timeout + hold + 1, interval=0.05)
        start = run_start()
        if start is None or start - after > timeout:
            return None
        return start - after

    def ready_statuses(self, since: float, until: float) -> set[int | None]:
        return {s.ready for s in self.snapshot(since, until)}

    def slowest_ready(self, since: float = 0.0, until: float = float("inf")) -> float:
        return max((s.ready_seconds for s in self.snapshot(since, until)), default=0.0)

    # -- I4 ----------------------------------------------------------------------------

    def max_rss_mb(self) -> float:
        return max((s.rss_mb for s in self.snapshot() if s.rss_mb is not None), default=0.0)

    def describe(self) -> str:
        """One line per change of (health, ready): a readable timeline for failure messages."""
        lines, last = [], None
        for sample in self.snapshot():
            state = (sample.health, sample.ready)
            if state != last:
                lines.append(f"{sample.at - self.started_at:7.2f} s  health={sample.health} "
                             f"ready={sample.ready}  rss={sample.rss_mb or 0:.0f} MiB")
                last = state
        return "\n".join(lines)


def wait_accounted(count: Callable[[], int], expected: int, timeout: float,
                   settle: float = 1.0) -> int:
    """I3: wait until `count()` (rows stored + quarantined) reaches `expected`, then `settle`
    seconds more (a late arrival would be a duplicate), and return the final count."""
    wait_until(lambda: count() >= expected, timeout, interval=0.25)
    time.sleep(settle)
    return count()


async def _publish(url: str, payloads: list[tuple[str, bytes]]) -> None:
    connection = await nats.connect(url)
    try:
        js = connection.jetstream(timeout=10)
        for start in range(0, len(payloads), 500):
            await asyncio.gather(*(js.publish(subject, payload)
                                   for subject, payload in payloads[start:start + 500]))
    finally:
        await connection.close()


def publish_raw(url: str, payloads: list[tuple[str, bytes]]) -> None:
    """Publish to JetStream and wait for every ack, without creating the stream (unlike
    feed.publish_batch): fails if nobody has created it."""
    asyncio.run(_publish(url, payloads))


class TcpProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`, byte for byte.

    `send_to_clients(data)` writes `data` to every client connection and closes it: with
    `-ERR 'Authorization Violation'` the client sees what a NATS server sends a connection
    whose credentials it no longer accepts (expired, revoked), and nats-py closes that client
    for good instead of reconnecting.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket, threading.Lock]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, name="proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._accepter.start()
        return self

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), 2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            to_client = threading.Lock()
            with self._lock:
                self._pairs.append((client, upstream, to_client))
            threading.Thread(target=self._pump, args=(client, upstream, None),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, to_client),
                             daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, lock: threading.Lock | None) -> None:
        try:
            while data := source.recv(65536):
                if lock is None:
                    sink.sendall(data)
                else:
                    with lock:
                        sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def send_to_clients(self, data: bytes) -> int:
        """Write `data` to every open client connection, then close it. Returns how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        sent = 0
        for client, upstream, to_client in pairs:
            with to_client, contextlib.suppress(OSError):
                client.sendall(data)
                sent += 1
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        return sent

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.send_to_clients(b"")
