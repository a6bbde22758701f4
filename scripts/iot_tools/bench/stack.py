"""The real stack a benchmark runs against: a durable PostgreSQL (fsync on, PostgreSQL's
defaults), NATS with JetStream, the schema migration, the five services as real processes,
and the bare aiohttp server that is the latency baseline."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from iot_tools.servers import NatsServer, PostgresServer, temp_workdir
from iot_tools.services import SERVICES, ServiceProcess

BARE = "bare_aiohttp"
# Short drain: the bench stops the stack only at the end, and waits for nothing else.
# Sign-in off: the bench measures probes and ingest, and runs no Keycloak (ui_iot's /ready
# does not depend on the identity provider either way).
SERVICE_SETTINGS = {"DRAIN_DELAY_SECONDS": "1", "SHUTDOWN_TIMEOUT_SECONDS": "15",
                    "LOG_LEVEL": "INFO", "AUTH_ENABLED": "false"}


@dataclass
class Stack:
    workdir: Path = field(default_factory=lambda: temp_workdir("iot-bench-"))
    postgres: PostgresServer | None = None
    nats: NatsServer | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    bare: ServiceProcess | None = None
    # Services to run under cProfile (iot_tools.bench.profiled), each writing <name>.prof
    # into the work directory when it exits.
    profiled: tuple[str, ...] = ()

    @property
    def env(self) -> dict[str, str]:
        """What every service gets: the local servers' URLs and the database password."""
        assert self.postgres is not None and self.nats is not None
        return {"DATABASE_URL": self.postgres.url, "PGPASSWORD": self.postgres.password,
                "NATS_URL": self.nats.url, **SERVICE_SETTINGS}

    def start(self) -> Stack:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.postgres = PostgresServer(self.workdir / "postgresql", durable=True).start()
        self.nats = NatsServer(self.workdir / "nats").start()
        self.postgres.migrate(log=logs / "migrate.log")
        self.services = {name: self._service(name, logs).start() for name in SERVICES}
        self.bare = ServiceProcess(BARE, {}, logs, module="iot_tools.bench.bare_server").start()
        self.wait_ready()
        return self

    def _service(self, name: str, logs: Path) -> ServiceProcess:
        if name not in self.profiled:
            return ServiceProcess(name, self.env, logs)
        env = {**self.env, "PROFILE_MODULE": f"services.{name}",
               "PROFILE_OUTPUT": str(self.profile_path(name))}
        return ServiceProcess(name, env, logs, module="iot_tools.bench.profiled")

    def profile_path(self, name: str) -> Path:
        return self.workdir / f"{name}.prof"

    def wait_ready(self, timeout: float = 60) -> None:
        """Every service answers /ready 200 (and the baseline answers at all)."""
        assert self.bare is not None
        with ThreadPoolExecutor(len(self.services)) as pool:
            list(pool.map(lambda service: service.wait_ready(timeout), self.services.values()))
        if self.bare.wait_status("/", 200, timeout) is None:
            raise RuntimeError(f"the bare baseline server did not start: {self.bare.log_text()}")

    def process_roots(self) -> dict[str, int]:
        """The pid of each server and service (for PostgreSQL the postmaster, whose children
        are its backends)."""
        assert self.postgres is not None and self.postgres.process is not None
        assert self.nats is not None and self.nats.process is not None
        return {"postgresql": self.postgres.process.pid, "nats-server": self.nats.process.pid,
                **{name: service.pid for name, service in self.services.items()}}

    def psql(self, sql: str) -> str:
        assert self.postgres is not None
        return self.postgres.psql(sql).strip()

    def stop(self) -> None:
        processes = [*self.services.values(), *([self.bare] if self.bare else [])]
        with ThreadPoolExecutor(len(processes) or 1) as pool:  # drains run side by side
            list(pool.map(_stop, processes))
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _stop(process: ServiceProcess) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):  # stop() has killed it then
        process.stop(timeout=30)
