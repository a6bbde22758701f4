"""The FastAPI application: API, page, and the health kit's probes on the same port."""

from __future__ import annotations

import json
import time
from html import escape
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import Counter, Histogram

from services.common.health import HealthState
from services.common.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from services.common.probe_server import probe_response
from services.ui_iot.queries import DatabaseUnavailableError, ReadModel

Limit = Annotated[int, Query(ge=1, le=1000)]
# Probes and scrapes are not API traffic (nor in the access log).
UNCOUNTED_PATHS = frozenset({"/health", "/ready", "/metrics"})
REQUEST_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                           5.0, 10.0)


def create_app(health: HealthState, model: ReadModel) -> FastAPI:
    app = FastAPI(title="iot-platform UI", docs_url="/api/docs", openapi_url="/api/openapi.json")

    @app.exception_handler(DatabaseUnavailableError)
    async def database_unavailable(_request: Request, _error: Exception) -> JSONResponse:
        return JSONResponse({"detail": "database unavailable"}, status_code=503)

    @app.get("/health", include_in_schema=False)
    async def liveness(request: Request) -> Response:
        return _probe(health.liveness(), request)

    @app.get("/ready", include_in_schema=False)
    async def readiness(request: Request) -> Response:
        return _probe(health.readiness(), request)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(content=health.metrics.render(),
                        headers={"Content-Type": METRICS_CONTENT_TYPE})

    @app.get("/api/devices")
    async def devices(limit: Limit = 100) -> list[dict[str, Any]]:
        return await model.devices(limit)

    @app.get("/api/devices/{device_id}/telemetry")
    async def device_telemetry(device_id: str, limit: Limit = 100) -> list[dict[str, Any]]:
        rows = await model.telemetry(device_id, limit)
        return [{"ts": row["ts"], "metrics": json.loads(row["metrics"])} for row in rows]

    @app.get("/api/alerts")
    async def alerts(limit: Limit = 100) -> list[dict[str, Any]]:
        return await model.alerts(limit)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(_render_page(await model.devices(200), await model.alerts(50)))

    # Registered now, not when Starlette builds its middleware stack at the first request.
    app.add_middleware(
        RequestMetrics,
        requests=health.metrics.counter("iot_ui_requests", "API and page requests.",
                                        ["route", "method", "status"]),
        seconds=health.metrics.histogram(
            "iot_ui_request_seconds", "API and page requests: time to the end of the response.",
            REQUEST_SECONDS_BUCKETS, ["route"]))
    return app


class RequestMetrics:
    """Counts and times the API's requests by route template (bounded labels: a path that
    matches no route is "unmatched"). Plain ASGI: no per-request task or body buffering."""

    def __init__(self, app: Any, requests: Counter, seconds: Histogram) -> None:
        self._app = app
        self._requests = requests
        self._seconds = seconds

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in UNCOUNTED_PATHS:
            await self._app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500  # what the client gets if the app raises before answering

        async def send_noting_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_noting_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self._requests.labels(template, scope["method"], str(status)).inc()
            self._seconds.labels(template).observe(time.monotonic() - started)


def _probe(answer, request: Request) -> Response:
    status, content_type, body = probe_response(answer, "verbose" in request.query_params)
    return Response(content=body, status_code=status, media_type=content_type)


def _render_page(devices: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> str:
    device_rows = "".join(
        f"<tr><td>{escape(d['device_id'])}</td><td>{escape(d['status'])}</td>"
        f"<td>{escape(str(d['last_seen']))}</td></tr>" for d in devices
    ) or '<tr><td colspan="3">no devices yet</td></tr>'
    alert_rows = "".join(
        f"<tr><td>{escape(str(a['created_at']))}</td><td>{escape(a['rule'])}</td>"
        f"<td>{escape(a['device_id'])}</td><td>{a['observed']:g}</td></tr>" for a in alerts
    ) or '<tr><td colspan="4">no alerts</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>iot-platform</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}</style></head>
<body><h1>iot-platform</h1>
<h2>Devices</h2>
<table><tr><th>device</th><th>status</th><th>last seen</th></tr>{device_rows}</table>
<h2>Recent alerts</h2><table><tr><th>when</th><th>rule</th><th>device</th><th>observed</th></tr>
{alert_rows}</table></body></html>"""
