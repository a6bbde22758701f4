"""A real nats-server running the NATS configuration the chart renders, with the environment its
pod would get: the users and permissions of nats.conf, the passwords from the rendered Secret.

Only the listen addresses, the store and the pid file are pointed at this machine; everything
else (the authorization block, the MQTT listener) is the render's, as it is.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from iot_tools import helm
from iot_tools.servers import NatsServer, free_port

NATS = "iot-nats"


@dataclass(frozen=True)
class Login:
    """One NATS user of the render: name, password, and the inbox prefix the chart gives it."""

    user: str
    password: str

    @property
    def inbox_prefix(self) -> str:
        return f"_INBOX.{self.user}"

    def options(self) -> dict:
        """nats-py connect options for this login."""
        return {"user": self.user, "password": self.password, "inbox_prefix": self.inbox_prefix}

    def env(self) -> dict[str, str]:
        """What the chart gives a service logged in as this user."""
        return {"NATS_USER": self.user, "NATS_PASSWORD": self.password,
                "NATS_INBOX_PREFIX": self.inbox_prefix}


def nats_pod_env(docs: list[dict]) -> dict[str, str]:
    """The NATS container's environment variables read from Secrets, resolved from the render."""
    objects = helm.by_kind_and_name(docs)
    container = helm.main_container(objects[("StatefulSet", NATS)])
    env = {}
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            secret = objects[("Secret", ref["name"])]
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def logins(docs: list[dict]) -> dict[str, Login]:
    """Every user of the rendered nats.conf, by name, with its password from the Secret."""
    config = helm.by_kind_and_name(docs)[("ConfigMap", NATS)]["data"]["nats.conf"]
    env = nats_pod_env(docs)
    users: dict[str, Login] = {}
    user = None
    for raw in config.splitlines():
        line = raw.strip()
        if line.startswith("user:"):
            user = line.split(":", 1)[1].strip().strip('"')
        elif line.startswith("password: $") and user is not None:
            users[user] = Login(user, env[line.removeprefix("password: $")])
            user = None
    return users


@dataclass
class ChartNats:
    server: NatsServer
    mqtt_port: int
    logins: dict[str, Login]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.server.port}"


def local_config(config: str, *, client: int, monitor: int, mqtt: int, store: Path,
                 pid_file: Path) -> str:
    """The rendered nats.conf with only its listeners (on loopback), JetStream store and pid
    file pointed at this machine; everything else (users, permissions, limits) as rendered."""
    local = (
        config.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client}")
        .replace("http_port: 8222", f"http: 127.0.0.1:{monitor}")
        .replace("listen: 0.0.0.0:1883", f"listen: 127.0.0.1:{mqtt}")
        .replace("store_dir: /data", f"store_dir: {store}")
        .replace("pid_file: /var/run/nats/nats.pid", f"pid_file: {pid_file}")
    )
    if local.count("127.0.0.1") != 3 or str(pid_file) not in local:
        raise ValueError("the rendered nats.conf no longer has the lines local_config rewrites "
                         "(listen, http_port, the MQTT listen, store_dir, pid_file)")
    return local


def start_chart_nats(docs: list[dict], workdir: Path) -> ChartNats:
    """nats-server with the render's nats.conf and the pod's environment, on free local ports.
    No stream exists yet: creating them is the owner's job."""
    config = helm.by_kind_and_name(docs)[("ConfigMap", NATS)]["data"]["nats.conf"]
    server = NatsServer(workdir, streams=False)
    mqtt = free_port()
    server.config_text = local_config(config, client=server.port, monitor=server.monitor_port,
                                      mqtt=mqtt, store=workdir / "jetstream",
                                      pid_file=workdir / "nats.pid")
    server.env = {"POD_NAME": "iot-nats-0", **nats_pod_env(docs)}
    server.start()
    return ChartNats(server, mqtt, logins(docs))
