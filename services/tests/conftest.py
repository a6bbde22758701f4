"""Fixtures: real PostgreSQL and NATS servers, and the services as real subprocesses.

One PostgreSQL server serves the session; each test gets its own database cloned from a
migrated template (fast, isolated). Tests that stop or freeze PostgreSQL get a private
server. Every test gets its own nats-server (it starts in milliseconds), so JetStream
streams and durable consumers never leak between tests.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from iot_tools.servers import NatsServer, PostgresServer, temp_workdir
from iot_tools.services import ServiceProcess

TEMPLATE_DB = "iot_template"
_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(temp_workdir("iot-test-pg-")).start()
    server.create_database(TEMPLATE_DB)
    server.migrate(TEMPLATE_DB)
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@dataclass(frozen=True)
class Database:
    server: PostgresServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url_for(self.name)

    def sql(self, statement: str) -> str:
        return self.server.psql(statement, database=self.name).strip()

    def count(self, table: str, where: str = "true") -> int:
        return int(self.sql(f"SELECT count(*) FROM {table} WHERE {where}"))


@pytest.fixture
def database(postgres: PostgresServer) -> Database:
    """A migrated database of its own on the shared server."""
    name = f"test_{next(_database_numbers)}"
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE_DB}', database="postgres")
    return Database(postgres, name)


@pytest.fixture
def private_postgres() -> Iterator[Database]:
    """A server of this test's own, for tests that stop, kill or freeze it."""
    server = PostgresServer(temp_workdir("iot-test-pg-private-")).start()
    server.migrate()
    yield Database(server, server.database)
    server.stop(mode="kill")
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer(temp_workdir("iot-test-nats-")).start()
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def service_env(db: Database, nats: NatsServer | None, **extra: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": db.url,
        "PGPASSWORD": db.server.password,
        "NATS_URL": nats.url if nats else "nats://127.0.0.1:1",
        "DRAIN_DELAY_SECONDS": "1",
        "SHUTDOWN_TIMEOUT_SECONDS": "15",
        "LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


Launch = Callable[..., ServiceProcess]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start a service subprocess; every one started is stopped after the test."""
    started: list[ServiceProcess] = []

    def start(name: str, env: dict[str, str]) -> ServiceProcess:
        process = ServiceProcess(name, env, tmp_path).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
