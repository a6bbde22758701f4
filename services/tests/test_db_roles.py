"""Database roles against real PostgreSQL: migrate run as the chart runs it (the bootstrap
superuser creates the roles, the owner migrates), then each service's role does exactly its
job, ui reads only, no service role is privileged or owns anything, re-runs change nothing,
an install from before the roles is brought in line, and a changed password is applied."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from iot_tools.feed import publish_readings
from iot_tools.servers import NatsServer, PostgresServer
from iot_tools.services import wait_until

from services.evaluator_iot.rules import EVALUATE, READ_POSITION, SAVE_POSITION
from services.ingest_iot.store import COMMIT_BATCH, ROUTED_DEVICES, BatchRows
from services.ingest_iot.telemetry import Reading
from services.migrate.roles import scram_verifier, verifier_matches
from services.ops_worker.maintenance import MARK_OFFLINE, PRUNE_BATCH
from services.route_delivery.delivery import (
    FORGET_ATTEMPTS,
    INSERT_DEAD_LETTER,
    RECORD_FAILED_ATTEMPT,
    ROUTE,
)
from services.route_delivery.main import PURGE_STALE_ATTEMPTS
from services.ui_iot.queries import ALERTS, DEVICE_TELEMETRY, DEVICES

SERVICES = ("ingest", "evaluator", "ui", "ops", "route_delivery")
# Tables only the owner touches (the migration bookkeeping and the grant matrix itself).
OWNER_ONLY = {"schema_migrations", "service_grants"}
_numbers = itertools.count(1)


@dataclass
class Platform:
    """One fresh database on the session server, with role names of its own (roles are
    server-wide) and the environment the chart gives migrate."""

    server: PostgresServer
    prefix: str
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return f"{self.prefix}_db"

    @property
    def keycloak_database(self) -> str:
        return f"{self.prefix}_keycloak"

    def user(self, who: str) -> str:
        return f"{self.prefix}_{who}"

    def password(self, who: str) -> str:
        return self.passwords.setdefault(who, secrets.token_urlsafe(18))

    @property
    def url(self) -> str:
        """DATABASE_URL as the chart renders it: no user, no password."""
        return f"postgresql://127.0.0.1:{self.server.port}/{self.database}"

    def migrate_env(self, admin: bool = True, keycloak: bool = True) -> dict[str, str]:
        env = {"DATABASE_URL": self.url, "PGUSER": self.user("owner"),
               "PGPASSWORD": self.password("owner"), "MIGRATE_WAIT_SECONDS": "10"}
        for service in SERVICES:
            prefix = service.upper()
            env[f"DB_{prefix}_USER"] = self.user(service)
            if admin:
                env[f"DB_{prefix}_PASSWORD"] = self.password(service)
        if admin:
            env.update(DB_ADMIN_USER=self.server.user, DB_ADMIN_PASSWORD=self.server.password)
            if keycloak:
                env.update(KEYCLOAK_DB_NAME=self.keycloak_database,
                           KEYCLOAK_DB_USER=self.user("keycloak"),
                           KEYCLOAK_DB_PASSWORD=self.password("keycloak"))
        return env

    def migrate(self, env: dict[str, str] | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DB_"))}
        proc = subprocess.run([sys.executable, "-m", "services.migrate"],
                              env={**environment, **(env or self.migrate_env())},
                              capture_output=True, text=True, timeout=120, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"migrate failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def sql(self, statement: str, database: str | None = None) -> str:
        """As the server's superuser (test setup and inspection)."""
        return self.server.psql(statement, database=database or self.database).strip()

    def service_env(self, service: str, nats: NatsServer | None = None,
                    **extra: str) -> dict[str, str]:
        """A service process's environment as the chart gives it: its own role only (ui_iot's
        sign-in is off: these tests are about database roles; test_ui_auth covers it)."""
        return {"DATABASE_URL": self.url, "PGUSER": self.user(service),
                "PGPASSWORD": self.password(service),
                "NATS_URL": nats.url if nats else "nats://127.0.0.1:1",
                "DRAIN_DELAY_SECONDS": "1", "SHUTDOWN_TIMEOUT_SECONDS": "15",
                "LOG_LEVEL": "INFO", "AUTH_ENABLED": "false", **extra}

    async def connect(self, who: str, database: str | None = None,
                      password: str | None = None) -> asyncpg.Connection:
        return await asyncpg.connect(
            host="127.0.0.1", port=self.server.port, database=database or self.database,
            user=self.user(who), password=password or self.password(who), timeout=10)


