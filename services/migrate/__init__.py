"""Idempotent, concurrency-safe schema migration: `python -m services.migrate`.

Migrations are the numbered *.sql files beside this module, applied in order, each in its
own transaction and recorded in schema_migrations. A session advisory lock serialises
concurrent runs (every service pod runs this as an init container), so running it any
number of times, at once, is safe.

Roles (roles.py): with DB_ADMIN_USER set, an admin session first creates or updates the owner,
the service roles and Keycloak's database; the migrations then run as the owner (the user of
DATABASE_URL or PGUSER, password PGPASSWORD), and each service role's grants are reconciled
with table service_grants.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from importlib import resources

import asyncpg

from services.common import db
from services.common.config import Env
from services.common.faults import is_dependency_error
from services.common.logs import describe_error, redact_url
from services.migrate.roles import (
    Login,
    RoleSettings,
    RoleSetupError,
    bootstrap,
    check_roles,
    reconcile_grants,
)

log = logging.getLogger("migrate")

# Any constant works; it only has to be the same for every run.
ADVISORY_LOCK_KEY = 7_400_001


@dataclass(frozen=True)
class MigrateConfig:
    database_url: str
    wait_seconds: float
    roles: RoleSettings = field(default_factory=RoleSettings)

    @classmethod
    def from_env(cls, env: Env) -> MigrateConfig:
        database_url = env.url("DATABASE_URL", ("postgresql", "postgres"))
        return cls(
            database_url=database_url,
            wait_seconds=env.seconds("MIGRATE_WAIT_SECONDS", 60.0, maximum=3600),
            roles=RoleSettings.from_env(env, database_url),
        )


class DatabaseNotReachableError(RuntimeError):
    pass


def migrations() -> list[tuple[str, str]]:
    """(version, sql) for every migration file, in order."""
    files = [
        entry for entry in resources.files(__package__).iterdir() if entry.name.endswith(".sql")
    ]
    return [(entry.name.removesuffix(".sql"), entry.read_text()) for entry in
            sorted(files, key=lambda entry: entry.name)]


async def connect(url: str, login: Login | None = None,
                  database: str | None = None) -> asyncpg.Connection:
    """A session as `login` (None: as DATABASE_URL/PGUSER/PGPASSWORD say), on `database`
    (None: DATABASE_URL's)."""
    if login is None and database is None:
        return await db.connect(url, "migrate")
    options: dict = {"database": database} if database else {}
    if login is not None:
        options.update(user=login.user, password=login.password)
    return await asyncpg.connect(url, timeout=5.0, **options,
                                 server_settings={"application_name": "migrate"})


async def wait_for_database(url: str, wait_seconds: float,
                            login: Login | None = None) -> asyncpg.Connection:
    deadline = time.monotonic() + wait_seconds
    reported = False
    while True:
        try:
            return await connect(url, login)
        except Exception as error:
            if not is_dependency_error(error):
                raise
            if time.monotonic() >= deadline:
                raise DatabaseNotReachableError(
                    f"database {redact_url(url)} not reachable within {wait_seconds:g} s "
                    f"(last error: {describe_error(error)})") from None
            if not reported:
                log.info("waiting up to %g s for the database (%s)", wait_seconds,
                         describe_error(error))
                reported = True
            await asyncio.sleep(0.5)


async def apply_migrations(
    connection: asyncpg.Connection, roles: RoleSettings | None = None
) -> list[str]:
    """Apply what is missing, then reconcile the service roles' grants; returns the versions
    applied by this run."""
    roles = roles or RoleSettings()
    await connection.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {row["version"] for row in
                   await connection.fetch("SELECT version FROM schema_migrations")}
        newly_applied = []
        for version, sql in migrations():
            if version in applied:
                continue
            async with connection.transaction():
                await connection.execute(sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)", version)
            newly_applied.append(version)
        if roles.services:
            if roles.admin is None:
                await check_roles(connection, roles)
            await reconcile_grants(connection, roles)
        return newly_applied
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def bootstrap_roles(config: MigrateConfig) -> None:
    """The admin's part (roles.bootstrap), under the migration lock."""
    admin_login = config.roles.admin
    assert admin_login is not None
    admin = await wait_for_database(config.database_url, config.wait_seconds, admin_login)
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            await bootstrap(admin, config.roles, database,
                            lambda name: connect(config.database_url, admin_login, name))
        finally:
            await admin.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await admin.close()


async def migrate(config: MigrateConfig) -> list[str]:
    if config.roles.admin is not None:
        await bootstrap_roles(config)
    connection = await wait_for_database(config.database_url, config.wait_seconds)
    try:
        return await apply_migrations(connection, config.roles)
    finally:
        await connection.close()


__all__ = ["DatabaseNotReachableError", "MigrateConfig", "RoleSetupError", "migrate"]
