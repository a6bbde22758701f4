"""Wiring for ui_iot: the read model, the database probe, and uvicorn as the probe server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from services.common.config import load
from services.common.db import DatabaseProbe
from services.common.health import HealthState
from services.common.logs import ProbePathFilter
from services.common.runtime import run
from services.common.workers import Workers
from services.ui_iot.app import create_app
from services.ui_iot.auth import SigningKeys, TokenValidator
from services.ui_iot.config import UiConfig
from services.ui_iot.queries import ReadModel

NAME = "ui_iot"
log = logging.getLogger(NAME)


class UiService:
    def __init__(self, config: UiConfig, health: HealthState) -> None:
        # "database": the probe's own connection (and pool creation failures, named
        # api_pool); "api_pool": the pool the API actually uses.
        self._database = DatabaseProbe(config.database, health, f"{NAME}-health",
                                       writes=False)  # ui_iot only reads
        self.model = ReadModel(config.database, health, config.pool_size, config.query_timeout)
        self._workers = Workers(health)
        self.keys: SigningKeys | None = None
        self.validator: TokenValidator | None = None
        if config.auth.enabled:
            self.keys = SigningKeys(config.auth, health)
            self.validator = TokenValidator(config.auth, self.keys, health)
        else:
            log.warning("AUTH_ENABLED=false: THE API ANSWERS ANYONE WITHOUT A TOKEN. Development "
                        "only; never expose this instance (README: Sign-in)")

    async def start(self) -> None:
        self._workers.start("database-probe", self._database.run())
        # Critical: it retries every dependency error itself, so its end is a bug.
        self._workers.start("api-pool", self.model.run())
        if self.keys is not None:
            # Critical too: it survives every fetch failure (keeping the cached keys).
            self._workers.start("signing-keys", self.keys.run())

    async def stop(self) -> None:
        await self._workers.cancel()
        if self.keys is not None:
            await self.keys.close()
        await self.model.close()
        await self._database.close()


class _RuntimeOwnsSignals(uvicorn.Server):
    """uvicorn would stop accepting at the first SIGTERM; our runtime drains first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class UvicornProbeServer:
    """Serves the whole app (API, page and probes); started first, stopped last."""

    def __init__(self, app, port: int) -> None:
        config = uvicorn.Config(app, host="0.0.0.0", port=port, log_config=None,
                                lifespan="off", timeout_graceful_shutdown=5)
        self._server = _RuntimeOwnsSignals(config)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                # uvicorn exits (SystemExit) when it cannot bind: report it as the kit expects.
                raise OSError("uvicorn could not start listening")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait({self._task})


def assemble(config: UiConfig, health: HealthState):
    service = UiService(config, health)
    app = create_app(health, service.model, config.auth, service.validator)
    server = UvicornProbeServer(app, config.runtime.health_port)
    return service, server


def main() -> int:
    config = load(NAME, UiConfig.from_env)
    logging.getLogger("uvicorn.access").addFilter(ProbePathFilter())
    return run(NAME, config.runtime, lambda health: assemble(config, health))
