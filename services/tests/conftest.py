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
from iot_tools.keycloak import KeycloakServer
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


@pytest.fixture(scope="session")
def keycloak() -> Iterator[KeycloakServer]:
    """A real Keycloak for the session with the realm `helm template` renders (iot_tools.keycloak),
    its UI client allowed to redirect to http://127.0.0.1:<keycloak.ui_port>/."""
    server = KeycloakServer.for_chart_realm(temp_workdir("iot-test-keycloak-")).start()
    print(f"Keycloak ready in {server.started_seconds:.1f} s")
    yield server
    server.stop()
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
        # ui_iot's sign-in is off for the tests about something else (it logs a warning);
        # test_ui_auth.py turns it on against the real Keycloak of the `keycloak` fixture.
        "AUTH_ENABLED": "false",
        # The test webhooks listen on 127.0.0.1, which route_delivery refuses by default:
        # allowed here explicitly (test_webhook_guard.py removes it to test the default).
        "WEBHOOK_ALLOW_CIDRS": "127.0.0.1/32",
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


# -- a non-superuser role for a service (faults a superuser is exempt from) ------------------

_role_numbers = itertools.count(1)


@dataclass
class ServiceRole:
    """A login role with the rights a service needs on one test database.

    The servers' own user is a superuser, and superusers ignore CONNECTION LIMIT (and are
    never refused for "too many connections" below the reserved slots): faults that refuse a
    service's sessions need a role of its own. Settings (limit, password, read-only) apply to
    new sessions, so each method cuts the role's existing sessions unless told not to.
    """

    database: Database
    name: str
    password: str

    @property
    def url(self) -> str:
        server = self.database.server
        return f"postgresql://{self.name}@127.0.0.1:{server.port}/{self.database.name}"

    def env(self, **extra: str) -> dict[str, str]:
        """service_env for this role: DATABASE_URL and PGPASSWORD point at it."""
        return service_env(self.database, None, DATABASE_URL=self.url,
                           PGPASSWORD=self.password, **extra)

    def _admin(self, statement: str) -> str:
        return self.database.server.psql(statement, database="postgres")

    def terminate_sessions(self) -> None:
        self._admin("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    f"WHERE usename = '{self.name}'")

    def refuse_connections(self, terminate: bool = True) -> None:
        """New sessions fail with 53300 (too many connections for role)."""
        self._admin(f'ALTER ROLE "{self.name}" CONNECTION LIMIT 0')
        if terminate:
            self.terminate_sessions()

    def allow_connections(self) -> None:
        self._admin(f'ALTER ROLE "{self.name}" CONNECTION LIMIT -1')

    def break_password(self, terminate: bool = True) -> None:
        """New sessions fail with 28P01 (password authentication failed)."""
        self._admin(f"ALTER ROLE \"{self.name}\" PASSWORD 'not-{self.password}'")
        if terminate:
            self.terminate_sessions()

    def restore_password(self) -> None:
        self._admin(f"ALTER ROLE \"{self.name}\" PASSWORD '{self.password}'")

    def set_read_only(self, read_only: bool, terminate: bool = True) -> None:
        """Writes fail with 25006, as on a standby after a failover. Scoped to this role in
        this database, so the test's own SQL (as the superuser) still writes."""
        where = f'ROLE "{self.name}" IN DATABASE "{self.database.name}"'
        if read_only:
            self._admin(f"ALTER {where} SET default_transaction_read_only = on")
        else:
            self._admin(f"ALTER {where} RESET default_transaction_read_only")
        if terminate:
            self.terminate_sessions()


@pytest.fixture
def service_role(database: Database) -> Iterator[ServiceRole]:
    """A non-superuser login role with read/write rights on `database`'s tables."""
    import secrets

    role = ServiceRole(database, f"svc_{next(_role_numbers)}_{database.name}",
                       secrets.token_hex(12))
    database.server.psql(f"CREATE ROLE \"{role.name}\" LOGIN PASSWORD '{role.password}'",
                         database="postgres")
    database.sql(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public '
                 f'TO "{role.name}"; GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public '
                 f'TO "{role.name}"')
    yield role
    # Roles are cluster-wide; the database (and its grants) stays with the session server.
    try:
        role.refuse_connections()
        database.sql(f'DROP OWNED BY "{role.name}"')
        role._admin(f'DROP ROLE "{role.name}"')
    except RuntimeError:
        pass  # best effort: a session still closing keeps the role; the server is temporary
