"""A service's own readiness, watched closely for faults the service heals by itself.

The kubelet sees readiness only every periodSeconds and flips it after failureThreshold
failures in a row, so a NotReady window shorter than that (a consumer re-created within a
few milliseconds) never reaches the pod's condition. That is right — but a drill that
checks "the service noticed, and healed" needs the service's own view. This watch reads it
two ways, neither of which changes a pod's state:

  - `/ready` every POLL_SECONDS: the checks it names as failing;
  - the service's log, tailed: the health kit logs every readiness transition once
    ("readiness: not ready: consumer (…)", "readiness: ready"), so even a window shorter
    than the poll interval is seen.

Times are timeline seconds at which the watch saw the state (within one poll of it).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from iot_tools.drill.timeline import Timeline
from iot_tools.services import http_get

POLL_SECONDS = 0.02
TIMEOUT_SECONDS = 0.5
_NOT_READY = "readiness: not ready: "
_READY = "readiness: ready"
# "consumer (consumer deleted; re-creating), database (unreachable (OSError))": check names
# start the line or follow ", " and are followed by " (".
_CHECK_NAME = re.compile(r"(?:^|, )([a-z_]+) \(")


@dataclass(frozen=True)
class Sample:
    t: float
    failing: frozenset[str]  # empty: ready
    source: str  # "ready" (a /ready answer) or "log" (a logged transition)


def failing_in_log_line(line: str) -> frozenset[str] | None:
    """The failing checks a health-kit transition line names (empty: ready), or None when
    the line is not a readiness transition."""
    if _NOT_READY in line:
        return frozenset(_CHECK_NAME.findall(line.split(_NOT_READY, 1)[1]))
    if line.rstrip().endswith(_READY):
        return frozenset()
    return None


def failing_in_ready_body(status: int | None, body: str) -> frozenset[str] | None:
    """The failing checks of a /ready answer, or None when there was no usable answer."""
    if status is None:
        return None
    try:
        checks = json.loads(body).get("checks", {})
    except (ValueError, AttributeError):
        return None
    failing = frozenset(name for name, result in checks.items()
                        if isinstance(result, dict) and result.get("status") != "pass")
    if status != 200 and not failing:
        return frozenset({"?"})
    return failing


@dataclass
class ReadinessWatch:
    port: int
    log_path: Path | None
    timeline: Timeline
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._offset = self.log_path.stat().st_size if self.log_path and \
            self.log_path.exists() else 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch-{self.port}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._read_log()  # transitions logged just before the end

    async def _run(self) -> None:
        while True:
            answer = await asyncio.to_thread(http_get, self.port, "/ready", TIMEOUT_SECONDS)
            failing = failing_in_ready_body(answer.status, answer.body)
            if failing is not None:
                self.samples.append(Sample(self.timeline.now(), failing, "ready"))
            self._read_log()
            await asyncio.sleep(POLL_SECONDS)

    def _read_log(self) -> None:
        if self.log_path is None or not self.log_path.exists():
            return
        with open(self.log_path, "rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        complete = chunk.rfind(b"\n") + 1  # a line still being written waits for next time
        self._offset += complete
        now = self.timeline.now()
        for line in chunk[:complete].decode(errors="replace").splitlines():
            failing = failing_in_log_line(line)
            if failing is not None:
                self.samples.append(Sample(now, failing, "log"))

    # -- what was seen ---------------------------------------------------------------------

    def first_failure(self, checks: frozenset[str] | None = None,
                      since: float = 0.0) -> float | None:
        """When the watch first saw one of `checks` (None: any check) failing."""
        for sample in self.samples:
            if sample.t >= since and sample.failing and (
                    checks is None or sample.failing & checks):
                return sample.t
        return None

    def ready_since(self, since: float) -> float | None:
        """The first time at or after `since` the service said it was ready (every check
        passing) — from then on, once nothing failed again; None if it ended not ready."""
        ready_at: float | None = None
        for sample in self.samples:
            if sample.t < since:
                continue
            if sample.failing:
                ready_at = None
            elif ready_at is None:
                ready_at = sample.t
        return ready_at

    def failures(self) -> list[Sample]:
        return [sample for sample in self.samples if sample.failing]
