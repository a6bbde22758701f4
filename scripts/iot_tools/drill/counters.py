"""The services' work counters (messages ingested, notifications, ...) as their /health
reports them, polled for the live table. Not a probe: it never changes a pod's state."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from iot_tools.services import http_get

# /health keys that are not counters.
STATUS_KEYS = frozenset({"status", "service", "uptime_seconds", "loop_lag_ms", "reason",
                         "task", "stalled_seconds"})
POLL_SECONDS = 1.0
TIMEOUT_SECONDS = 0.5


class HealthCounters:
    def __init__(self, ports: Mapping[str, int], pool: ThreadPoolExecutor) -> None:
        self._ports = dict(ports)
        self._pool = pool
        self.latest: dict[str, dict[str, int]] = {service: {} for service in ports}

    def headline(self, service: str) -> str:
        """The service's first counter, e.g. `ingested=1200` (its main work)."""
        counters = self.latest.get(service) or {}
        if not counters:
            return "—"
        name, value = next(iter(counters.items()))
        return f"{name}={value}"

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            answers = await asyncio.gather(*(
                loop.run_in_executor(self._pool, http_get, port, "/health", TIMEOUT_SECONDS)
                for port in self._ports.values()))
            for service, answer in zip(self._ports, answers, strict=True):
                if answer.status == 200:
                    self.latest[service] = _counters(answer.body)
            await asyncio.sleep(POLL_SECONDS)


def _counters(body: str) -> dict[str, int]:
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return {key: value for key, value in document.items()
            if key not in STATUS_KEYS and isinstance(value, int)}
