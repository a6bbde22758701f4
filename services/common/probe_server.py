"""The aiohttp server that answers /health, /ready and /metrics from a HealthState."""

from __future__ import annotations

from aiohttp import web

from services.common.health import HealthState, ProbeAnswer
from services.common.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

JSON = "application/json"
TEXT = "text/plain"


def probe_response(answer: ProbeAnswer, verbose: bool) -> tuple[int, str, bytes]:
    """(status, content type, body) for a probe answer; `?verbose` asks for the text form."""
    if verbose:
        return answer.status, TEXT, answer.verbose
    return answer.status, JSON, answer.body


class AiohttpProbeServer:
    """Serves only the probes; started before any dependency connects, stopped last."""

    def __init__(self, health: HealthState, port: int, host: str = "0.0.0.0") -> None:
        self._health = health
        self._port = port
        self._host = host
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._liveness)
        app.router.add_get("/ready", self._readiness)
        # Unauthenticated like the probes: it shows check names and counts, never details.
        app.router.add_get("/metrics", self._metrics)
        # access_log=None: probes arrive every few seconds forever; they must not flood logs.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _liveness(self, request: web.Request) -> web.Response:
        return _response(self._health.liveness(), "verbose" in request.query)

    async def _readiness(self, request: web.Request) -> web.Response:
        return _response(self._health.readiness(), "verbose" in request.query)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._health.metrics.render(),
                            headers={"Content-Type": METRICS_CONTENT_TYPE})


def _response(answer: ProbeAnswer, verbose: bool) -> web.Response:
    status, content_type, body = probe_response(answer, verbose)
    return web.Response(status=status, body=body, content_type=content_type)
