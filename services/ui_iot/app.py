"""The FastAPI application: API, page, and the health kit's probes on the same port."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import Counter, Histogram

from services.common.health import HealthState
from services.common.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from services.common.probe_server import probe_response
from services.ui_iot.auth import (
    ALERTS_READ,
    DEVICES_READ,
    TELEMETRY_READ,
    AuthSettings,
    TokenRejectedError,
    TokenValidator,
    realm_roles,
)
from services.ui_iot.page import PAGE_SCRIPT, page_headers, render_page
from services.ui_iot.queries import DatabaseUnavailableError, ReadModel

Limit = Annotated[int, Query(ge=1, le=1000)]
# Probes and scrapes are not API traffic (nor in the access log).
UNCOUNTED_PATHS = frozenset({"/health", "/ready", "/metrics"})
REQUEST_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                           5.0, 10.0)


def create_app(health: HealthState, model: ReadModel, auth: AuthSettings,
               validator: TokenValidator | None) -> FastAPI:
    # No Swagger UI (/api/docs): it would need a CDN's scripts and cannot send a bearer token
    # when a browser navigates to it. The OpenAPI document stays, behind a valid token.
    app = FastAPI(title="iot-platform UI", docs_url=None, redoc_url=None, openapi_url=None)
    signed_in = _token_check(auth, validator)

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

    @app.get("/api/devices", dependencies=[Depends(signed_in(DEVICES_READ))])
    async def devices(limit: Limit = 100) -> list[dict[str, Any]]:
        return await model.devices(limit)

    @app.get("/api/devices/{device_id}/telemetry",
             dependencies=[Depends(signed_in(TELEMETRY_READ))])
    async def device_telemetry(device_id: str, limit: Limit = 100) -> list[dict[str, Any]]:
        rows = await model.telemetry(device_id, limit)
        return [{"ts": row["ts"], "metrics": json.loads(row["metrics"])} for row in rows]

    @app.get("/api/alerts", dependencies=[Depends(signed_in(ALERTS_READ))])
    async def alerts(limit: Limit = 100) -> list[dict[str, Any]]:
        return await model.alerts(limit)

    @app.get("/api/openapi.json", include_in_schema=False, dependencies=[Depends(signed_in())])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        # No data in the page itself: its script signs in and asks the API with the token.
        return HTMLResponse(render_page(auth), headers=page_headers(auth))

    @app.get("/app.js", include_in_schema=False)
    async def script() -> Response:
        return Response(PAGE_SCRIPT, media_type="text/javascript",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    # Registered now, not when Starlette builds its middleware stack at the first request.
    app.add_middleware(
        RequestMetrics,
        requests=health.metrics.counter("iot_ui_requests", "API and page requests.",
                                        ["route", "method", "status"]),
        seconds=health.metrics.histogram(
            "iot_ui_request_seconds", "API and page requests: time to the end of the response.",
            REQUEST_SECONDS_BUCKETS, ["route"]))
    return app


def _token_check(auth: AuthSettings, validator: TokenValidator | None):
    """`signed_in(role)`: a dependency that lets a request through with a valid token carrying
    `role` (any valid token without one); 401 without a valid token, 403 without the role."""

    def signed_in(role: str | None = None):
        async def check(request: Request) -> None:
            if not auth.enabled or validator is None:
                return
            try:
                claims = await validator.claims(request.headers.get("authorization"))
            except TokenRejectedError as rejected:
                error = "" if rejected.reason == "missing" else ', error="invalid_token"'
                raise HTTPException(401, "a valid bearer token is required",
                                    headers={"WWW-Authenticate": f'Bearer realm="iot"{error}'}
                                    ) from None
            if role is not None and role not in realm_roles(claims):
                raise HTTPException(403, f"the token lacks the role {role}", headers={
                    "WWW-Authenticate": 'Bearer realm="iot", error="insufficient_scope"'})

        return check

    return signed_in


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
