"""The Python services' pods as the chart renders them: command, environment (with
secretKeyRef and configMapKeyRef resolved from the same render), ports, probes, grace
period; the init containers (`migrate`: database roles and schema, as the bootstrap
superuser then the owner; `streams`: the JetStream streams, as the NATS owner); and the
NATS server's configuration with the environment its pod gets."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from iot_tools import helm
from iot_tools.chart_nats import NATS, nats_pod_env
from iot_tools.drill.spec import ProbeKind, ProbeSpec, probes_of
from iot_tools.services import SERVICES

# Kubernetes' default when a pod spec leaves it out.
DEFAULT_GRACE_SECONDS = 30
SCHEME_PORTS = {"postgresql": 5432, "postgres": 5432, "nats": 4222}
# `python -m services.migrate.nats`: the chart's `streams` init container.
STREAMS_MODULE = "migrate.nats"


class RenderReadError(ValueError):
    """The render holds something the drill cannot reproduce locally."""


@dataclass(frozen=True)
class Endpoint:
    """Where a URL in the render points: the Service host and port the drill stands in for."""

    host: str
    port: int
    user: str | None = None
    database: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if not parts.hostname:
            raise RenderReadError(f"URL without a host: {url}")
        port = parts.port or SCHEME_PORTS.get(parts.scheme)
        if port is None:
            raise RenderReadError(f"URL without a port: {url}")
        database = parts.path.lstrip("/") or None
        return cls(parts.hostname, port, parts.username, database)


@dataclass(frozen=True)
class ContainerPlan:
    """One container the drill runs as a process."""

    service: str  # the module under services/, e.g. ingest_iot
    workload: str  # e.g. iot-ingest
    command: tuple[str, ...]
    env: dict[str, str]
    ports: dict[str, int]  # declared container ports by name
    probes: dict[ProbeKind, ProbeSpec]
    termination_grace: float

    @property
    def health_port(self) -> int:
        """The port the service listens on inside its pod (HEALTH_PORT, default 8080)."""
        return int(self.env.get("HEALTH_PORT", "8080"))


@dataclass(frozen=True)
class RenderedNats:
    """The in-chart NATS server: its nats.conf and the env its pod gets (the passwords its
    authorization block references, resolved from the rendered Secret)."""

    config: str
    env: dict[str, str]


@dataclass(frozen=True)
class RenderedPlatform:
    containers: tuple[ContainerPlan, ...]
    migrate: ContainerPlan  # the init container; probes and grace unused
    streams: ContainerPlan | None  # the NATS init container of the pods that use NATS
    database: Endpoint
    # The bootstrap superuser migrate creates the roles with (DB_ADMIN_*): the drill's
    # PostgreSQL is initialised with it, as the chart's POSTGRES_USER/POSTGRES_PASSWORD.
    database_admin: str
    database_admin_password: str
    nats: Endpoint | None
    nats_server: RenderedNats | None = None

    def container(self, service: str) -> ContainerPlan:
        for plan in self.containers:
            if plan.service == service:
                return plan
        raise KeyError(service)

    @property
    def database_users(self) -> tuple[str, ...]:
        return tuple(plan.service for plan in self.containers if "DATABASE_URL" in plan.env)

    @property
    def nats_users(self) -> tuple[str, ...]:
        return tuple(plan.service for plan in self.containers if "NATS_URL" in plan.env)


def read_render(
    values_files: tuple[str | Path, ...] = (),
    set_values: tuple[str, ...] = (),
    helm_major: int = 3,
) -> RenderedPlatform:
    """Render the chart with the user's values and read the Python services' pods from it.

    Raises helm.HelmRenderError when the render fails (e.g. a probe guard), and
    RenderReadError when it holds something the drill cannot run.
    """
    docs = helm.render(major=helm_major, values_files=values_files, set_values=set_values)
    return platform_from_docs(docs)


def platform_from_docs(docs: list[dict]) -> RenderedPlatform:
    objects = helm.by_kind_and_name(docs)
    containers: list[ContainerPlan] = []
    migrate: ContainerPlan | None = None
    streams: ContainerPlan | None = None
    for workload in helm.workloads(docs):
        service = _service_module(helm.main_container(workload))
        if service is None:
            continue
        pod = helm.pod_spec(workload)
        grace = pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        name = workload["metadata"]["name"]
        containers.append(_plan(service, name, helm.main_container(workload), grace, objects))
        for init in pod.get("initContainers", []):
            module = _service_module(init)
            if migrate is None and module == "migrate":
                migrate = _plan("migrate", name, init, grace, objects)
            if streams is None and module == STREAMS_MODULE:
                streams = _plan(STREAMS_MODULE, name, init, grace, objects)
    if not containers:
        raise RenderReadError("the render has no Python service workloads")
    if migrate is None:
        raise RenderReadError("no workload has the `migrate` init container")
    order = {name: index for index, name in enumerate(SERVICES)}
    containers.sort(key=lambda plan: order[plan.service])
    database, admin, admin_password = _database(containers, migrate)
    nats = _nats(containers)
    if nats is not None and streams is None:
        raise RenderReadError("the services use NATS but no workload has the `streams` init "
                              "container that creates the JetStream streams")
    return RenderedPlatform(tuple(containers), migrate, streams, database, admin,
                            admin_password, nats, _nats_server(docs, objects))


def _service_module(container: dict) -> str | None:
    """`services.<name>` from `python -m services.<name>` in command + args."""
    argv = [*container.get("command", []), *container.get("args", [])]
    for flag, module in itertools.pairwise(argv):
        if flag == "-m" and module.startswith("services."):
            name = module.removeprefix("services.")
            return name if name in (*SERVICES, "migrate", STREAMS_MODULE) else None
    return None


def _plan(service: str, workload: str, container: dict, grace: float,
          objects: dict[tuple[str, str], dict]) -> ContainerPlan:
    if container.get("envFrom"):
        raise RenderReadError(f"{workload}/{container['name']}: envFrom is not supported")
    env = {item["name"]: _env_value(workload, item, objects) for item in container.get("env", [])}
    ports = {port.get("name", str(port["containerPort"])): port["containerPort"]
             for port in container.get("ports", [])}
    return ContainerPlan(
        service=service, workload=workload,
        command=tuple([*container.get("command", []), *container.get("args", [])]),
        env=env, ports=ports, probes=probes_of(container), termination_grace=grace,
    )


def _env_value(workload: str, item: dict, objects: dict[tuple[str, str], dict]) -> str:
    if "value" in item:
        return str(item["value"])
    source = item.get("valueFrom", {})
    for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
        if field not in source:
            continue
        ref = source[field]
        document = objects.get((kind, ref["name"]))
        if document is None:
            raise RenderReadError(
                f"{workload}: env {item['name']} reads {kind} {ref['name']}, which the render "
                "does not contain (an existingSecret cannot be resolved without a cluster)")
        return _data_value(document, ref["key"], f"{kind} {ref['name']}")
    raise RenderReadError(f"{workload}: env {item['name']}: only value, secretKeyRef and "
                          "configMapKeyRef are supported")


def _data_value(document: dict, key: str, what: str) -> str:
    if key in document.get("stringData", {}):
        return str(document["stringData"][key])
    if document["kind"] == "Secret" and key in document.get("data", {}):
        return base64.b64decode(document["data"][key]).decode()
    if document["kind"] == "ConfigMap" and key in document.get("data", {}):
        return str(document["data"][key])
    raise RenderReadError(f"{what} has no key {key}")


def _database(containers: list[ContainerPlan],
              migrate: ContainerPlan) -> tuple[Endpoint, str, str]:
    """The one database every pod names, and the admin login migrate creates the roles with.
    Each service logs in as its own role (PGUSER/PGPASSWORD), which migrate creates."""
    urls = {plan.env["DATABASE_URL"] for plan in [*containers, migrate]
            if "DATABASE_URL" in plan.env}
    if len(urls) != 1:
        raise RenderReadError(f"the pods must share one DATABASE_URL, found {sorted(urls)}")
    endpoint = Endpoint.from_url(urls.pop())
    if not endpoint.database:
        raise RenderReadError("DATABASE_URL must name the database")
    for plan in containers:
        if "DATABASE_URL" not in plan.env:
            continue
        if not (plan.env.get("PGUSER") or endpoint.user) or not plan.env.get("PGPASSWORD"):
            raise RenderReadError(f"{plan.workload}: PGUSER and PGPASSWORD must be set")
    admin, password = migrate.env.get("DB_ADMIN_USER"), migrate.env.get("DB_ADMIN_PASSWORD")
    if not (admin and password):
        raise RenderReadError(
            "the `migrate` init container has no DB_ADMIN_USER/DB_ADMIN_PASSWORD: the drill "
            "creates the services' roles the way migrate does, with the bootstrap superuser")
    return endpoint, admin, password


def _nats(containers: list[ContainerPlan]) -> Endpoint | None:
    urls = {plan.env["NATS_URL"] for plan in containers if "NATS_URL" in plan.env}
    if len(urls) > 1:
        raise RenderReadError(f"the services disagree on NATS_URL: {sorted(urls)}")
    return Endpoint.from_url(urls.pop()) if urls else None


def _nats_server(docs: list[dict],
                 objects: dict[tuple[str, str], dict]) -> RenderedNats | None:
    """The in-chart NATS server's nats.conf and pod env; None when the render has none
    (external NATS: the drill then runs a nats-server without authorization)."""
    config_map = objects.get(("ConfigMap", NATS))
    if config_map is None or ("StatefulSet", NATS) not in objects:
        return None
    try:
        env = nats_pod_env(docs)
    except KeyError as error:
        raise RenderReadError(f"{NATS}: env reads {error}, which the render does not "
                              "contain") from None
    return RenderedNats(config_map["data"]["nats.conf"], env)
