"""Probe traffic as the kubelet sends it, at a multiple of the chart's default rate: the
readiness and liveness probes of every component running in the bench (the five services,
NATS, PostgreSQL), each on its own period, HTTP probes on a new connection each time, exec
probes as a new process. Startup probes are left out: they stop once a container started."""

from __future__ import annotations

import contextlib
import heapq
import math
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import yaml

from iot_tools.bench import cpu
from iot_tools.bench.background import Background
from iot_tools.bench.stack import Stack
from iot_tools.bench.windows import Window, alternating
from iot_tools.helm import CHART_DIR
from iot_tools.servers import _postgres_bin
from iot_tools.services import http_get


@dataclass(frozen=True)
class ScheduledProbe:
    label: str
    period: float
    run: Callable[[], object]


def _period(values: dict, component: str | None, kind: str) -> float:
    """periodSeconds of a component's probe: its override, else the global default."""
    override = (values.get(component, {}).get("probes", {}).get(kind, {})
                if component else {})
    return float(override.get("periodSeconds", values["probes"][kind]["periodSeconds"]))


def _http(port: int, path: str) -> Callable[[], object]:
    return lambda: http_get(port, path, timeout=1.0)


def _tcp(port: int) -> Callable[[], object]:
    def connect() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            pass

    return connect


def _pg_isready(port: int) -> Callable[[], object]:
    command = [str(_postgres_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
    return lambda: subprocess.run(command, capture_output=True, check=False, timeout=3)


def kubelet_schedule(stack: Stack, factor: float) -> list[ScheduledProbe]:
    """The chart's default readiness and liveness probes, `factor` times as often."""
    assert stack.nats is not None and stack.postgres is not None
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    probes = values["probes"]
    schedule = []
    for name, service in stack.services.items():
        for kind in ("readiness", "liveness"):
            path = probes[kind]["httpGet"]["path"]
            schedule.append(ScheduledProbe(f"{name} {path}", _period(values, None, kind) / factor,
                                           _http(service.port, path)))
    nats_probes = values["nats"]["probes"]
    for kind in ("readiness", "liveness"):
        path = nats_probes[kind]["httpGet"]["path"]
        schedule.append(ScheduledProbe(f"nats {path}", _period(values, "nats", kind) / factor,
                                       _http(stack.nats.monitor_port, path)))
    # The chart: readiness runs pg_isready in the container, liveness is a TCP accept.
    schedule.append(ScheduledProbe("postgresql pg_isready",
                                   _period(values, "postgresql", "readiness") / factor,
                                   _pg_isready(stack.postgres.port)))
    schedule.append(ScheduledProbe("postgresql tcp",
                                   _period(values, "postgresql", "liveness") / factor,
                                   _tcp(stack.postgres.port)))
    return schedule


class ProbeTraffic(Background):
    """Runs a schedule from a background thread until stopped; probes run on a small pool so
    that a slow one (an exec) does not delay the others, as the kubelet's workers don't.

    With `blocks`, traffic alternates: `blocks` seconds on, `blocks` seconds off, and
    `windows` records which was which, so that one ingest run yields both rates and the
    comparison is free of the drift between runs. The schedule's clock runs only while on,
    so every probe keeps its own rate inside the "on" windows whatever its phase.
    """

    thread_name = "probe-traffic"

    def __init__(self, schedule: list[ScheduledProbe], *, blocks: float | None = None,
                 start_on: bool = True) -> None:
        super().__init__()
        self._schedule = schedule
        self._blocks = blocks
        self._start_on = start_on
        self.sent = 0
        self.windows: list[Window] = []

    @property
    def rate(self) -> float:
        """Probes per second the schedule asks for (while on)."""
        return sum(1 / probe.period for probe in self._schedule)

    def _on(self, block: int) -> bool:
        return (block % 2 == 0) == self._start_on

    def _on_before(self, block: int) -> int:
        """How many "on" blocks precede block number `block`."""
        return (block + 1) // 2 if self._start_on else block // 2

    def _run(self) -> None:
        began, epoch = time.monotonic(), time.time()
        # Spread the first probes over one period, as pods started at different times would.
        due = [(probe.period * index / len(self._schedule), index)
               for index, probe in enumerate(self._schedule)]
        heapq.heapify(due)
        length = self._blocks
        with ThreadPoolExecutor(4, thread_name_prefix="probe") as pool:
            while not self._stop.is_set():
                now = time.monotonic() - began
                if length is None:
                    block_end, schedule_now = math.inf, now
                else:
                    block = int(now // length)
                    block_end = (block + 1) * length
                    if not self._on(block):
                        self._stop.wait(block_end - now)
                        continue
                    schedule_now = self._on_before(block) * length + now - block * length
                at, index = due[0]
                if at > schedule_now:
                    self._stop.wait(min(at - schedule_now, block_end - now))
                    continue
                heapq.heappop(due)
                probe = self._schedule[index]
                pool.submit(_quietly, probe.run)
                self.sent += 1
                heapq.heappush(due, (at + probe.period, index))
        if length is not None:
            blocks = math.ceil((time.monotonic() - began) / length)
            self.windows = alternating(epoch, length, blocks, self._start_on)


def _quietly(run: Callable[[], object]) -> None:
    # A failed probe is still traffic; its outcome is not what is measured here.
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        run()


def probe_cpu(stack: Stack, factor: float, reference_factor: float,
              seconds: float) -> dict[str, float]:
    """CPU that probe traffic at `factor` x the kubelet's rate costs each process (cores, by
    name; HARNESS is the prober, i.e. the kubelet's side). Measured with the stack idle:
    `seconds` without probes, then `seconds` at `reference_factor` (high, so that the cost
    stands well above the idle stack's own ticks), scaled per probe to `factor`."""
    roots = stack.process_roots()
    before = cpu.snapshot(roots, harness=True)
    time.sleep(seconds)
    idle = cpu.snapshot(roots, harness=True)
    with ProbeTraffic(kubelet_schedule(stack, reference_factor)) as traffic:
        time.sleep(seconds)
    probed = cpu.snapshot(roots, harness=True)
    baseline, loaded = cpu.cores_used(before, idle), cpu.cores_used(idle, probed)
    scale = ProbeTraffic(kubelet_schedule(stack, factor)).rate / (traffic.sent / seconds)
    return {name: max(0.0, loaded[name] - baseline[name]) * scale for name in loaded}
