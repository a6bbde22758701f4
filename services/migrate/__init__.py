"""Idempotent, concurrency-safe schema migration: `python -m services.migrate`.

Migrations are the numbered *.sql files beside this module, applied in order, each in its
own transaction and recorded in schema_migrations. A session advisory lock serialises
concurrent runs (every service pod runs this as an init container), so running it any
number of times, at once, is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from importlib import resources

import asyncpg

from services.common import db
from services.common.config import Env
from services.common.faults import is_dependency_error
from services.common.logs import describe_error, redact_url

log = logging.getLogger("migrate")

# Any constant works; it only has to be the same for every run.
ADVISORY_LOCK_KEY = 7_400_001


@dataclass(frozen=True)
class MigrateConfig:
    database_url: str
    wait_seconds: float

    @classmethod
    def from_env(cls, env: Env) -> MigrateConfig:
        return cls(
            database_url=env.url("DATABASE_URL", ("postgresql", "postgres")),
            wait_seconds=env.seconds("MIGRATE_WAIT_SECONDS", 60.0, maximum=3600),
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


async def wait_for_database(url: str, wait_seconds: float) -> asyncpg.Connection:
    deadline = time.monotonic() + wait_seconds
    reported = False
    while True:
        try:
            return await db.connect(url, "migrate")
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


async def apply_migrations(connection: asyncpg.Connection) -> list[str]:
    """Apply what is missing; returns the versions applied by this run."""
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
        return newly_applied
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def migrate(config: MigrateConfig) -> list[str]:
    connection = await wait_for_database(config.database_url, config.wait_seconds)
    try:
        return await apply_migrations(connection)
    finally:
        await connection.close()
