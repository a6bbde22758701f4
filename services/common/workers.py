"""A service's background tasks, started and stopped as a group."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from services.common.health import HealthState


class Workers:
    """Named background tasks. A critical task that ends before shutdown fails liveness
    (see HealthState.watch); `cancel` stops tasks in the order the caller names them."""

    def __init__(self, health: HealthState) -> None:
        self._health = health
        self._tasks: dict[str, asyncio.Task] = {}

    def start(self, name: str, work: Coroutine[Any, Any, Any], *, critical: bool = True) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks[name] = task
        if critical:
            self._health.watch(name, task)

    async def wait(self, name: str) -> None:
        """Wait for a task that ends by itself (e.g. a writer draining its queue)."""
        task = self._tasks.get(name)
        if task is not None:
            # asyncio.wait, not `await task`: the task's own failure is reported by the
            # health kit, and our caller's cancellation must still propagate.
            await asyncio.wait({task})

    async def cancel(self, *names: str) -> None:
        """Cancel the named tasks (all, if none named), one after the other."""
        for name in names or tuple(self._tasks):
            task = self._tasks.pop(name, None)
            if task is not None:
                await cancel_and_wait([task])


async def cancel_and_wait(tasks: list[asyncio.Task]) -> None:
    """Cancel the tasks and wait until every one has ended. Python 3.11's wait_for can
    swallow a cancellation that arrives just as its inner future completes (the task then
    carries on), so a task still running is cancelled again."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=0.5)
