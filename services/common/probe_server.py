"""The aiohttp server that answers /health, /ready and /metrics from a HealthState.

It runs on a thread and an event loop of its own, so that a probe never waits behind the
service's work: at full ingest load the service's loop runs callbacks for milliseconds at a
time, and a request needs several of its turns. Each endpoint is answered where its answer
is true:

- /ready on the probe thread, from the answer the service's loop last rendered (a reference
  read, no I/O); HealthState.readiness() fails it itself once that loop has not turned for
  `loop_turn_limit`, so a stuck loop cannot leave a stale 200 standing.
- /health on the service's loop: the answer is its proof that the loop turns. A hung loop
  leaves the request unanswered, exactly as when the whole server ran on it (the kubelet's
  timeout fails the probe); past the stall threshold the thread answers 503 itself, so that
  no request waits forever (memory stays bounded).
- /metrics on the service's loop, where its counters are written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from services.common.health import HealthState, ProbeAnswer
from services.common.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

JSON = "application/json"
TEXT = "text/plain"
# Stopping: how long the thread may take to close its listener and end.
STOP_TIMEOUT_SECONDS = 5.0
# The interpreter's switch interval while the probe thread runs (sys.setswitchinterval; 5 ms
# by default). A request takes the probe thread several steps, each waiting for the GIL
# until the busy service thread is made to let go after this long. Only a thread waiting for
# the GIL makes it matter, so the service pays nothing between probes. Measured under full
# ingest load, /ready p50: 6.6 ms at the default, 2.5 ms at 0.5 ms, 2.2 ms at 0.1 ms (with
# no better p99).
SWITCH_INTERVAL_SECONDS = 0.0005

T = TypeVar("T")


def probe_response(answer: ProbeAnswer, verbose: bool) -> tuple[int, str, bytes]:
    """(status, content type, body) for a probe answer; `?verbose` asks for the text form."""
    if verbose:
        return answer.status, TEXT, answer.verbose
    return answer.status, JSON, answer.body


class AiohttpProbeServer:
    """Serves only the probes; started before any dependency connects, stopped last."""

    def __init__(self, health: HealthState, port: int, host: str = "0.0.0.0",
                 stall_threshold: float = 10.0) -> None:
        self._health = health
        self._port = port
        self._host = host
        self._stall_threshold = stall_threshold
        self._service_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Listening when this returns; OSError if the port cannot be had."""
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_SECONDS))
        self._service_loop = asyncio.get_running_loop()
        listening: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(listening,),
                                        name="probe-server", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(listening)

    async def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # already stopped
            loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, STOP_TIMEOUT_SECONDS)

    # -- the probe thread --------------------------------------------------------------

    def _serve(self, listening: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
            loop.run_until_complete(site.start())
        except BaseException as error:
            loop.run_until_complete(runner.cleanup())
            loop.close()
            listening.set_exception(error)
            return
        self._loop = loop
        listening.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._liveness)
        app.router.add_get("/ready", self._readiness)
        # Unauthenticated like the probes: it shows check names and counts, never details.
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _readiness(self, request: web.Request) -> web.Response:
        return _response(self._health.readiness(), "verbose" in request.query)

    async def _liveness(self, request: web.Request) -> web.Response:
        verbose = "verbose" in request.query
        try:
            answer = await self._on_service_loop(self._health.liveness)
        except TimeoutError:
            answer = self._health.unanswered(self._stall_threshold)
        return _response(answer, verbose)

    async def _metrics(self, _request: web.Request) -> web.Response:
        try:
            body = await self._on_service_loop(self._health.metrics.render)
        except TimeoutError:
            return web.Response(status=503, content_type=TEXT, text=(
                f"event loop did not answer within {self._stall_threshold:g}s\n"))
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _on_service_loop(self, compute: Callable[[], T]) -> T:
        """compute() run by the service's loop, once that loop gets to it; TimeoutError if
        it has not within the stall threshold (a hung or closing loop)."""
        assert self._service_loop is not None

        async def computed() -> T:
            return compute()

        coroutine = computed()
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._service_loop)
        except RuntimeError:  # the service's loop is closed: the process is ending
            coroutine.close()
            raise TimeoutError from None
        return await asyncio.wait_for(asyncio.wrap_future(future), self._stall_threshold)


def _response(answer: ProbeAnswer, verbose: bool) -> web.Response:
    status, content_type, body = probe_response(answer, verbose)
    return web.Response(status=status, body=body, content_type=content_type)
