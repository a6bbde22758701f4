"""Test doubles for the drill's kubelet model: a local HTTP server whose answers a test
scripts, and a "process" that is that server (started, stopped, hung, crashed)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from iot_tools.drill.kubelet import Container
from iot_tools.servers import free_port

Answer = Callable[[], int]


class ScriptedServer:
    """Answers GET <path> with answers[path]() as the status, after `delay` seconds."""

    def __init__(self) -> None:
        self.port = free_port()
        self.answers: dict[str, Answer] = {"/health": lambda: 200, "/ready": lambda: 200}
        self.delay = 0.0
        self.requests: list[tuple[float, str]] = []
        self._server: ThreadingHTTPServer | None = None

    def answer(self, path: str, status: int) -> None:
        self.answers[path] = lambda: status

    def answer_in_turn(self, path: str, statuses: list[int]) -> None:
        cycle = _cycle(statuses)
        self.answers[path] = lambda: next(cycle)

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append((time.monotonic(), self.path))
                if owner.delay:
                    time.sleep(owner.delay)
                status = owner.answers.get(self.path, lambda: 404)()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _cycle(statuses: list[int]) -> Iterator[int]:
    while True:
        yield from statuses


class ServerProcess:
    """A ProcessHandle whose process is a ScriptedServer. `ignores_sigterm`: a hung process;
    `crashes`: ends by itself right after starting."""

    def __init__(self, server: ScriptedServer, *, ignores_sigterm: bool = False,
                 crashes: bool = False) -> None:
        self.server = server
        self.ignores_sigterm = ignores_sigterm
        self.crashes = crashes
        self.signals: list[tuple[float, int]] = []
        self.starts: list[float] = []
        self._code: int | None = None

    def start(self) -> ServerProcess:
        self.starts.append(time.monotonic())
        if self.crashes:
            self._code = 1
            return self
        self._code = None
        self.server.start()
        return self

    def send(self, signum: int) -> None:
        self.signals.append((time.monotonic(), signum))
        if signum == signal.SIGKILL or (signum == signal.SIGTERM and not self.ignores_sigterm):
            self.server.stop()
            self._code = -signal.SIGKILL if signum == signal.SIGKILL else 0

    def returncode(self) -> int | None:
        return self._code


@contextlib.asynccontextmanager
async def running(container: Container) -> AsyncIterator[Container]:
    """The container supervised for the duration of the block, killed afterwards."""
    task = asyncio.create_task(container.run())
    try:
        yield container
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        container.kill()


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    """Wait until `condition()` holds (True) or the timeout (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def run_until(container: Container, condition: Callable[[], bool], timeout: float) -> bool:
    """Supervise the container until `condition()` holds; False at the timeout."""

    async def scenario() -> bool:
        async with running(container):
            return await until(condition, timeout)

    return asyncio.run(scenario())
