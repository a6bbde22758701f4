"""Database roles: the owner that runs the migrations, one login per service, Keycloak's own.

Two ways in, both idempotent (every service pod runs migrate as an init container, on fresh
installs and on upgrades alike):

- With an admin login (DB_ADMIN_USER / DB_ADMIN_PASSWORD: the in-chart PostgreSQL's bootstrap
  superuser, or an external server's role with CREATEROLE and CREATEDB), `bootstrap` creates
  or updates the owner and every service role (password from the environment, applied only
  when it differs from the stored one: rotation), takes the database's CONNECT and TEMPORARY
  from PUBLIC, moves every object of schema public to the owner (an install from before the
  roles existed has everything owned by the superuser), and gives Keycloak its own role and
  database.
- Without one (an external database whose DBA made the roles), `check_roles` only verifies:
  each service role exists, holds no dangerous attribute and is not the owner.

Then, connected as the owner, `reconcile_grants` makes each service role's privileges equal to
the matrix in table service_grants (migration 005; later migrations add their rows): missing
ones granted, others revoked. Nothing else grants to service roles, so the matrix is the
whole truth, re-applied on every run.

Passwords reach the server as SCRAM-SHA-256 verifiers computed here, never in clear: a
statement log (log_statement = ddl) shows no password.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import asyncpg

from services.common.config import ConfigError, Env

log = logging.getLogger("migrate")

# The services' names in service_grants and the prefix of their variables (DB_<PREFIX>_USER,
# DB_<PREFIX>_PASSWORD).
SERVICES = {"ingest": "INGEST", "evaluator": "EVALUATOR", "ui": "UI", "ops": "OPS",
            "route_delivery": "ROUTE_DELIVERY"}
# Role attributes no login of the platform but the admin may hold.
FORBIDDEN_ATTRIBUTES = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication",
                        "rolbypassrls")
SAFE_ATTRIBUTES = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
SCRAM_ITERATIONS = 4096
# Relations whose ownership moves to the owner: tables, views, materialized views, foreign
# tables, sequences (a sequence owned by a column moves with its table).
RELATIONS_NOT_OWNED_BY = """
SELECT c.oid::regclass::text AS name, c.relkind::text AS relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY ($2::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND c.relowner <> $1::regrole
  AND NOT (c.relkind = 'S' AND EXISTS (
      SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
ORDER BY 1
"""
USER_SCHEMAS = """
SELECT coalesce(array_agg(nspname::text), '{}') FROM pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND nspname NOT LIKE 'pg_temp%' AND nspname NOT LIKE 'pg_toast_temp%'
"""
ALTER_OWNER = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW",
               "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}


ConnectAsAdmin = Callable[[str], Awaitable[asyncpg.Connection]]


class RoleSetupError(RuntimeError):
    """The database's roles are not as the platform needs them, with what to do instead."""


@dataclass(frozen=True)
class Login:
    user: str
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RoleSettings:
    """Who is who. `owner` None: migrate runs as whoever DATABASE_URL/PGUSER names and
    touches no role (a development database with one user)."""

    owner: Login | None = None
    admin: Login | None = None
    services: dict[str, Login] = field(default_factory=dict)
    keycloak: Login | None = None
    keycloak_database: str | None = None

    @classmethod
    def from_env(cls, env: Env, database_url: str) -> RoleSettings:
        admin_user = env.optional("DB_ADMIN_USER")
        admin = None
        if admin_user is not None:
            admin = Login(admin_user, _required_secret(env, "DB_ADMIN_PASSWORD", "DB_ADMIN_USER"))
        services = {}
        for service, prefix in SERVICES.items():
            user = env.optional(f"DB_{prefix}_USER")
            if user is None:
                continue
            password = None
            if admin is not None:
                password = _required_secret(env, f"DB_{prefix}_PASSWORD", "DB_ADMIN_USER")
            services[service] = Login(user, password)
        owner_user = unquote(urlsplit(database_url).username or "") or env.optional("PGUSER")
        owner = None
        if owner_user is not None and (services or admin is not None):
            owner = Login(owner_user, env.secret("PGPASSWORD"))
        elif admin is not None:
            raise ConfigError("PGUSER", "must name the owner role when DB_ADMIN_USER is set "
                              "(or DATABASE_URL must carry a user)")
        if admin is not None and owner is not None and owner.password is None:
            raise ConfigError("PGPASSWORD", "is required with DB_ADMIN_USER: the owner role's "
                              "password is set from it")
        keycloak, keycloak_database = None, env.optional("KEYCLOAK_DB_NAME")
        keycloak_user = env.optional("KEYCLOAK_DB_USER")
        if keycloak_user is not None or keycloak_database is not None:
            if admin is None:
                raise ConfigError("KEYCLOAK_DB_USER", "needs DB_ADMIN_USER: only the admin "
                                  "creates Keycloak's role and database")
            if keycloak_user is None or keycloak_database is None:
                raise ConfigError("KEYCLOAK_DB_NAME", "and KEYCLOAK_DB_USER go together")
            keycloak = Login(keycloak_user,
                             _required_secret(env, "KEYCLOAK_DB_PASSWORD", "KEYCLOAK_DB_USER"))
        settings = cls(owner, admin, services, keycloak, keycloak_database)
        settings._check_distinct()
        return settings

    def _check_distinct(self) -> None:
        seen: dict[str, str] = {}
        named = [("DB_ADMIN_USER", self.admin), ("the owner (PGUSER)", self.owner),
                 *((f"DB_{SERVICES[s]}_USER", login) for s, login in self.services.items()),
                 ("KEYCLOAK_DB_USER", self.keycloak)]
        for variable, login in named:
            if login is None:
                continue
            if login.user in seen:
                raise ConfigError(variable, f"names role {login.user!r}, already used by "
                                  f"{seen[login.user]}: every login needs a role of its own")
            seen[login.user] = variable

    @property
    def logins(self) -> list[Login]:
        """The roles the admin creates and keeps: owner, services, Keycloak."""
        found = [self.owner, *self.services.values(), self.keycloak]
        return [login for login in found if login is not None]


def _required_secret(env: Env, name: str, because: str) -> str:
    value = env.secret(name)
    if value is None:
        raise ConfigError(name, f"is required with {because}: the role's password is set "
                          "from it")
    return value


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    # standard_conforming_strings is on (the default since 9.1): only quotes need doubling.
    return "'" + text.replace("'", "''") + "'"


# -- passwords as SCRAM-SHA-256 verifiers (RFC 5802/7677, PostgreSQL's stored format) ---------


def _scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return stored_key, server_key


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    stored_key, server_key = _scram_keys(password, salt, SCRAM_ITERATIONS)
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def verifier_matches(verifier: str | None, password: str) -> bool:
    """Whether a stored rolpassword is `password` (False for MD5, clear text or garbage)."""
    try:
        method, rest = (verifier or "").split("$", 1)
        head, keys = rest.split("$", 1)
        iterations, salt = head.split(":", 1)
        stored_key, server_key = keys.split(":", 1)
        if method != "SCRAM-SHA-256":
            return False
        expected = _scram_keys(password, base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected[0], base64.b64decode(stored_key)) and \
        hmac.compare_digest(expected[1], base64.b64decode(server_key))


def _password_clause(password: str) -> str:
    # PostgreSQL normalises non-ASCII passwords (SASLprep) before hashing; rather than
    # reimplement it, such a password goes to the server to hash (in the statement, then).
    if password.isascii():
        return f"PASSWORD {quote_literal(scram_verifier(password))}"
    return f"PASSWORD {quote_literal(password)}"


# -- the admin's part ------------------------------------------------------------------------


async def bootstrap(
    admin: asyncpg.Connection, settings: RoleSettings, database: str, connect: ConnectAsAdmin
) -> None:
    """Roles, passwords, database privileges, ownership, Keycloak's database. The caller
    holds the migration lock on `admin` (concurrent pods would race on CREATE ROLE);
    `connect(name)` opens an admin session on another database of the server."""
    # Belt and braces over the verifiers: statement logging off for this session (a
    # CREATEROLE admin that is not superuser may not: the verifiers suffice then).
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await admin.execute("SET log_statement = 'none'")
    for login in settings.logins:
        await ensure_login(admin, login)
    assert settings.owner is not None
    await secure_database(admin, database, settings.owner.user,
                          [login.user for login in settings.services.values()])
    await transfer_ownership(admin, settings.owner.user, ["public"])
    if settings.keycloak is not None and settings.keycloak_database is not None:
        await ensure_keycloak_database(admin, settings.keycloak.user,
                                       settings.keycloak_database, connect)


async def ensure_login(admin: asyncpg.Connection, login: Login) -> None:
    """CREATE the role, or bring it back to LOGIN, safe attributes and its password."""
    role = await admin.fetchrow(
        f"SELECT rolname, {', '.join(FORBIDDEN_ATTRIBUTES)}, rolcanlogin FROM pg_roles "
        "WHERE rolname = $1", login.user)
    name = quote_ident(login.user)
    assert login.password is not None
    if role is None:
        # CREATE ROLE's defaults are the safe attributes; naming them would need superuser
        # (for REPLICATION/BYPASSRLS) on servers before 16.
        await admin.execute(f"CREATE ROLE {name} LOGIN {_password_clause(login.password)}")
        log.info("created role %s", login.user)
        return
    if any(role[attribute] for attribute in FORBIDDEN_ATTRIBUTES) or not role["rolcanlogin"]:
        await admin.execute(f"ALTER ROLE {name} LOGIN {SAFE_ATTRIBUTES}")
        log.info("role %s: attributes reset to LOGIN %s", login.user, SAFE_ATTRIBUTES)
    if not await _password_is(admin, login.user, login.password):
        await admin.execute(f"ALTER ROLE {name} {_password_clause(login.password)}")
        log.info("role %s: password set", login.user)


async def _password_is(admin: asyncpg.Connection, user: str, password: str) -> bool:
    try:
        stored = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                                      user)
    except asyncpg.InsufficientPrivilegeError:
        return False  # pg_authid is the superuser's: set the password on every run then
    return verifier_matches(stored, password)


async def secure_database(
    admin: asyncpg.Connection, database: str, owner: str, services: list[str]
) -> None:
    """Only the platform's roles connect; only the owner creates objects."""
    db, owner_role = quote_ident(database), quote_ident(owner)
    statements = [
        f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {db} TO {owner_role}",
        # Before PostgreSQL 15, PUBLIC may create in schema public: a service role could
        # then own a table.
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {owner_role}",
    ]
    for service in services:
        statements.append(f"GRANT CONNECT ON DATABASE {db} TO {quote_ident(service)}")
        statements.append(f"GRANT USAGE ON SCHEMA public TO {quote_ident(service)}")
    async with admin.transaction():
        for statement in statements:
            await admin.execute(statement)


async def transfer_ownership(
    admin: asyncpg.Connection, owner: str, schemas: list[str] | None = None
) -> int:
    """Every relation of `schemas` (None: every user schema) owned by someone else moves to
    `owner`. (REASSIGN OWNED cannot: the objects of an install from before the roles belong
    to the bootstrap superuser, whose objects it refuses to touch.)"""
    if schemas is None:
        schemas = list(await admin.fetchval(USER_SCHEMAS))
    rows = await admin.fetch(RELATIONS_NOT_OWNED_BY, owner, schemas)
    async with admin.transaction():
        for row in rows:
            await admin.execute(f"ALTER {ALTER_OWNER[row['relkind']]} {row['name']} "
                                f"OWNER TO {quote_ident(owner)}")
    if rows:
        log.info("moved %d objects to owner %s", len(rows), owner)
    return len(rows)


async def ensure_keycloak_database(
    admin: asyncpg.Connection, role: str, database: str, connect: ConnectAsAdmin
) -> None:
    """Keycloak's database, owned by its role (an install from before the roles has it, and
    Keycloak's tables, owned by the superuser), closed to every other role."""
    owner = await admin.fetchval(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database)
    db, role_name = quote_ident(database), quote_ident(role)
    if owner is None:
        await admin.execute(f"CREATE DATABASE {db} OWNER {role_name}")
        log.info("created database %s owned by %s", database, role)
    elif owner != role:
        await admin.execute(f"ALTER DATABASE {db} OWNER TO {role_name}")
        log.info("database %s: owner %s -> %s", database, owner, role)
    await admin.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
    # Keycloak's own tables: checked on every run, so an interrupted transfer completes.
    connection = await connect(database)
    try:
        await transfer_ownership(connection, role)
    finally:
        await connection.close()


# -- the owner's part ------------------------------------------------------------------------


async def check_roles(owner: asyncpg.Connection, settings: RoleSettings) -> None:
    """Without an admin: the service roles must exist and be plain logins."""
    me = await owner.fetchval("SELECT current_user")
    for service, login in settings.services.items():
        variable = f"DB_{SERVICES[service]}_USER"
        role = await owner.fetchrow(
            f"SELECT {', '.join(FORBIDDEN_ATTRIBUTES)} FROM pg_roles WHERE rolname = $1",
            login.user)
        if role is None:
            raise RoleSetupError(
                f"role {login.user!r} ({variable}, the {service} service's login) does not "
                f"exist: create it (CREATE ROLE {quote_ident(login.user)} LOGIN PASSWORD "
                "'...') and GRANT CONNECT ON DATABASE to it, or give migrate an admin login "
                "(externalDatabase.admin.existingSecret) that creates it")
        held = [attribute.removeprefix("rol").upper() for attribute in FORBIDDEN_ATTRIBUTES
                if role[attribute]]
        if held:
            raise RoleSetupError(
                f"role {login.user!r} ({variable}) holds {', '.join(held)}: a service's login "
                f"must not; ALTER ROLE {quote_ident(login.user)} {SAFE_ATTRIBUTES}")
        if login.user == me:
            raise RoleSetupError(f"role {login.user!r} ({variable}) is the owner migrate runs "
                                 "as: every service needs a login of its own")
    foreign = await owner.fetch(RELATIONS_NOT_OWNED_BY, me, ["public"])
    if foreign:
        names = ", ".join(row["name"] for row in foreign[:5])
        raise RoleSetupError(
            f"{len(foreign)} objects of schema public are not owned by {me!r}, the owner "
            f"migrate runs as (e.g. {names}): only their owner can grant on them; ALTER TABLE "
            f"... OWNER TO {quote_ident(me)} for each, or give migrate an admin login "
            "(externalDatabase.admin.existingSecret) that moves them")


GRANT_MATRIX = """
SELECT relation, privileges, columns FROM service_grants WHERE service = $1
"""
TABLE_PRIVILEGES = """
SELECT c.oid::regclass::text AS relation, c.relkind::text AS relkind, x.privilege_type
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) x
WHERE n.nspname = 'public' AND x.grantee = $1::regrole
"""
COLUMN_PRIVILEGES = """
SELECT c.oid::regclass::text AS relation, a.attname::text AS column_name, x.privilege_type
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
CROSS JOIN LATERAL aclexplode(a.attacl) x
WHERE n.nspname = 'public' AND x.grantee = $1::regrole
"""


async def reconcile_grants(owner: asyncpg.Connection, settings: RoleSettings) -> list[str]:
    """Make every configured service role's privileges in schema public equal to
    service_grants; returns the statements run (empty when nothing changed)."""
    statements: list[str] = []
    for service, login in settings.services.items():
        statements += await _grant_statements(owner, service, login.user)
    if statements:
        async with owner.transaction():
            for statement in statements:
                await owner.execute(statement)
        log.info("grants: %d changes (%s)", len(statements), "; ".join(statements))
    return statements


async def _grant_statements(owner: asyncpg.Connection, service: str, role: str) -> list[str]:
    want_table: set[tuple[str, str]] = set()
    want_column: set[tuple[str, str, str]] = set()
    for row in await owner.fetch(GRANT_MATRIX, service):
        # regclass: the same spelling as the catalog queries give (and fails on a typo).
        relation = await owner.fetchval("SELECT $1::regclass::text", row["relation"])
        for privilege in row["privileges"]:
            if row["columns"] is None:
                want_table.add((relation, privilege))
            else:
                want_column.update((relation, column, privilege) for column in row["columns"])
    have_table = {(r["relation"], r["privilege_type"]): r["relkind"]
                  for r in await owner.fetch(TABLE_PRIVILEGES, role)}
    have_column = {(r["relation"], r["column_name"], r["privilege_type"])
                   for r in await owner.fetch(COLUMN_PRIVILEGES, role)}
    grantee = quote_ident(role)
    statements = []
    for relation, privilege in sorted(set(have_table) - want_table):
        kind = "SEQUENCE" if have_table[(relation, privilege)] == "S" else "TABLE"
        statements.append(f"REVOKE {privilege} ON {kind} {relation} FROM {grantee}")
    for relation, column, privilege in sorted(have_column - want_column):
        statements.append(
            f"REVOKE {privilege} ({quote_ident(column)}) ON TABLE {relation} FROM {grantee}")
    for relation, privilege in sorted(want_table - set(have_table)):
        statements.append(f"GRANT {privilege} ON TABLE {relation} TO {grantee}")
    for relation, column, privilege in sorted(want_column - have_column):
        statements.append(
            f"GRANT {privilege} ({quote_ident(column)}) ON TABLE {relation} TO {grantee}")
    return statements