@pytest.fixture
def platform(postgres: PostgresServer) -> Platform:
    """A fresh, empty database (not the migrated template: migrate creates everything)."""
    platform = Platform(postgres, f"r{next(_numbers)}_{secrets.token_hex(3)}")
    postgres.create_database(platform.database)
    return platform


@pytest.fixture
def migrated(platform: Platform) -> Platform:
    platform.migrate()
    return platform


def run(coroutine):
    return asyncio.run(coroutine)


async def sqlstate_of(connection: asyncpg.Connection, statement: str, *args) -> str | None:
    """The SQLSTATE a statement fails with (None: it succeeded), rolled back either way."""
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(statement, *args)
    except asyncpg.PostgresError as error:
        return error.sqlstate
    finally:
        await transaction.rollback()
    return None


def public_tables(platform: Platform) -> list[str]:
    return platform.sql("SELECT relname FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                        "AND c.relkind IN ('r', 'p') ORDER BY 1").splitlines()


def acl_snapshot(platform: Platform) -> str:
    return platform.sql("SELECT string_agg(relname || '=' || coalesce(relacl::text, ''), ' ' "
                        "ORDER BY relname) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = 'public'")


# -- roles and ownership -----------------------------------------------------------------------


def test_migrate_creates_plain_login_roles_none_of_them_privileged(migrated):
    users = ", ".join(f"'{migrated.user(who)}'" for who in (*SERVICES, "owner", "keycloak"))
    rows = migrated.sql(
        "SELECT rolname, rolcanlogin, rolsuper OR rolcreaterole OR rolcreatedb OR "
        f"rolreplication OR rolbypassrls FROM pg_roles WHERE rolname IN ({users}) ORDER BY 1")
    assert len(rows.splitlines()) == 7
    assert all(line.endswith("|t|f") for line in rows.splitlines()), rows


def test_the_owner_owns_every_object_and_no_service_role_owns_any(migrated):
    owners = migrated.sql("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c "
                          "JOIN pg_namespace n ON n.oid = c.relnamespace "
                          "WHERE n.nspname = 'public'")
    assert owners == migrated.user("owner")
    services = ", ".join(f"'{migrated.user(s)}'" for s in SERVICES)
    assert migrated.sql("SELECT count(*) FROM pg_class WHERE pg_get_userbyid(relowner) "
                        f"IN ({services})") == "0"
    assert migrated.sql("SELECT count(*) FROM pg_namespace WHERE pg_get_userbyid(nspowner) "
                        f"IN ({services})") == "0"


def test_service_roles_cannot_create_tables(migrated):
    async def check() -> list[str | None]:
        states = []
        for service in SERVICES:
            connection = await migrated.connect(service)
            try:
                states.append(await sqlstate_of(connection, "CREATE TABLE mine (x int)"))
                states.append(await sqlstate_of(connection, "CREATE TEMP TABLE mine (x int)"))
            finally:
                await connection.close()
        return states

    assert run(check()) == ["42501"] * 10


def test_keycloak_has_its_own_database_closed_to_the_services(migrated):
    assert migrated.sql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = "
                        f"'{migrated.keycloak_database}'") == migrated.user("keycloak")

    async def check() -> tuple[str, list[str], str]:
        keycloak = await migrated.connect("keycloak", migrated.keycloak_database)
        try:
            await keycloak.execute("CREATE TABLE realm (id text PRIMARY KEY)")
            owner = await keycloak.fetchval(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'realm'")
        finally:
            await keycloak.close()
        refused = []
        for service in (*SERVICES, "owner"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as error:
                await migrated.connect(service, migrated.keycloak_database)
            refused.append(error.value.sqlstate)
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as error:
            await migrated.connect("keycloak")  # and Keycloak stays out of the platform's
        return owner, refused, error.value.sqlstate

    owner, refused, keycloak_refused = run(check())
    assert owner == migrated.user("keycloak")
    assert refused == ["42501"] * 6 and keycloak_refused == "42501"


def test_every_table_is_in_the_grant_matrix_or_the_owners_alone(migrated):
    granted = set(migrated.sql("SELECT DISTINCT relation FROM service_grants").splitlines())
    assert set(public_tables(migrated)) - granted == OWNER_ONLY


# -- what each role may do ---------------------------------------------------------------------


def test_ui_role_cannot_insert_update_or_delete_anything(migrated):
    tables = public_tables(migrated)
    # A column an UPDATE may name (not an identity column, which refuses any UPDATE).
    column = dict(line.split("|") for line in migrated.sql(
        "SELECT DISTINCT ON (table_name) table_name, column_name FROM "
        "information_schema.columns WHERE table_schema = 'public' AND is_identity = 'NO' "
        "ORDER BY table_name, ordinal_position").splitlines())

    async def check() -> dict[str, list[str | None]]:
        connection = await migrated.connect("ui")
        try:
            return {table: [
                await sqlstate_of(connection, f"INSERT INTO {table} DEFAULT VALUES"),
                await sqlstate_of(connection,
                                  f"UPDATE {table} SET {column[table]} = {column[table]}"),
                await sqlstate_of(connection, f"DELETE FROM {table}"),
                await sqlstate_of(connection, f"TRUNCATE {table}"),
            ] for table in tables}
        finally:
            await connection.close()

    assert run(check()) == {table: ["42501"] * 4 for table in tables}


def test_ui_role_reads_what_the_ui_serves_and_nothing_else(migrated):
    migrated.sql("INSERT INTO devices (device_id) VALUES ('d1');"
                 "INSERT INTO telemetry (device_id, ts, metrics) VALUES ('d1', now(), '{}');"
                 "INSERT INTO alert_rules (name, metric, operator, threshold, window_seconds) "
                 "VALUES ('hot', 't', '>', 1, 60);"
                 "INSERT INTO alerts (rule_id, device_id, window_start, observed) "
                 "SELECT id, 'd1', now(), 2 FROM alert_rules")

    async def check() -> tuple[list[int], list[str | None]]:
        connection = await migrated.connect("ui")
        try:
            counts = [len(await connection.fetch(DEVICES, 10)),
                      len(await connection.fetch(DEVICE_TELEMETRY, "d1", 10)),
                      len(await connection.fetch(ALERTS, 10))]
            refused = [await sqlstate_of(connection, f"SELECT * FROM {table}") for table in
                       ("message_routes", "quarantine", "dead_letters", "delivery_attempts",
                        "evaluator_position", "schema_migrations", "service_grants")]
            return counts, refused
        finally:
            await connection.close()

    counts, refused = run(check())
    assert counts == [1, 1, 1]
    assert refused == ["42501"] * 7


def test_ingest_role_commits_a_batch_and_reads_routes_but_not_their_urls(migrated):
    migrated.sql("INSERT INTO message_routes (device_id, webhook_url) "
                 "VALUES ('d1', 'http://example.invalid/hook')")

    async def check() -> tuple[dict, int, list[str | None]]:
        connection = await migrated.connect("ingest")
        try:
            now = datetime.now(UTC)
            readings = [Reading("d1", now, '{"t": 1}'), Reading("d2", now, '{"t": 2}')]
            record = await connection.fetchrow(
                COMMIT_BATCH, BatchRows(readings=readings).readings_document(),
                "TELEMETRY", [7], ["telemetry.d3"], ["not_json"], [b"x"], [1], [now])
            again = await connection.fetchrow(  # redelivery: ON CONFLICT paths
                COMMIT_BATCH, BatchRows(readings=readings[:1]).readings_document(),
                "TELEMETRY", [7], ["telemetry.d3"], ["not_json"], [b"x"], [1], [now])
            routes = len(await connection.fetch(ROUTED_DEVICES))
            refused = [
                await sqlstate_of(connection, "SELECT webhook_url FROM message_routes"),
                await sqlstate_of(connection, "DELETE FROM telemetry"),
                await sqlstate_of(connection, "SELECT * FROM alerts"),
                await sqlstate_of(connection, "UPDATE telemetry SET metrics = '{}'"),
            ]
            return {**dict(record), "again": again["stored"]}, routes, refused
        finally:
            await connection.close()

    result, routes, refused = run(check())
    assert result == {"stored": 2, "quarantined": 1, "notified": 1, "again": 0}
    assert routes == 1
    assert refused == ["42501"] * 4


def test_evaluator_role_evaluates_and_keeps_its_position_and_nothing_more(migrated):
    migrated.sql("INSERT INTO alert_rules (name, metric, operator, threshold, window_seconds) "
                 "VALUES ('hot', 't', '>', 1, 60);"
                 "INSERT INTO telemetry (device_id, ts, metrics) VALUES ('d1', now(), "
                 "'{\"t\": 5}')")

    async def check() -> tuple[str, list[str | None]]:
        connection = await migrated.connect("evaluator")
        try:
            past = datetime.now(UTC) - timedelta(minutes=5)
            status = await connection.execute(EVALUATE, None, None, past, None, 3600.0, 60.0)
            await connection.execute(SAVE_POSITION, datetime.now(UTC))
            await connection.execute(SAVE_POSITION, datetime.now(UTC))
            assert await connection.fetchval(READ_POSITION) is not None
            refused = [
                await sqlstate_of(connection, "DELETE FROM alerts"),
                await sqlstate_of(connection, "INSERT INTO telemetry (device_id, ts, metrics) "
                                  "VALUES ('x', now(), '{}')"),
                await sqlstate_of(connection, "UPDATE alert_rules SET enabled = false"),
                await sqlstate_of(connection, "SELECT * FROM devices"),
            ]
            return status, refused
        finally:
            await connection.close()

    status, refused = run(check())
    assert status == "INSERT 0 1"
    assert refused == ["42501"] * 4


def test_ops_role_marks_offline_and_prunes_and_nothing_more(migrated):
    migrated.sql("INSERT INTO devices (device_id, last_seen) VALUES ('d1', now() - "
                 "interval '1 hour');"
                 "INSERT INTO telemetry (device_id, ts, metrics) VALUES ('d1', now() - "
                 "interval '40 days', '{}')")

    async def check() -> tuple[str, str, list[str | None]]:
        connection = await migrated.connect("ops")
        try:
            marked = await connection.execute(MARK_OFFLINE, 600.0)
            pruned = await connection.execute(PRUNE_BATCH, 30, 1000)
            refused = [
                await sqlstate_of(connection, "DELETE FROM devices"),
                await sqlstate_of(connection, "INSERT INTO alerts (rule_id, device_id, "
                                  "window_start, observed) VALUES (1, 'x', now(), 1)"),
                await sqlstate_of(connection, "SELECT * FROM message_routes"),
            ]
            return marked, pruned, refused
        finally:
            await connection.close()

    marked, pruned, refused = run(check())
    assert (marked, pruned) == ("UPDATE 1", "DELETE 1")
    assert refused == ["42501"] * 3


def test_route_delivery_role_runs_its_ledger_and_nothing_more(migrated):
    route = migrated.sql("INSERT INTO message_routes (device_id, webhook_url) "
                         "VALUES ('d1', 'http://example.invalid/hook') RETURNING id")

    async def check() -> tuple[str, int, list[str | None]]:
        connection = await migrated.connect("route_delivery")
        try:
            url = (await connection.fetchrow(ROUTE, int(route)))["webhook_url"]
            await connection.fetchval(RECORD_FAILED_ATTEMPT, "m1", int(route), "boom")
            attempts = await connection.fetchval(RECORD_FAILED_ATTEMPT, "m1", int(route), "x")
            await connection.execute(INSERT_DEAD_LETTER, "m1", int(route), "d1", "{}",
                                     attempts, "x")
            await connection.execute(INSERT_DEAD_LETTER, "m1", int(route), "d1", "{}",
                                     attempts, "x")
            await connection.execute(FORGET_ATTEMPTS, "m1")
            await connection.execute(PURGE_STALE_ATTEMPTS)
            refused = [
                await sqlstate_of(connection, "UPDATE message_routes SET enabled = false"),
                await sqlstate_of(connection, "SELECT * FROM telemetry"),
                await sqlstate_of(connection, "DELETE FROM dead_letters"),
            ]
            return url, attempts, refused
        finally:
            await connection.close()

    url, attempts, refused = run(check())
    assert (url, attempts) == ("http://example.invalid/hook", 2)
    assert refused == ["42501"] * 3


# -- the real services with their roles --------------------------------------------------------


def test_every_service_reaches_ready_with_its_own_role(migrated, launch, nats_server):
    names = {"ingest": "ingest_iot", "evaluator": "evaluator_iot", "ui": "ui_iot",
             "ops": "ops_worker", "route_delivery": "route_delivery"}
    processes = [launch(names[s], migrated.service_env(s, nats_server)) for s in SERVICES]
    for process in processes:
        process.wait_ready(timeout=60)
    users = migrated.sql("SELECT string_agg(DISTINCT usename, ' ' ORDER BY usename) FROM "
                         f"pg_stat_activity WHERE datname = '{migrated.database}' "
                         "AND pid <> pg_backend_pid()")
    assert users.split() == sorted(migrated.user(s) for s in SERVICES)


def test_ingest_stores_readings_and_evaluator_alerts_with_their_roles(migrated, launch,
                                                                      nats_server):
    migrated.sql("INSERT INTO alert_rules (name, metric, operator, threshold, window_seconds) "
                 "VALUES ('any', 'temperature', '>', -1000, 60)")
    ingest = launch("ingest_iot", migrated.service_env("ingest", nats_server))
    evaluator = launch("evaluator_iot", migrated.service_env("evaluator"))
    ingest.wait_ready(timeout=60)
    evaluator.wait_ready(timeout=60)
    sent = publish_readings(nats_server.url, range(20), devices=4)
    assert wait_until(lambda: migrated.sql("SELECT count(*) FROM telemetry") == str(sent),
                      timeout=30) is not None
    assert wait_until(lambda: int(migrated.sql("SELECT count(*) FROM alerts")) > 0,
                      timeout=30) is not None
    assert json.loads(ingest.get("/health").body)["status"] == "ok"


def test_ops_worker_marks_devices_offline_with_its_role(migrated, launch):
    migrated.sql("INSERT INTO devices (device_id, last_seen) VALUES "
                 "('quiet', now() - interval '1 hour')")
    ops = launch("ops_worker", migrated.service_env(
        "ops", OFFLINE_AFTER_SECONDS="600", MAINTENANCE_INTERVAL_SECONDS="0.5"))
    ops.wait_ready(timeout=60)
    assert wait_until(lambda: migrated.sql("SELECT status FROM devices") == "offline",
                      timeout=30) is not None


# -- re-runs, upgrades, rotation ---------------------------------------------------------------


def test_a_second_run_changes_no_grant_role_or_owner(migrated):
    before = acl_snapshot(migrated)
    verifiers = migrated.sql("SELECT string_agg(rolpassword, ' ' ORDER BY rolname) FROM "
                             f"pg_authid WHERE rolname LIKE '{migrated.prefix}%'")
    proc = migrated.migrate()
    assert "grants:" not in proc.stderr and "password set" not in proc.stderr
    assert acl_snapshot(migrated) == before
    assert migrated.sql("SELECT string_agg(rolpassword, ' ' ORDER BY rolname) FROM "
                        f"pg_authid WHERE rolname LIKE '{migrated.prefix}%'") == verifiers


def test_a_privilege_outside_the_matrix_is_revoked_by_the_next_run(migrated):
    ui = migrated.user("ui")
    migrated.sql(f'GRANT DELETE ON telemetry TO "{ui}"; GRANT SELECT ON quarantine TO "{ui}"')
    migrated.migrate()
    assert migrated.sql(f"SELECT has_table_privilege('{ui}', 'telemetry', 'DELETE'), "
                        f"has_table_privilege('{ui}', 'quarantine', 'SELECT'), "
                        f"has_table_privilege('{ui}', 'telemetry', 'SELECT')") == "f|f|t"


def test_concurrent_runs_as_every_pod_does_all_succeed(platform):
    def start() -> subprocess.Popen:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DB_"))}
        return subprocess.Popen([sys.executable, "-m", "services.migrate"],
                                env={**environment, **platform.migrate_env()},
                                stderr=subprocess.PIPE, text=True)

    runs = [start() for _ in range(4)]
    results = [(run.wait(120), run.stderr.read() if run.stderr else "") for run in runs]
    assert [code for code, _ in results] == [0] * 4, results
    assert platform.sql("SELECT count(*) FROM schema_migrations") == str(
        len(list(filter(None, platform.sql("SELECT version FROM schema_migrations")
                        .splitlines()))))


def test_an_install_from_before_the_roles_ends_with_the_right_owners_and_grants(platform):
    # The old chart: everything as the superuser, Keycloak's database owned by it too.
    platform.server.migrate(platform.database)
    platform.sql("INSERT INTO devices (device_id) VALUES ('old')")
    platform.sql(f'CREATE DATABASE "{platform.keycloak_database}" '
                 f'OWNER "{platform.server.user}"', database="postgres")
    platform.sql("CREATE TABLE realm (id serial PRIMARY KEY); CREATE VIEW realms AS "
                 "SELECT * FROM realm", database=platform.keycloak_database)
    platform.migrate()
    assert platform.sql("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN "
                        "pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = 'public'") == platform.user("owner")
    assert platform.sql("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN "
                        "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
                        database=platform.keycloak_database) == platform.user("keycloak")
    assert platform.sql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = "
                        f"'{platform.keycloak_database}'") == platform.user("keycloak")

    async def read_as_ui() -> list:
        connection = await platform.connect("ui")
        try:
            return await connection.fetch(DEVICES, 10)
        finally:
            await connection.close()

    assert [row["device_id"] for row in run(read_as_ui())] == ["old"]
    # The migrations after the upgrade run as the owner, who may create and alter tables.
    assert platform.sql("SELECT count(*) FROM schema_migrations WHERE version LIKE '005%'") == "1"


def test_a_changed_password_is_applied_by_the_next_run(migrated):
    old = migrated.password("ingest")
    migrated.passwords["ingest"] = secrets.token_urlsafe(18)
    migrated.migrate()

    async def check() -> str:
        with pytest.raises(asyncpg.InvalidPasswordError):
            await migrated.connect("ingest", password=old)
        connection = await migrated.connect("ingest")
        try:
            return await connection.fetchval("SELECT current_user")
        finally:
            await connection.close()

    assert run(check()) == migrated.user("ingest")


def test_passwords_never_reach_the_server_log(platform):
    platform.sql(f'ALTER DATABASE "{platform.database}" SET log_statement = \'all\'',
                 database="postgres")
    log = platform.server.workdir / "postgres.log"
    start = log.stat().st_size
    platform.migrate()
    platform.passwords["ui"] = secrets.token_urlsafe(18)  # a rotation too
    platform.migrate()
    written = log.read_bytes()[start:].decode(errors="replace")
    assert "GRANT" in written  # statements were logged (the owner's session)
    assert not [who for who, password in platform.passwords.items() if password in written]


def test_scram_verifiers_match_only_their_password():
    verifier = scram_verifier("s3cret")
    assert verifier_matches(verifier, "s3cret")
    assert not verifier_matches(verifier, "s3cret!")
    assert not verifier_matches("md5abcdef", "s3cret")
    assert not verifier_matches(None, "s3cret")


# -- an external database without an admin login -----------------------------------------------


def test_without_an_admin_a_missing_service_role_is_named(platform):
    owner = platform.user("owner")
    platform.sql(f"CREATE ROLE \"{owner}\" LOGIN PASSWORD '{platform.password('owner')}'; "
                 f'ALTER DATABASE "{platform.database}" OWNER TO "{owner}"', database="postgres")
    proc = platform.migrate(platform.migrate_env(admin=False), check=False)
    assert proc.returncode == 1
    assert f"role '{platform.user('ingest')}' (DB_INGEST_USER" in proc.stderr


def test_without_an_admin_a_privileged_service_role_is_refused(platform):
    owner = platform.user("owner")
    statements = [f"CREATE ROLE \"{owner}\" LOGIN PASSWORD '{platform.password('owner')}'",
                  f'ALTER DATABASE "{platform.database}" OWNER TO "{owner}"']
    statements += [f'CREATE ROLE "{platform.user(s)}" LOGIN' for s in SERVICES]
    statements.append(f'ALTER ROLE "{platform.user("ops")}" CREATEDB')
    platform.sql("; ".join(statements), database="postgres")
    proc = platform.migrate(platform.migrate_env(admin=False), check=False)
    assert proc.returncode == 1
    assert "holds CREATEDB" in proc.stderr and platform.user("ops") in proc.stderr


def test_without_an_admin_roles_made_by_a_dba_get_their_grants(platform):
    owner = platform.user("owner")
    statements = [f"CREATE ROLE \"{owner}\" LOGIN PASSWORD '{platform.password('owner')}'",
                  f'ALTER DATABASE "{platform.database}" OWNER TO "{owner}"']
    statements += [f"CREATE ROLE \"{platform.user(s)}\" LOGIN PASSWORD "
                   f"'{platform.password(s)}'" for s in SERVICES]
    platform.sql("; ".join(statements), database="postgres")
    platform.migrate(platform.migrate_env(admin=False))

    async def check() -> tuple[str | None, str | None]:
        connection = await platform.connect("ui")
        try:
            return (await sqlstate_of(connection, "SELECT * FROM devices"),
                    await sqlstate_of(connection, "DELETE FROM devices"))
        finally:
            await connection.close()

    assert run(check()) == (None, "42501")
