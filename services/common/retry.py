"""Exponential backoff with full jitter, for reconnect loops."""

from __future__ import annotations

import asyncio
import random


class Backoff:
    def __init__(self, initial: float = 0.1, maximum: float = 5.0, factor: float = 2.0) -> None:
        self._initial = initial
        self._maximum = maximum
        self._factor = factor
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self._maximum, self._initial * self._factor**self._attempt)
        self._attempt += 1
        # Full jitter keeps a fleet of pods from reconnecting in lock-step after an outage.
        return random.uniform(ceiling / 2, ceiling)

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self._attempt = 0
