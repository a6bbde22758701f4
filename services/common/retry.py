"""Exponential backoff with full jitter, and the one retry loop every worker uses."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.common.faults import Fault, classify
from services.common.health import DependencyState, Progress
from services.common.logs import describe_error

log = logging.getLogger("retry")
T = TypeVar("T")


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


class Attempts:
    """How every loop talks to a dependency: `run` retries an operation for as long as the
    failure taxonomy (services.common.faults) calls its errors "dependency unavailable",
    with backoff and jitter, reporting the outage to the dependency's readiness check and
    each attempt to the worker's progress. Bad-message and bug errors propagate: the
    caller quarantines a message it can blame, and a bug crashes the task."""

    def __init__(
        self,
        dependency: DependencyState,
        reporter: str,
        *,
        progress: Progress | None = None,
        initial: float = 0.2,
        maximum: float = 5.0,
    ) -> None:
        self._dependency = dependency
        self._reporter = reporter
        self._progress = progress
        self._backoff = Backoff(initial=initial, maximum=maximum)
        self._outage_began: float | None = None

    async def run(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        on_failure: Callable[[], object] | None = None,
    ) -> T:
        """The operation's result, after as many attempts as it takes. `on_failure` runs
        after each failed attempt (e.g. to discard a broken connection)."""
        while True:
            try:
                result = await operation()
            except Exception as error:
                if classify(error) is not Fault.DEPENDENCY:
                    raise
                self.failed(error)
                if on_failure is not None:
                    on_failure()
                await self._backoff.wait()
                continue
            self.succeeded()
            return result

    def failed(self, error: BaseException) -> None:
        """Record one failed attempt (for loops that cannot wrap the attempt in `run`)."""
        if self._progress is not None:
            self._progress.beat()
        detail = describe_error(error)
        if self._outage_began is None:
            self._outage_began = time.monotonic()
            log.warning("%s: %s unavailable (%s); retrying with backoff", self._reporter,
                        self._dependency.name, detail)
        self._dependency.failed(self._reporter, detail)

    def succeeded(self) -> None:
        if self._progress is not None:
            self._progress.beat()
        if self._outage_began is not None:
            log.info("%s: %s available again after %.1f s", self._reporter,
                     self._dependency.name, time.monotonic() - self._outage_began)
            self._outage_began = None
            self._backoff.reset()
        self._dependency.recovered(self._reporter)

    async def wait(self) -> None:
        await self._backoff.wait()
