"""The Python services' pods as the chart renders them: command, environment (with
secretKeyRef and configMapKeyRef resolved from the same render), ports, probes, grace
period, and the init container that migrates the database."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from iot_tools import helm
from iot_tools.drill.spec import ProbeKind, ProbeSpec, probes_of
from iot_tools.services import SERVICES

# Kubernetes' default when a pod spec leaves it out.
DEFAULT_GRACE_SECONDS = 30
SCHEME_PORTS = {"postgresql": 5432, "postgres": 5432, "nats": 4222}


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
class RenderedPlatform:
    containers: tuple[ContainerPlan, ...]
    migrate: ContainerPlan  # the init container; probes and grace unused
    database: Endpoint
    database_password: str
    nats: Endpoint | None

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
    for workload in helm.workloads(docs):
        service = _service_module(helm.main_container(workload))
        if service is None:
            continue
        pod = helm.pod_spec(workload)
        grace = pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        name = workload["metadata"]["name"]
        containers.append(_plan(service, name, helm.main_container(workload), grace, objects))
        for init in pod.get("initContainers", []):
            if migrate is None and _service_module(init) == "migrate":
                migrate = _plan("migrate", name, init, grace, objects)
    if not containers:
        raise RenderReadError("the render has no Python service workloads")
    if migrate is None:
        raise RenderReadError("no workload has the `migrate` init container")
    order = {name: index for index, name in enumerate(SERVICES)}
    containers.sort(key=lambda plan: order[plan.service])
    database, password = _database(containers)
    return RenderedPlatform(tuple(containers), migrate, database, password, _nats(containers))


def _service_module(container: dict) -> str | None:
    """`services.<name>` from `python -m services.<name>` in command + args."""
    argv = [*container.get("command", []), *container.get("args", [])]
    for flag, module in itertools.pairwise(argv):
        if flag == "-m" and module.startswith("services."):
            name = module.removeprefix("services.")
            return name if name in (*SERVICES, "migrate") else None
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


def _database(containers: list[ContainerPlan]) -> tuple[Endpoint, str]:
    pairs = {(plan.env["DATABASE_URL"], plan.env.get("PGPASSWORD", ""))
             for plan in containers if "DATABASE_URL" in plan.env}
    if len(pairs) != 1:
        raise RenderReadError("the services must share one DATABASE_URL and PGPASSWORD, "
                              f"found {len(pairs)} combinations")
    url, password = pairs.pop()
    endpoint = Endpoint.from_url(url)
    if not (endpoint.user and endpoint.database and password):
        raise RenderReadError("DATABASE_URL must name user and database, and PGPASSWORD be set")
    return endpoint, password


def _nats(containers: list[ContainerPlan]) -> Endpoint | None:
    urls = {plan.env["NATS_URL"] for plan in containers if "NATS_URL" in plan.env}
    if len(urls) > 1:
        raise RenderReadError(f"the services disagree on NATS_URL: {sorted(urls)}")
    return Endpoint.from_url(urls.pop()) if urls else None
