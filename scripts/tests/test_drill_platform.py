"""The drill's local platform against real servers: PostgreSQL initialised with the render's
bootstrap superuser, the `migrate` init container creating the service roles with the rendered
passwords, nats-server running the rendered nats.conf, and the `streams` init container
creating the streams as the NATS owner."""

from __future__ import annotations

import asyncio

import asyncpg
import nats
import pytest
from iot_tools.drill.platform import DRILL_NATS_USER, LocalPlatform
from iot_tools.drill.render import read_render
from nats.errors import Error as NatsError


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    local = LocalPlatform(read_render(), tmp_path_factory.mktemp("drill-platform"))
    try:
        local.start_servers()
        local.run_init_containers()
        yield local
    finally:
        local.stop()


async def login_as(env: dict[str, str]) -> str:
    connection = await asyncpg.connect(env["DATABASE_URL"], user=env["PGUSER"],
                                       password=env["PGPASSWORD"], timeout=10)
    try:
        return await connection.fetchval("SELECT current_user")
    finally:
        await connection.close()


def test_each_service_connects_as_its_own_role_created_by_migrate(platform):
    for plan in platform.rendered.containers:
        env = platform.container_env(plan)
        assert asyncio.run(login_as(env)) == plan.env["PGUSER"]
        assert plan.env["PGUSER"] != platform.rendered.database_admin


async def quiet(_error: Exception) -> None:
    pass


async def stream_names(url: str, env: dict[str, str]) -> set[str]:
    connection = await asyncio.wait_for(nats.connect(
        url, user=env["NATS_USER"], password=env["NATS_PASSWORD"],
        inbox_prefix=env["NATS_INBOX_PREFIX"], allow_reconnect=False, error_cb=quiet,
        connect_timeout=5), 30)
    try:
        js = connection.jetstream()
        return {name for name in ("TELEMETRY", "ROUTES")
                if (await js.stream_info(name)).config.name == name}
    finally:
        await connection.close()


def test_streams_exist_and_the_services_nats_logins_are_the_rendered_ones(platform):
    url = f"nats://127.0.0.1:{platform.nats.port}"
    ingest = platform.container_env(platform.rendered.container("ingest_iot"))
    assert asyncio.run(stream_names(url, ingest)) == {"TELEMETRY", "ROUTES"}


def test_the_nats_server_refuses_a_wrong_password(platform):
    url = f"nats://127.0.0.1:{platform.nats.port}"
    ingest = platform.container_env(platform.rendered.container("ingest_iot"))
    with pytest.raises(NatsError, match="Authorization Violation"):
        asyncio.run(stream_names(url, {**ingest, "NATS_PASSWORD": "wrong"}))


def test_the_drills_own_client_logs_in_as_its_added_user(platform):
    assert platform.nats.url.startswith(f"nats://{DRILL_NATS_USER}:")

    async def publish() -> int:
        connection = await asyncio.wait_for(nats.connect(
            platform.nats.url, allow_reconnect=False, error_cb=quiet), 30)
        try:
            ack = await connection.jetstream().publish("telemetry.dev-probe", b"{}")
            return ack.seq
        finally:
            await connection.close()

    assert asyncio.run(publish()) >= 1
