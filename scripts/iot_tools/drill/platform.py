"""Local stand-ins for what the cluster gives the pods: a NATS (JetStream) and a PostgreSQL
server behind the Service names of the render, one network namespace per pod (its container
ports mapped to free local ports), and the init containers.

PostgreSQL is initialised with the render's bootstrap superuser (the `migrate` container's
DB_ADMIN_USER/DB_ADMIN_PASSWORD, the chart's POSTGRES_USER/POSTGRES_PASSWORD); `migrate` then
creates the owner and every service role with the rendered passwords, and each service logs in
as its own role. nats-server runs the rendered nats.conf (users, permissions, `$NATS_*`
password references) with the pod's env; the `streams` init container creates the streams as
the NATS owner. The drill's own NATS client (feed, poison storm, consumer deletion) logs in as
one user the drill adds to that authorization block (`drill`, random password): the chart's
bridge user is MQTT-only, and the services' users cannot publish telemetry.

A container's environment is the render's, with three mappings and nothing else:
  - `<service-host>:<port>` of the database and NATS URLs → the local servers' 127.0.0.1:port;
  - HEALTH_PORT → the local port its container port is mapped to;
  - secretKeyRef/configMapKeyRef already resolved from the render (render.py).
The drill may add the services' documented test hooks (IOT_TEST_HOOKS and the delay knobs)
to the containers a fault needs them in; `extra_env` says which.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from iot_tools.chart_nats import local_config
from iot_tools.drill.render import (
    ContainerPlan,
    Endpoint,
    RenderedNats,
    RenderedPlatform,
    RenderReadError,
)
from iot_tools.drill.spec import Exec
from iot_tools.servers import NatsServer, PostgresServer, free_port
from iot_tools.services import ServiceProcess

LOOPBACK = "127.0.0.1"
MIGRATE_TIMEOUT_SECONDS = 120
DRILL_NATS_USER = "drill"
DRILL_NATS_PASSWORD_ENV = "NATS_DRILL_PASSWORD"
NATS_POD_NAME = "iot-nats-0"


def rewrite_endpoints(value: str, mapping: Mapping[tuple[str, int], int]) -> str:
    """Replace every `host:port` of `mapping` in `value` by 127.0.0.1:<local port>."""
    for (host, port), local in mapping.items():
        pattern = rf"(?<![\w.-]){re.escape(host)}:{port}(?!\d)"
        value = re.sub(pattern, f"{LOOPBACK}:{local}", value)
    return value


@dataclass(frozen=True)
class PodNetwork:
    """A pod's ports: container port → local port (each pod has its own namespace in the
    cluster; here the pods share loopback, so each gets distinct local ports)."""

    ports: dict[int, int]
    named: dict[str, int]

    @classmethod
    def allocate(cls, plan: ContainerPlan) -> PodNetwork:
        numbers = {*plan.ports.values(), plan.health_port}
        for probe in plan.probes.values():
            if not isinstance(probe.handler, Exec):
                numbers.add(_resolve(plan, probe.handler.port))
        return cls({number: free_port() for number in sorted(numbers)}, dict(plan.ports))

    def local(self, port: int | str) -> int:
        number = self.named[port] if isinstance(port, str) and not port.isdigit() else int(port)
        return self.ports[number]


def _resolve(plan: ContainerPlan, port: int | str) -> int:
    if isinstance(port, int) or port.isdigit():
        return int(port)
    if port not in plan.ports:
        raise RenderReadError(f"{plan.workload}: probe port {port!r} is not a declared port")
    return plan.ports[port]


@dataclass
class LocalPlatform:
    """The servers, the env mapping and the service processes of one drill run."""

    rendered: RenderedPlatform
    workdir: Path
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    nats: NatsServer | None = None
    postgres: PostgresServer | None = None
    networks: dict[str, PodNetwork] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        for plan in self.rendered.containers:
            self.networks[plan.service] = PodNetwork.allocate(plan)

    # -- servers -------------------------------------------------------------------------

    def start_servers(self) -> None:
        database = self.rendered.database
        # The render's bootstrap superuser: migrate creates the service roles with it.
        self.postgres = PostgresServer(
            self.workdir / "postgresql", user=self.rendered.database_admin,
            database=database.database or "iot",
            password=self.rendered.database_admin_password,
        ).start()
        if self.rendered.nats is not None:
            self.nats = self._nats_server().start()

    def _nats_server(self) -> NatsServer:
        """The rendered nats.conf, pointed at local ports and this workdir, plus the drill's
        own user. No stream yet: the `streams` init container creates them. Without an
        in-chart NATS (external NATS) a nats-server without authorization."""
        workdir = self.workdir / "nats"
        rendered = self.rendered.nats_server
        if rendered is None:
            return NatsServer(workdir, streams=False)
        # nats-server parses an environment variable's value as a config value: a password
        # of digits then '-' ("4-eX…", as token_urlsafe sometimes gives) reads as a broken
        # ISO 8601 date and the server refuses to start (seen in a test run). A letter first,
        # then hex, is always a plain string.
        password = "d" + secrets.token_hex(16)
        server = NatsServer(workdir, streams=False, user=DRILL_NATS_USER, password=password)
        server.config_text = local_nats_config(rendered, server.port, server.monitor_port,
                                               free_port(), workdir)
        server.env = {"POD_NAME": NATS_POD_NAME, **rendered.env,
                      DRILL_NATS_PASSWORD_ENV: password}
        return server

    def endpoints(self) -> dict[tuple[str, int], int]:
        """Render endpoint (Service host, port) → local server port."""
        mapping: dict[tuple[str, int], int] = {}
        if self.postgres is not None:
            mapping[_host_port(self.rendered.database)] = self.postgres.port
        if self.nats is not None and self.rendered.nats is not None:
            mapping[_host_port(self.rendered.nats)] = self.nats.port
        return mapping

    # -- containers ----------------------------------------------------------------------

    def container_env(self, plan: ContainerPlan) -> dict[str, str]:
        endpoints = self.endpoints()
        env = {name: rewrite_endpoints(value, endpoints) for name, value in plan.env.items()}
        if plan.service in self.networks:
            env["HEALTH_PORT"] = str(self.networks[plan.service].local(plan.health_port))
        env.update(self.extra_env.get(plan.service, {}))
        return env

    def run_init_containers(self) -> None:
        """Run the init containers once, as every pod would: `migrate` (roles as the
        superuser, then the schema as the owner), then `streams` (as the NATS owner)."""
        self._run_init(self.rendered.migrate, "migrate")
        if self.rendered.streams is not None and self.nats is not None:
            self._run_init(self.rendered.streams, "streams")

    def _run_init(self, plan: ContainerPlan, name: str) -> None:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as output:
            result = subprocess.run(
                _local_command(plan.command), env={**os.environ, **self.container_env(plan)},
                stdout=output, stderr=output, timeout=MIGRATE_TIMEOUT_SECONDS, check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"init container {name} failed with {result.returncode}; "
                               f"see {log}")

    def service_process(self, plan: ContainerPlan) -> ServiceProcess:
        port = self.networks[plan.service].local(plan.health_port)
        return ServiceProcess(plan.service, self.container_env(plan), self.logs, port=port)

    def stop(self) -> None:
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def local_nats_config(rendered: RenderedNats, port: int, monitor_port: int, mqtt_port: int,
                      workdir: Path) -> str:
    """The rendered nats.conf with only its listen addresses, store and pid file pointed at
    this machine, and the drill's user added to its authorization block."""
    try:
        local = local_config(rendered.config, client=port, monitor=monitor_port, mqtt=mqtt_port,
                             store=workdir / "jetstream", pid_file=workdir / "nats.pid")
    except ValueError as error:
        raise RenderReadError(str(error)) from None
    users = "  users = [\n"
    if local.count(users) != 1:
        raise RenderReadError("the rendered nats.conf no longer has the users block the "
                              "drill adds its own user to")
    drill_user = (f'    {{ user: "{DRILL_NATS_USER}", password: ${DRILL_NATS_PASSWORD_ENV}, '
                  'allowed_connection_types: ["STANDARD"] }\n')
    return local.replace(users, users + drill_user)


def _host_port(endpoint: Endpoint) -> tuple[str, int]:
    return endpoint.host, endpoint.port


def _local_command(command: tuple[str, ...]) -> list[str]:
    """The container's command with its `python` as this interpreter (the project's venv)."""
    if command and Path(command[0]).name.startswith("python"):
        return [sys.executable, *command[1:]]
    return list(command)
