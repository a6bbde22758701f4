"""Local stand-ins for what the cluster gives the pods: a NATS (JetStream) and a PostgreSQL
server behind the Service names of the render, one network namespace per pod (its container
ports mapped to free local ports), and the init container's migration.

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
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from iot_tools.drill.render import ContainerPlan, Endpoint, RenderedPlatform, RenderReadError
from iot_tools.drill.spec import Exec
from iot_tools.servers import NatsServer, PostgresServer, free_port
from iot_tools.services import ServiceProcess

LOOPBACK = "127.0.0.1"
MIGRATE_TIMEOUT_SECONDS = 120


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
        # The password is the render's Secret: PGPASSWORD reaches the services from there.
        self.postgres = PostgresServer(
            self.workdir / "postgresql", user=database.user or "iot",
            database=database.database or "iot", password=self.rendered.database_password,
        ).start()
        if self.rendered.nats is not None:
            self.nats = NatsServer(self.workdir / "nats").start()

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

    def migrate(self) -> None:
        """Run the init container (`python -m services.migrate`) once, as every pod would."""
        plan = self.rendered.migrate
        log = self.logs / "migrate.log"
        with open(log, "ab") as output:
            result = subprocess.run(
                _local_command(plan.command), env={**os.environ, **self.container_env(plan)},
                stdout=output, stderr=output, timeout=MIGRATE_TIMEOUT_SECONDS, check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"migration failed with {result.returncode}; see {log}")

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


def _host_port(endpoint: Endpoint) -> tuple[str, int]:
    return endpoint.host, endpoint.port


def _local_command(command: tuple[str, ...]) -> list[str]:
    """The container's command with its `python` as this interpreter (the project's venv)."""
    if command and Path(command[0]).name.startswith("python"):
        return [sys.executable, *command[1:]]
    return list(command)
