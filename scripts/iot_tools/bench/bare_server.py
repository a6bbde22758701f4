"""The latency baseline: a bare aiohttp handler that returns 200 and nothing else.

Served the way the services serve their probes (aiohttp AppRunner, uvloop, no access log),
so the difference between a service's probe latency and this one is what the health kit
itself costs. `python -m iot_tools.bench.bare_server` on HEALTH_PORT.
"""

from __future__ import annotations

import asyncio
import os
import signal

import uvloop
from aiohttp import web


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(status=200)


async def serve(port: int) -> None:
    app = web.Application()
    app.router.add_get("/", _ok)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(int(os.environ["HEALTH_PORT"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
