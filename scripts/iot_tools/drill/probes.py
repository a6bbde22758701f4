"""Executing one probe against a local process, as the kubelet's prober does: httpGet passes
on 200-399 and fails on any other status, a timeout or a refused connection; tcpSocket
passes when a connection opens; exec passes on exit status 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from iot_tools.drill.spec import Exec, HttpGet, ProbeSpec, TcpSocket
from iot_tools.services import http_get

# Headroom over the probe's own timeout before we stop waiting for the worker thread.
THREAD_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class ProbeOutcome:
    success: bool
    latency: float
    detail: str  # "200", "503", "timeout", "refused", "exit 1", ...
    timed_out: bool = False
    body: str = ""


class ProbeExecutor:
    """Runs probes for one pod: its ports mapped to local ports, its env for exec."""

    def __init__(
        self,
        local_port: Callable[[int | str], int],
        pool: ThreadPoolExecutor,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._local_port = local_port
        self._pool = pool
        self._env = dict(env or {})

    async def run(self, spec: ProbeSpec, timeout: float) -> ProbeOutcome:
        handler = spec.handler
        if isinstance(handler, HttpGet):
            return await self._http(handler, timeout)
        if isinstance(handler, TcpSocket):
            return await self._tcp(handler, timeout)
        return await self._exec(handler, timeout)

    async def _http(self, handler: HttpGet, timeout: float) -> ProbeOutcome:
        port = self._local_port(handler.port)
        loop = asyncio.get_running_loop()
        # iot_tools.services.http_get is blocking; a thread per probe keeps probes of
        # different pods independent, as the kubelet's goroutines are.
        future = loop.run_in_executor(self._pool, http_get, port, handler.path, timeout)
        try:
            answer = await asyncio.wait_for(future, timeout + THREAD_GRACE_SECONDS)
        except TimeoutError:
            return ProbeOutcome(False, timeout, "timeout", timed_out=True)
        if answer.status is None:
            timed_out = answer.error in {"TimeoutError", "timeout"}
            detail = "timeout" if timed_out else _connection_error(answer.error)
            return ProbeOutcome(False, answer.seconds, detail, timed_out=timed_out)
        return ProbeOutcome(200 <= answer.status < 400, answer.seconds, str(answer.status),
                            body=answer.body)

    async def _tcp(self, handler: TcpSocket, timeout: float) -> ProbeOutcome:
        started = time.monotonic()
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self._local_port(handler.port)), timeout)
        except TimeoutError:
            return ProbeOutcome(False, time.monotonic() - started, "timeout", timed_out=True)
        except OSError as error:
            return ProbeOutcome(False, time.monotonic() - started,
                                _connection_error(type(error).__name__))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return ProbeOutcome(True, time.monotonic() - started, "connected")

    async def _exec(self, handler: Exec, timeout: float) -> ProbeOutcome:
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *handler.command, env={**os.environ, **self._env},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        except OSError as error:
            return ProbeOutcome(False, time.monotonic() - started, f"cannot run: {error}")
        try:
            code = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            return ProbeOutcome(False, time.monotonic() - started, "timeout", timed_out=True)
        return ProbeOutcome(code == 0, time.monotonic() - started, f"exit {code}")


def _connection_error(name: str) -> str:
    return "refused" if name == "ConnectionRefusedError" else name or "no answer"
